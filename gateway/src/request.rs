//! The request phase: each step either answers the request itself (redirect, 400, 404, 413,
//! 429, an MCP header mismatch: the request ends there) or passes it on; the last one picks the pool. The `ProxyHttp`
//! impl calls [`request_steps`] from `request_filter`.

use std::time::Duration;

use pingora::proxy::Session;
use pingora::Result;

use crate::auth::Refusal;
use crate::config::McpSelector;
use crate::context::Ctx;
use crate::edge::conn::ClientConn;
use crate::edge::errors::GatewayError;
use crate::edge::headers;
use crate::edge::respond::Reply;
use crate::edge::strict;
use crate::mcp;
use crate::policy::zones::Verdict;
use crate::state::State;

/// Whether a request step wrote the response itself (the request ends there).
type Answered = bool;

/// Refused bodies up to this size are read and dropped after the 413 has gone out, so the client
/// sees the answer instead of a reset (HTTP/2 streams with unread data get RST_STREAM).
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// Reads and drops what is left of a refused request body, up to [`DRAIN_LIMIT`] bytes and
/// 5 seconds (nginx's lingering close does the same job); then the connection closes.
pub async fn drain_body(session: &mut Session) {
    let drain = async {
        let mut seen = 0u64;
        while let Some(chunk) = session.read_request_body().await? {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                return Ok(false);
            }
        }
        Ok::<bool, Box<pingora::Error>>(true)
    };
    let drained = tokio::time::timeout(Duration::from_secs(5), drain).await;
    if !matches!(drained, Ok(Ok(true))) {
        log::debug!("request body not drained before 413");
    }
}

/// The request phase: each step either answers the request itself (and it ends there) or
/// passes it on; the last one picks the pool.
pub async fn request_steps(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
) -> Result<Answered> {
    identify_client(session, ctx, state);
    hold_connection(session, state);
    if refuse_malformed(session, ctx, state).await? {
        return Ok(true);
    }
    if normalize_path(session, ctx, state).await? {
        return Ok(true);
    }
    if redirect_to_https(session, ctx, state).await? {
        return Ok(true);
    }
    if serve_oauth_metadata(session, ctx, state).await? {
        return Ok(true);
    }
    let Some(route) = find_route(session, ctx, state).await? else {
        return Ok(true);
    };
    if check_origin_and_host(session, ctx, state, route).await? {
        return Ok(true);
    }
    if refuse_declared_body(session, ctx, state, route).await? {
        return Ok(true);
    }
    if authenticate(session, ctx, state, route).await? {
        return Ok(true);
    }
    if read_mcp_view(session, ctx, state, route).await? {
        return Ok(true);
    }
    if authorize(session, ctx, state, route).await? {
        return Ok(true);
    }
    if apply_rate_zone(session, ctx, state, route).await? {
        return Ok(true);
    }
    if apply_mcp_limits(session, ctx, state, route).await? {
        return Ok(true);
    }
    choose_target(session, ctx, state, route);
    Ok(false)
}

/// Request id, trace context, TLS, and the client: behind a trusted proxy the address its header names (nginx's
/// realip), which zones, splits, hashing, X-Real-IP and the access log all see.
fn identify_client(session: &Session, ctx: &mut Ctx, state: &State) {
    ctx.request_id = headers::request_id(session.req_header());
    ctx.trace = crate::trace::start(session.req_header());
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
        let mut buf = [0u8; headers::IP_TEXT_MAX];
        ctx.conn.client = headers::ip_text(ip, &mut buf).to_owned();
    }
}

/// How the client connection is held for this request:
/// * RFC 9112 section 9.3.2: Pingora answers pipelined requests in order only when asked;
///   otherwise it closes after the first response (announced keep-alive) and drops the next;
/// * nginx's `client_body_timeout` and `send_timeout` are Pingora's per-read and per-write
///   timeouts; `keepalive_timeout 0` turns keep-alive off;
/// * the header is in: its clock (`client_header_timeout`, `edge::conn`) stops.
fn hold_connection(session: &mut Session, state: &State) {
    let limits = &state.config.limits;
    let down = session.as_downstream_mut();
    down.set_pipelining_enabled(true);
    down.set_read_timeout(Some(limits.client_body_timeout));
    down.set_write_timeout(Some(limits.send_timeout));
    if limits.keepalive_timeout.is_zero() {
        down.set_keepalive(None);
    }
    if let Some(conn) = ClientConn::of(down) {
        conn.header_read();
    }
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
    let declared = headers::declared_length(session.req_header());
    let Some(n) = declared.filter(|n| *n > route.max_body_size) else {
        return Ok(false);
    };
    let err = GatewayError::too_large(route.max_body_size);
    Reply::error(&err, &ctx.request_id)
        .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
        .await?;
    // Like nginx's lingering close: the 413 is out at once, then a body the client sends anyway
    // is read and dropped, so closing does not reset the connection under the 413.
    if n <= DRAIN_LIMIT && !headers::expects_continue(session.req_header()) {
        drain_body(session).await;
    }
    Ok(true)
}

