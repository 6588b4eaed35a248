//! The Pingora `ProxyHttp` implementation. It only sequences the phases of a request and
//! delegates each to its module: redirect, routing, limits, balancing, upstream peers, headers,
//! compression, errors, metrics and the access log.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::balance::hash;
use crate::balance::stats::InFlight;
use crate::compress;
use crate::config;
use crate::context::{Ctx, StreamGuard};
use crate::errors::{self, GatewayError, NO_HEALTHY_BACKEND};
use crate::headers::{self, ResponseHeaders};
use crate::state::Shared;
use crate::telemetry;
use crate::upstream;
use crate::zones::Verdict;

pub struct GatewayProxy {
    pub shared: Arc<Shared>,
}

/// Write a gateway-made JSON error with the given header policy.
async fn send_error(
    session: &mut Session,
    policy: &ResponseHeaders,
    tls: bool,
    request_id: &str,
    err: &GatewayError,
) -> Result<()> {
    let body = errors::envelope(err, request_id);
    let mut header = errors::header(err.status, body.len())?;
    policy.apply(&mut header, tls, request_id);
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// Refused bodies up to this size are read and dropped before the 413 goes out, so the client
/// sees the answer instead of a reset (HTTP/2 streams with unread data get RST_STREAM).
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

async fn drain_body(session: &mut Session) {
    let drained = tokio::time::timeout(Duration::from_secs(5), session.drain_request_body()).await;
    if !matches!(drained, Ok(Ok(()))) {
        log::debug!("request body not drained before 413");
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let state = self.shared.load();
        ctx.request_id = headers::request_id(session.req_header());
        if let Some(ssl) = session.digest().and_then(|d| d.ssl_digest.as_ref()) {
            ctx.tls = true;
            ctx.tls_version = Some(ssl.version.clone());
        }
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // issue 4: behind a trusted proxy the client is the address its header names (nginx's
        // realip); it is what zones, splits, hashing, X-Real-IP and the access log see.
        ctx.client_ip = ctx.peer_ip.map(|peer| {
            crate::real_ip::client_ip(&state.config.real_ip, peer, session.req_header())
        });
        if let Some(ip) = ctx.client_ip {
            ctx.client = ip.to_string();
        }

        // Plain HTTP: 301 to HTTPS unless the path is exempt.
        if !ctx.tls {
            if let Some(redirect) = &state.redirect {
                let req = session.req_header();
                if !redirect.is_exempt(req.uri.path()) {
                    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    let location = redirect.location(headers::request_host(req), pq);
                    let mut resp = ResponseHeader::build(301, Some(4))?;
                    resp.insert_header(http::header::LOCATION, location)?;
                    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
                    state
                        .global_headers
                        .apply(&mut resp, false, &ctx.request_id);
                    ctx.redirected = true;
                    ctx.state = Some(state);
                    session.write_response_header(Box::new(resp), true).await?;
                    return Ok(true);
                }
            }
        }

        let req = session.req_header();
        let Some(route_index) = state
            .router
            .find(headers::request_host(req), req.uri.path())
        else {
            let err = GatewayError::not_found(req.uri.path());
            let tls = ctx.tls;
            send_error(session, &state.global_headers, tls, &ctx.request_id, &err).await?;
            ctx.state = Some(state);
            return Ok(true);
        };
        let route = &state.routes[route_index];

        // Declared body size over the limit: refuse before reading or connecting anything.
        if route.max_body_size > 0 {
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(n) = declared.filter(|n| *n > route.max_body_size) {
                if n <= DRAIN_LIMIT {
                    drain_body(session).await;
                }
                let err = GatewayError::too_large(route.max_body_size);
                let tls = ctx.tls;
                send_error(session, &route.headers, tls, &ctx.request_id, &err).await?;
                ctx.route = Some(route_index);
                ctx.state = Some(state);
                return Ok(true);
            }
        }

        // issue 4: the route's rate zone (nginx's limit_req): pass, wait, or refuse.
        if let Some(limit) = &route.limit {
            match limit.check(req, ctx.client_ip) {
                Verdict::Pass => {}
                Verdict::Wait(d) => tokio::time::sleep(d).await,
                Verdict::Reject { retry_after } => {
                    let tls = ctx.tls;
                    limit
                        .refuse(session, &route.headers, tls, &ctx.request_id, retry_after)
                        .await?;
                    ctx.route = Some(route_index);
                    ctx.state = Some(state);
                    return Ok(true);
                }
            }
        }

        // issue 4: a split picks the pool (weights, stickiness, force header, health).
        ctx.target = if let Some(split) = &route.split {
            let pick = split.choose(&route.targets, req, ctx.client_ip, ctx.tls);
            ctx.split_picked = true;
            ctx.split_cookie = pick.set_cookie;
            pick.index
        } else if route.targets.len() > 1 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            ctx.client_ip.hash(&mut h);
            route.pick_target(h.finish())
        } else {
            0
        };
        ctx.retries_left = route.retries;
        ctx.route = Some(route_index);
        ctx.state = Some(state);
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Bodies without a Content-Length (chunked, HTTP/2) are counted as they arrive.
        if let (Some(b), Some(route)) = (body.as_ref(), ctx.route()) {
            let limit = route.max_body_size;
            ctx.body_seen += b.len() as u64;
            if limit > 0 && ctx.body_seen > limit {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the route's limit",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Ctx {
            state,
            route,
            target,
            client_ip,
            hash_buf,
            tried,
            current,
            attempt,
            upstream_start,
            ..
        } = ctx;
        let state = state
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no state"))?;
        let route = &state.routes
            [route.ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?];
        let pool = &route.targets[*target].pool;
        let key: &[u8] = match &pool.balance {
            config::Balance::Hash(how) => {
                let ip = client_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
                hash::key(how, session.req_header(), ip, hash_buf)
            }
            _ => b"",
        };
        let Some(backend) = pool.select(key, tried) else {
            return Err(Error::explain(
                NO_HEALTHY_BACKEND,
                format!("pool {}: no healthy backend", pool.name),
            ));
        };
        // Replacing the previous attempt's slot releases it.
        *attempt = Some(InFlight::new(backend.stats.clone()));
        *current = Some(backend.addr);
        *upstream_start = Some(std::time::Instant::now());
        Ok(upstream::build_peer(pool, &backend, &route.timeouts))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        // Name the backend in the error log line (a TLS verification failure names only the SNI).
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Nothing reached the backend: retrying elsewhere is safe for every method.
        // An Arc clone on this error path frees `ctx` for the updates below.
        let Some(state) = ctx.state.clone() else {
            return e;
        };
        let Some(t) = ctx
            .route
            .and_then(|r| state.routes[r].targets.get(ctx.target))
        else {
            return e;
        };
        let pool = &t.pool;
        if let Some(a) = &ctx.attempt {
            if a.stats().record_failure(pool.max_fails, pool.fail_timeout) {
                log::warn!(
                    "pool {}: backend {} marked down for {:?} after {} failures",
                    pool.name,
                    peer,
                    pool.fail_timeout,
                    pool.max_fails
                );
            }
        }
        if let Some(addr) = ctx.current.take() {
            ctx.tried.push(addr);
        }
        let another = pool.select(b"", &ctx.tried).is_some();
        if ctx.retries_left > 0 && another {
            ctx.retries_left -= 1;
            t.metrics.retries.inc();
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Never send a non-idempotent request again: it may have reached the backend. An
        // idempotent one that got no response header (timeout, reset, closed; nginx's default
        // `proxy_next_upstream error timeout`) goes to another backend; otherwise Pingora's rule:
        // retry only when a reused keep-alive connection turned out dead.
        let idempotent = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !idempotent {
            e.set_retry(false);
        } else if ctx.header_time.is_none()
            && matches!(e.esource(), ErrorSource::Upstream)
            && matches!(
                e.etype(),
                ErrorType::ReadTimedout
                    | ErrorType::WriteTimedout
                    | ErrorType::ReadError
                    | ErrorType::WriteError
                    | ErrorType::ConnectionClosed
                    | ErrorType::H1Error
                    | ErrorType::InvalidHTTPHeader
            )
        {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        let state = ctx.state.clone();
        let target = state
            .as_ref()
            .and_then(|s| ctx.route.and_then(|r| s.routes[r].targets.get(ctx.target)));
        if let Some(t) = target {
            let pool = &t.pool;
            if matches!(e.esource(), ErrorSource::Upstream) && !client_reused {
                if let Some(a) = &ctx.attempt {
                    if a.stats().record_failure(pool.max_fails, pool.fail_timeout) {
                        log::warn!(
                            "pool {}: backend {} marked down for {:?}",
                            pool.name,
                            peer,
                            pool.fail_timeout
                        );
                    }
                }
            }
            if e.retry() {
                if let Some(addr) = ctx.current.take() {
                    ctx.tried.push(addr);
                }
                if ctx.retries_left > 0 && pool.select(b"", &ctx.tried).is_some() {
                    ctx.retries_left -= 1;
                    t.metrics.retries.inc();
                } else {
                    e.set_retry(false);
                }
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        headers::forward(
            upstream_request,
            &ctx.client,
            ctx.peer_ip,
            ctx.tls,
            &ctx.request_id,
        );
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.connect_time = ctx.since_upstream_start();
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if upstream_response.status.is_informational() {
            return Ok(());
        }
        ctx.header_time = ctx.since_upstream_start();
        if let Some(a) = &ctx.attempt {
            a.stats().record_success();
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(state) = ctx.state.as_ref() else {
            return Ok(());
        };
        let Some(route) = ctx.route.map(|i| &state.routes[i]) else {
            return Ok(());
        };
        if resp.status.is_informational() {
            return Ok(());
        }
        let streaming = route.stream || compress::is_stream_type(compress::media_type(resp));
        if streaming {
            ctx.stream = Some(StreamGuard::new(&route.active_streams));
        } else if let Some(gzip) = &state.gzip {
            let req = session.req_header();
            ctx.gzip = gzip.start(
                compress::accepts_gzip(req),
                req.method == http::Method::HEAD,
                resp,
            );
        }
        route.headers.apply(resp, ctx.tls, &ctx.request_id);
        if let Some(cookie) = ctx.split_cookie.take() {
            resp.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            ctx.response_time = ctx.since_upstream_start();
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(gz) = ctx.gzip.as_mut() {
            gz.filter(body, end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let limit = ctx.route().map_or(0, |r| r.max_body_size);
        let Some(err) = GatewayError::from_proxy_error(e, limit) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_none() {
            if err.status == 413 {
                drain_body(session).await;
            }
            let tls = ctx.tls;
            let policy = match (ctx.state.as_ref(), ctx.route()) {
                (_, Some(r)) => Some(&r.headers),
                (Some(s), None) => Some(&s.global_headers),
                _ => None,
            };
            let written = match policy {
                Some(p) => send_error(session, p, tls, &ctx.request_id, &err).await,
                None => {
                    send_error(
                        session,
                        &ResponseHeaders::default(),
                        tls,
                        &ctx.request_id,
                        &err,
                    )
                    .await
                }
            };
            if let Err(we) = written {
                log::debug!("cannot send error response: {we}");
            }
        }
        FailToProxy {
            error_code: err.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // issue 4: the split's rollback watch counts the responses of the pool it watches.
        if ctx.split_picked {
            if let (Some(split), Some(resp)) = (
                ctx.route().and_then(|r| r.split.as_ref()),
                session.response_written(),
            ) {
                split.observe(ctx.target, resp.status.as_u16());
            }
        }
        telemetry::finish(session, e, ctx);
        // Release the backend slot and the stream gauge now rather than when Pingora drops ctx.
        ctx.attempt = None;
        ctx.stream = None;
    }
}
