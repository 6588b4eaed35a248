//! The Pingora `ProxyHttp` implementation. It only sequences the phases of a request; each
//! phase is a short list of named steps delegating to its module: redirect, routing, limits,
//! splits, balancing, upstream peers, headers, compression, errors, metrics and the access log.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config;
use crate::context::{Ctx, StreamGuard};
use crate::edge::compress;
use crate::edge::errors::{GatewayError, NO_HEALTHY_BACKEND};
use crate::edge::headers::{self, ResponseHeaders};
use crate::edge::respond::Reply;
use crate::edge::strict;
use crate::policy::zones::Verdict;
use crate::routing::Target;
use crate::state::{Shared, State};
use crate::telemetry;
use crate::upstream::balance::hash;
use crate::upstream::balance::stats::InFlight;
use crate::upstream::peer::build_peer;

pub struct GatewayProxy {
    pub shared: Arc<Shared>,
}

/// Whether a request step wrote the response itself (the request ends there).
type Answered = bool;

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
        // The state this request runs on to its end, even if a reload swaps it meanwhile.
        let state = self.shared.load();
        let answered = request_steps(session, ctx, &state).await;
        ctx.state = Some(state);
        answered
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
            conn,
            hash_buf,
            attempt,
            timing,
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
                let ip = conn
                    .client_ip
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
                hash::key(how, session.req_header(), ip, hash_buf)
            }
            _ => b"",
        };
        let Some(backend) = pool.select(key, &attempt.tried) else {
            return Err(Error::explain(
                NO_HEALTHY_BACKEND,
                format!("pool {}: no healthy backend", pool.name),
            ));
        };
        // Replacing the previous attempt's slot releases it.
        attempt.slot = Some(InFlight::new(backend.stats.clone()));
        attempt.backend = Some(backend.addr);
        timing.upstream_start = Some(std::time::Instant::now());
        Ok(build_peer(pool, &backend, &route.timeouts))
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
        record_backend_failure(ctx, peer);
        e.set_retry(true);
        retry_elsewhere(ctx, &mut e);
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
        } else if ctx.timing.header.is_none()
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
        // A dead reused connection says nothing about the backend's health.
        if matches!(e.esource(), ErrorSource::Upstream) && !client_reused {
            record_backend_failure(ctx, peer);
        }
        if e.retry() {
            retry_elsewhere(ctx, &mut e);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(p) = &ctx.normalized {
            let uri = strict::with_query(p, upstream_request.uri.query())
                .map_err(|e| Error::because(ErrorType::InternalError, "normalised path", e))?;
            upstream_request.set_uri(uri);
        }
        headers::forward(
            upstream_request,
            &ctx.conn.client,
            ctx.conn.peer_ip,
            ctx.conn.tls,
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
        ctx.timing.connect = ctx.since_upstream_start();
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
        ctx.timing.header = ctx.since_upstream_start();
        if let Some(a) = &ctx.attempt.slot {
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
        route.headers.apply(resp, ctx.conn.tls, &ctx.request_id);
        if let Some(cookie) = ctx.split.cookie.take() {
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
            ctx.timing.response = ctx.since_upstream_start();
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
            let tls = ctx.conn.tls;
            let policy = match (ctx.state.as_ref(), ctx.route()) {
                (_, Some(r)) => Some(&r.headers),
                (Some(s), None) => Some(&s.global_headers),
                _ => None,
            };
            let default = ResponseHeaders::default();
            let written = Reply::error(&err, &ctx.request_id)
                .send(session, policy.unwrap_or(&default), tls, &ctx.request_id)
                .await;
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
        // The split's rollback watch counts the responses of the pool it watches.
        if ctx.split.picked {
            if let (Some(split), Some(resp)) = (
                ctx.route().and_then(|r| r.split.as_ref()),
                session.response_written(),
            ) {
                split.observe(ctx.target, resp.status.as_u16());
            }
        }
        telemetry::finish(session, e, ctx);
        // Release the backend slot and the stream gauge now rather than when Pingora drops ctx.
        ctx.attempt.slot = None;
        ctx.stream = None;
    }
}

// --- request phase steps -------------------------------------------------------------------

/// The request phase: each step either answers the request itself (and it ends there) or
/// passes it on; the last one picks the pool.
async fn request_steps(session: &mut Session, ctx: &mut Ctx, state: &State) -> Result<Answered> {
    identify_client(session, ctx, state);
    allow_pipelining(session);
    if refuse_malformed(session, ctx, state).await? {
        return Ok(true);
    }
    if normalize_path(session, ctx, state).await? {
        return Ok(true);
    }
    if redirect_to_https(session, ctx, state).await? {
        return Ok(true);
    }
    let Some(route) = find_route(session, ctx, state).await? else {
        return Ok(true);
    };
    if refuse_declared_body(session, ctx, state, route).await? {
        return Ok(true);
    }
    if apply_rate_zone(session, ctx, state, route).await? {
        return Ok(true);
    }
    choose_target(session, ctx, state, route);
    Ok(false)
}

/// Request id, TLS, and the client: behind a trusted proxy the address its header names (nginx's
/// realip), which zones, splits, hashing, X-Real-IP and the access log all see.
fn identify_client(session: &Session, ctx: &mut Ctx, state: &State) {
    ctx.request_id = headers::request_id(session.req_header());
    if let Some(ssl) = session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        ctx.conn.tls = true;
        ctx.conn.tls_version = Some(ssl.version.clone());
    }
    ctx.conn.peer_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    ctx.conn.client_ip = ctx.conn.peer_ip.map(|peer| {
        crate::edge::real_ip::client_ip(&state.config.real_ip, peer, session.req_header())
    });
    if let Some(ip) = ctx.conn.client_ip {
        ctx.conn.client = ip.to_string();
    }
}

/// RFC 9112 section 9.3.2: Pingora answers pipelined requests in order only when asked;
/// otherwise it closes after the first response (announced keep-alive) and drops the next.
fn allow_pipelining(session: &mut Session) {
    session.as_downstream_mut().set_pipelining_enabled(true);
}

/// The error envelope under the global header policy, logged with the target cut to ~200
/// bytes; the connection closes.
async fn refuse(session: &mut Session, ctx: &Ctx, state: &State, err: &GatewayError) -> Result<()> {
    let target = String::from_utf8_lossy(session.req_header().raw_path());
    log::info!(
        "refused request {} from {}: {}: {}",
        ctx.request_id,
        ctx.conn.client,
        err.message,
        strict::bounded(&target)
    );
    Reply::error(err, &ctx.request_id)
        .send(
            session,
            &state.global_headers,
            ctx.conn.tls,
            &ctx.request_id,
        )
        .await
}

/// What nginx refuses and Pingora lets through (`edge::strict`): ambiguous framing, Host,
/// header limits (`large_client_header_buffers`), illegal characters in the target.
async fn refuse_malformed(session: &mut Session, ctx: &mut Ctx, state: &State) -> Result<Answered> {
    match strict::check_session(session.as_downstream(), &state.config.limits) {
        Ok(()) => Ok(false),
        Err(err) => refuse(session, ctx, state, &err).await.map(|()| true),
    }
}

/// nginx normalises the path before it matches a location (`edge::path`); the normalised path
/// is routed on and sent upstream. One that cannot be normalised safely is a 400.
async fn normalize_path(session: &mut Session, ctx: &mut Ctx, state: &State) -> Result<Answered> {
    match strict::normalized(session.req_header()) {
        Ok(normalized) => {
            ctx.normalized = normalized;
            Ok(false)
        }
        Err(err) => refuse(session, ctx, state, &err).await.map(|()| true),
    }
}

/// Plain HTTP: 301 to HTTPS unless the path is exempt.
async fn redirect_to_https(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
) -> Result<Answered> {
    let Some(redirect) = state.redirect.as_ref().filter(|_| !ctx.conn.tls) else {
        return Ok(false);
    };
    let req = session.req_header();
    if redirect.is_exempt(ctx.path(req)) {
        return Ok(false);
    }
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = redirect.location(headers::request_host(req), pq);
    ctx.redirected = true;
    Reply::redirect(location)
        .send(session, &state.global_headers, false, &ctx.request_id)
        .await?;
    Ok(true)
}

/// The route by host and path; none answers the gateway's own 404.
async fn find_route(session: &mut Session, ctx: &mut Ctx, state: &State) -> Result<Option<usize>> {
    let req = session.req_header();
    let path = ctx.path(req);
    if let Some(index) = state.router.find(headers::request_host(req), path) {
        ctx.route = Some(index);
        return Ok(Some(index));
    }
    let err = GatewayError::not_found(strict::bounded(path));
    Reply::error(&err, &ctx.request_id)
        .send(
            session,
            &state.global_headers,
            ctx.conn.tls,
            &ctx.request_id,
        )
        .await?;
    Ok(None)
}

/// A declared body over the route's limit: 413 before reading or connecting anything.
async fn refuse_declared_body(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
    route: usize,
) -> Result<Answered> {
    let route = &state.routes[route];
    if route.max_body_size == 0 {
        return Ok(false);
    }
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(n) = declared.filter(|n| *n > route.max_body_size) else {
        return Ok(false);
    };
    if n <= DRAIN_LIMIT {
        drain_body(session).await;
    }
    let err = GatewayError::too_large(route.max_body_size);
    Reply::error(&err, &ctx.request_id)
        .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
        .await?;
    Ok(true)
}

/// The route's rate zone (nginx's limit_req): pass, wait, or refuse.
async fn apply_rate_zone(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
    route: usize,
) -> Result<Answered> {
    let route = &state.routes[route];
    let Some(limit) = &route.limit else {
        return Ok(false);
    };
    match limit.check(session.req_header(), ctx.conn.client_ip) {
        Verdict::Pass => Ok(false),
        Verdict::Wait(d) => {
            tokio::time::sleep(d).await;
            Ok(false)
        }
        Verdict::Reject { retry_after } => {
            limit
                .refusal(&ctx.request_id, retry_after)
                .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
                .await?;
            Ok(true)
        }
    }
}

/// The pool: a split picks it (weights, stickiness, force header, health); a route without a
/// split has one target.
fn choose_target(session: &Session, ctx: &mut Ctx, state: &State, route: usize) {
    let route = &state.routes[route];
    ctx.target = 0;
    if let Some(split) = &route.split {
        let pick = split.choose(
            &route.targets,
            session.req_header(),
            ctx.conn.client_ip,
            ctx.conn.tls,
        );
        ctx.split.picked = true;
        ctx.split.cookie = pick.set_cookie;
        ctx.target = pick.index;
    }
    ctx.attempt.retries_left = route.retries;
}

// --- upstream failure bookkeeping ----------------------------------------------------------

/// The request's target, on the state it runs on (an Arc clone, so `ctx` stays free to update).
fn current_target(ctx: &Ctx) -> Option<(Arc<State>, usize, usize)> {
    let state = ctx.state.clone()?;
    let route = ctx.route?;
    state.routes.get(route)?.targets.get(ctx.target)?;
    Some((state, route, ctx.target))
}

fn target_of(state: &State, route: usize, target: usize) -> &Target {
    &state.routes[route].targets[target]
}

/// Passive health (nginx's `max_fails`/`fail_timeout`): count a failure of the attempt's backend.
fn record_backend_failure(ctx: &Ctx, peer: &HttpPeer) {
    let (Some((state, route, target)), Some(attempt)) =
        (current_target(ctx), ctx.attempt.slot.as_ref())
    else {
        return;
    };
    let pool = &target_of(&state, route, target).pool;
    if attempt
        .stats()
        .record_failure(pool.max_fails, pool.fail_timeout)
    {
        log::warn!(
            "pool {}: backend {} marked down for {:?} after {} failures",
            pool.name,
            peer,
            pool.fail_timeout,
            pool.max_fails
        );
    }
}

/// The one retry path: the failed backend is not tried again; retry while the route allows
/// and the pool has another backend, else give up.
fn retry_elsewhere(ctx: &mut Ctx, e: &mut Error) {
    let Some((state, route, target)) = current_target(ctx) else {
        e.set_retry(false);
        return;
    };
    let t = target_of(&state, route, target);
    if let Some(addr) = ctx.attempt.backend.take() {
        ctx.attempt.tried.push(addr);
    }
    if ctx.attempt.retries_left > 0 && t.pool.select(b"", &ctx.attempt.tried).is_some() {
        ctx.attempt.retries_left -= 1;
        t.metrics.retries.inc();
    } else {
        e.set_retry(false);
    }
}