/// On an MCP route: the request's method and tool (`mcp::view`), from the headers or a bounded
/// read of the body; a header that disagrees with the body is refused (-32020).
async fn read_mcp_view(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
    route: usize,
) -> Result<Answered> {
    let route = &state.routes[route];
    if !route.mcp {
        return Ok(false);
    }
    match mcp::view::read(session, route.mcp_peek).await? {
        None => Ok(false),
        Some(mcp::view::Read::View(v)) => {
            ctx.mcp = Some(v);
            Ok(false)
        }
        Some(mcp::view::Read::Mismatch(body, v)) => {
            ctx.mcp = Some(v);
            Reply::jsonrpc_error(400, body)
                .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
                .await?;
            Ok(true)
        }
    }
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
    let caller = ctx.caller.as_ref().map(|c| &*c.name);
    match limit.check(session.req_header(), ctx.conn.client_ip, caller) {
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

/// The RFC 9728 protected resource metadata, served by the gateway itself when `[auth.oauth]`
/// is set: MCP clients fetch it before they hold a token, so no route or credential applies.
async fn serve_oauth_metadata(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
) -> Result<Answered> {
    let Some(gate) = state.gate.as_ref() else {
        return Ok(false);
    };
    let req = session.req_header();
    if !matches!(req.method, http::Method::GET | http::Method::HEAD) {
        return Ok(false);
    }
    let Some(doc) = gate.metadata(ctx.path(req)) else {
        return Ok(false);
    };
    Reply::json_document(doc)
        .send(
            session,
            &state.global_headers,
            ctx.conn.tls,
            &ctx.request_id,
        )
        .await?;
    Ok(true)
}

/// `allowed_origins` and `allowed_hosts` (DNS-rebinding protection, as the MCP transport spec
/// asks of servers): a browser page of another origin, or a name that is not this server's,
/// is refused before anything reaches a backend.
async fn check_origin_and_host(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
    route: usize,
) -> Result<Answered> {
    let route = &state.routes[route];
    if route.allowed_origins.is_empty() && route.allowed_hosts.is_empty() {
        return Ok(false);
    }
    let req = session.req_header();
    let refusal = if let Some(origin) = req
        .headers
        .get(http::header::ORIGIN)
        .filter(|_| !route.allowed_origins.is_empty())
    {
        let o = origin.to_str().unwrap_or("").to_ascii_lowercase();
        (!route.allowed_origins.contains(&o)).then(|| {
            GatewayError::forbidden(
                format!("origin {} is not allowed", strict::bounded(&o)),
                "call from an allowed origin",
            )
        })
    } else {
        None
    };
    let refusal = refusal.or_else(|| {
        if route.allowed_hosts.is_empty() {
            return None;
        }
        let host = headers::request_host(req)
            .unwrap_or("")
            .to_ascii_lowercase();
        (!route.allowed_hosts.contains(&host)).then(|| {
            GatewayError::forbidden(
                format!("host {} is not allowed", strict::bounded(&host)),
                "use the server's own name",
            )
        })
    });
    match refusal {
        None => Ok(false),
        Some(err) => {
            Reply::error(&err, &ctx.request_id)
                .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
                .await?;
            Ok(true)
        }
    }
}

/// `auth = true`: a named token or a valid JWT access token, else 401 with the challenge.
async fn authenticate(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
    route: usize,
) -> Result<Answered> {
    let route = &state.routes[route];
    let Some(gate) = state.gate.as_ref().filter(|_| route.auth) else {
        return Ok(false);
    };
    match gate.authenticate(session.req_header()).await {
        Ok(caller) => {
            ctx.rights = Some(gate.rights(&caller));
            ctx.caller = Some(caller);
            Ok(false)
        }
        Err(refusal) => {
            let message = match &refusal {
                Refusal::Missing => "authentication required".to_string(),
                Refusal::Invalid(reason) => format!("invalid token: {reason}"),
            };
            Reply::error(&GatewayError::unauthorized(message), &ctx.request_id)
                .with_header(http::header::WWW_AUTHENTICATE, gate.challenge(&refusal))
                .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
                .await?;
            Ok(true)
        }
    }
}

/// On an MCP route with a caller: the method, and the tool of a `tools/call`, must be in its
/// grants; a refusal names them (JSON-RPC error, HTTP 403). A caller whose grants restrict it
/// is refused a request whose body could not be read to confirm what it asks.
async fn authorize(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
    route: usize,
) -> Result<Answered> {
    let route = &state.routes[route];
    let (Some(rights), Some(view)) = (ctx.rights.as_ref(), ctx.mcp.as_ref()) else {
        return Ok(false);
    };
    if rights.unrestricted() {
        return Ok(false);
    }
    let caller = ctx.caller.as_ref().map_or("-", |c| &*c.name);
    let denied = if !view.checked {
        Some(format!(
            "caller {caller}: the request body could not be read to check it against the caller's grants (send it with a Content-Length under {} bytes)",
            route.mcp_peek
        ))
    } else if !rights.allows_method(view.method) {
        Some(format!("caller {caller} may not call {}", view.method))
    } else if view.method == "tools/call" {
        let tool = view.tool_name.as_deref().unwrap_or("");
        (!rights.allows_tool(tool)).then(|| format!("caller {caller} may not call tool {tool}"))
    } else {
        None
    };
    let Some(message) = denied else {
        return Ok(false);
    };
    ctx.refused = Some("denied");
    let data = view
        .tool_name
        .as_deref()
        .map(|t| serde_json::json!({"tool": t}));
    let body = mcp::view::jsonrpc_error(view.id.as_ref(), mcp::view::FORBIDDEN, &message, data);
    let mut reply = Reply::jsonrpc_error(403, body);
    if !view.checked {
        reply = reply.closing();
    }
    // A JWT caller whose token lacks a scope that would allow this: say which (step-up).
    let tool = (view.method == "tools/call").then(|| view.tool_name.as_deref().unwrap_or(""));
    if let Some(challenge) = ctx
        .caller
        .as_ref()
        .filter(|c| c.via_jwt && view.checked)
        .and(state.gate.as_ref())
        .and_then(|g| g.scope_challenge(view.method, tool))
    {
        reply = reply.with_header(http::header::WWW_AUTHENTICATE, challenge);
    }
    reply
        .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
        .await?;
    Ok(true)
}

/// `mcp_limits`: each limit whose tool or method is this request's, in order; the first that
/// refuses answers a JSON-RPC error with the zone's status and Retry-After.
async fn apply_mcp_limits(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &State,
    route: usize,
) -> Result<Answered> {
    let route = &state.routes[route];
    let Some(view) = ctx.mcp.as_ref().filter(|_| !route.mcp_limits.is_empty()) else {
        return Ok(false);
    };
    let caller = ctx.caller.as_ref().map(|c| &*c.name);
    let mut wait = Duration::ZERO;
    for (selector, limit) in &route.mcp_limits {
        let what = match selector {
            McpSelector::Tool(t)
                if view.method == "tools/call" && view.tool_name.as_deref() == Some(t.as_str()) =>
            {
                format!("tool {t}")
            }
            McpSelector::Method(m) if view.method == m.as_str() => format!("method {m}"),
            _ => continue,
        };
        match limit.check(session.req_header(), ctx.conn.client_ip, caller) {
            Verdict::Pass => {}
            Verdict::Wait(d) => wait = wait.max(d),
            Verdict::Reject { retry_after } => {
                ctx.refused = Some("limited");
                let mut reply = limit.jsonrpc_refusal(view.id.as_ref(), &what, retry_after);
                if !view.checked {
                    reply = reply.closing();
                }
                reply
                    .send(session, &route.headers, ctx.conn.tls, &ctx.request_id)
                    .await?;
                return Ok(true);
            }
        }
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    Ok(false)
}

/// The pool: a split picks it (weights, stickiness, force header, health); a route without a
/// split has one target.
fn choose_target(session: &Session, ctx: &mut Ctx, state: &State, route: usize) {
    let route = &state.routes[route];
    ctx.target = Some(0);
    if let Some(split) = &route.split {
        let pick = split.choose(
            &route.targets,
            session.req_header(),
            ctx.conn.client_ip,
            ctx.conn.tls,
        );
        ctx.split.picked = true;
        ctx.split.cookie = pick.set_cookie;
        ctx.target = Some(pick.index);
    }
    ctx.attempt.retries_left = route.retries;
}
