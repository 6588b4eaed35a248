//! The Pingora `ProxyHttp` implementation. It only sequences the phases of a request; each
//! phase is a short list of named steps delegating to its module: the request phase's steps in
//! `request.rs` (identify, strictness, path, redirect, route, body limit, rate zone, pool),
//! balancing and peers in `upstream/`, failures and retries in `upstream/retry.rs`, response
//! headers and gzip in `edge/`, errors through `edge/respond.rs`, metrics and the access log in
//! `telemetry.rs`.

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
use crate::edge::conn::ClientConn;
use crate::edge::errors::{GatewayError, NO_HEALTHY_BACKEND};
use crate::edge::headers::{self, ResponseHeaders};
use crate::edge::respond::Reply;
use crate::edge::strict;
use crate::request::{drain_body, request_steps};
use crate::state::Shared;
use crate::telemetry;
use crate::upstream::balance::hash;
use crate::upstream::balance::stats::InFlight;
use crate::upstream::peer::build_peer;
use crate::upstream::retry::{record_backend_failure, retry_elsewhere};

/// On an MCP route: scan the answer for its MCP-level outcome, and hold a JSON `tools/list`
/// answer for filtering when the caller's grants name only some tools.
fn mcp_answer(resp: &mut ResponseHeader, ctx: &mut Ctx) {
    let Some(view) = ctx.mcp.as_ref() else {
        return;
    };
    ctx.answer = crate::mcp::outcome::Scanner::for_response(resp);
    let json = matches!(ctx.answer, Some(crate::mcp::outcome::Scanner::Json(_)));
    if json
        && view.method == "tools/list"
        && ctx.rights.as_ref().is_some_and(|r| r.restricts_tools())
    {
        // The filtered answer has its own length.
        resp.remove_header(&http::header::CONTENT_LENGTH);
        ctx.tools_filter = Some(crate::mcp::tools_list::Filter::new());
    }
}

pub struct GatewayProxy {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    /// Boxed: Pingora keeps the context in the request's future twice (the argument and its
    /// binding), for the request's whole life (an open stream's hours); boxed, each is a
    /// pointer and the context (about 850 bytes) one allocation.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
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
        ctx: &mut Self::CTX,
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

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Ctx {
            state,
            route,
            target,
            conn,
            hash_buf,
            attempt,
            timing,
            ..
        } = &mut **ctx;
        let state = state
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no state"))?;
        let route = &state.routes
            [route.ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?];
        let target = target.ok_or_else(|| Error::explain(ErrorType::InternalError, "no target"))?;
        let pool = &route.targets[target].pool;
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
        ctx: &mut Self::CTX,
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
        ctx: &mut Self::CTX,
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
        // A reused connection found dead at once (reset, closed) says nothing about the
        // backend's health; a timeout does, on any connection (nginx counts it in max_fails).
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        if matches!(e.esource(), ErrorSource::Upstream) && (!client_reused || timed_out) {
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
        ctx: &mut Self::CTX,
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
        crate::trace::forward(upstream_request, &ctx.trace);
        if let Some(gate) = ctx.state.as_ref().and_then(|s| s.gate.as_ref()) {
            // The caller the edge authenticated, for backends that keep items per caller;
            // never what a client sent under that name.
            if let Some(h) = &gate.caller_header {
                upstream_request.remove_header(h);
                if let Some(c) = &ctx.caller {
                    upstream_request.insert_header(h.clone(), crate::auth::caller_value(c))?;
                }
            }
            // The edge authenticated the caller: the backends get the gateway's own credential.
            if let (Some(_), Some(v)) = (&ctx.caller, gate.upstream_authorization.as_ref()) {
                upstream_request.insert_header(http::header::AUTHORIZATION, v.clone())?;
            }
        }
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
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.timing.connect = ctx.since_upstream_start();
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
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
        ctx: &mut Self::CTX,
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
        let mcp_route = route.mcp;
        if let Some(cookie) = ctx.split.cookie.take() {
            resp.append_header(http::header::SET_COOKIE, cookie)?;
        }
        if mcp_route {
            mcp_answer(resp, ctx);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let (Some(scan), Some(b)) = (ctx.answer.as_mut(), body.as_ref()) {
            scan.feed(b);
        }
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
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let (Some(f), Some(rights)) = (ctx.tools_filter.as_mut(), ctx.rights.as_ref()) {
            f.filter(body, end_of_stream, rights);
        }
        if let Some(gz) = ctx.gzip.as_mut() {
            gz.filter(body, end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let limit = ctx.route().map_or(0, |r| r.max_body_size);
        let Some(err) = GatewayError::from_proxy_error(e, limit) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        // A 100 Continue (the backend's answer to `Expect: 100-continue`) is not the response:
        // the final one still goes out.
        let answered = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        if !answered {
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
            // The rest of a body over the limit is read and dropped after the 413, so that
            // closing does not reset the connection under it.
            if err.status == 413 {
                drain_body(session).await;
            }
        }
        FailToProxy {
            error_code: err.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        // How the backend answered at the MCP level, now that the answer has ended.
        if let Some(scan) = ctx.answer.as_mut() {
            ctx.outcome = Some(scan.finish());
        }
        if let (Some(scan), Some(m)) = (ctx.answer.as_ref(), ctx.mcp.as_ref()) {
            if m.method == "tools/list" && ctx.tools_filter.is_none() {
                if let Some(body) = scan.json_body() {
                    crate::mcp::tools_list::learn(body);
                }
            }
        }
        // The split's rollback watch counts the responses of the pool it watches (and, for
        // tool calls, their MCP-level outcome).
        if ctx.split.picked {
            if let (Some(split), Some(resp)) = (
                ctx.route().and_then(|r| r.split.as_ref()),
                session.response_written(),
            ) {
                if let Some(target) = ctx.target {
                    let tool_call = ctx
                        .mcp
                        .as_ref()
                        .filter(|m| m.method == "tools/call")
                        .map(|_| ctx.outcome.is_some_and(|o| o.is_failure()));
                    split.observe(target, resp.status.as_u16(), tool_call);
                }
            }
        }
        telemetry::finish(session, e, ctx);
        // The next read on this connection waits for another request (keepalive_timeout).
        if let Some(conn) = ClientConn::of(session.as_downstream()) {
            conn.request_done();
        }
        // Release the backend slot and the stream gauge now rather than when Pingora drops ctx.
        ctx.attempt.slot = None;
        ctx.stream = None;
    }
}
