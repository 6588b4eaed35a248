//! Who may call: Host validation (ALLOWED_HOSTS), Origin validation and CORS
//! (ALLOWED_ORIGINS), bearer auth (AUTH_TOKENS, constant-time compare), and the per-key rate
//! limit (RATE_LIMIT). Health probes and /metrics (also /security/metrics) are open: probes and Prometheus carry no
//! token, and they are called by address.
//!
//! Without auth the rate-limit key is the client IP (see `observe::client_ip` for how a
//! proxy's forwarded address is trusted).
//!
//! Host and Origin together are the DNS-rebinding protection the MCP spec asks for (Streamable
//! HTTP, "Security Warning": validate `Origin`; local servers bind to localhost). A page on an
//! attacker's name resolving to 127.0.0.1 sends that name in `Host` and its own `Origin`.
//!
//! Order: a `Host` outside ALLOWED_HOSTS is refused first (403; by default only loopback names
//! on a loopback bind, any on a non-loopback one, see `config::AllowedHosts`), then a foreign
//! `Origin` (403: a browser page must not drive the tools, whatever token it holds; with
//! ALLOWED_ORIGINS empty only loopback origins pass), then CORS preflights are answered
//! (browsers send them without credentials), then the token is checked (401), then the rate
//! limit (429). A request with no `Origin` header comes from a non-browser client and passes
//! the Origin check.

use super::observe::ClientIp;
use super::ratelimit::Refusal;
use super::reply::{self, request_id_of};
use super::AppState;
use crate::api_error::ApiError;
use crate::bounded::bounded;
use crate::config::{is_loopback_host, normalize_origin, parse_authority};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

const EXPOSE_HEADERS: &str =
    "Mcp-Session-Id, Mcp-Protocol-Version, X-Request-ID, Retry-After, WWW-Authenticate";
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, \
                             Mcp-Method, Mcp-Name, Last-Event-ID, X-Request-ID, Traceparent, \
                             Tracestate";
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";

/// Health probes, metrics and the OAuth metadata: no token, no Host or Origin check (and no
/// span: `observe`).
pub(crate) fn is_open_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/security/metrics"
    ) || path == "/health"
        || path.starts_with("/health/")
        || path.starts_with(crate::config::OAUTH_METADATA_PATH)
}

pub async fn guard(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    if is_open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let rid = request_id_of(&req);
    // HTTP/1.1 carries the name in `Host`, HTTP/2 in `:authority` (the URI's authority).
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("(not UTF-8)"))
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !state.config.allowed_hosts.allows(host) {
        let message = match host {
            Some(h) => format!("host {:?} is not allowed", bounded(h)),
            None => "the request names no host (Host header)".to_string(),
        };
        let err = ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
            .with_hint("add it to ALLOWED_HOSTS (host or host:port; * allows any)");
        return reply::error(&err, &rid);
    }

    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    if let Some(origin) = &origin {
        if !origin_allowed(&state.config.allowed_origins, origin) {
            let err = ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("origin {:?} is not allowed", bounded(origin)),
            )
            .with_hint("add it to ALLOWED_ORIGINS (scheme://host[:port])");
            return reply::error(&err, &rid);
        }
    }

    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(ALLOW_HEADERS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        add_cors(h, origin.as_deref());
        return resp;
    }

    let token = bearer_token(req.headers());
    // Who calls (the todo tools keep each caller's tasks apart); None: a token is refused.
    let caller = crate::caller::resolve(&state.config, token);
    if !state.config.auth_tokens.is_empty() {
        let ok = caller.is_some();
        if !ok {
            let (message, error) = match token {
                None => ("missing bearer token", ""),
                Some(_) => ("invalid bearer token", ", error=\"invalid_token\""),
            };
            // RFC 6750 section 3; with OAuth metadata configured, RFC 9728 section 5.1 names
            // it so that an MCP client can find the authorization server.
            let challenge = match &state.config.oauth {
                Some(o) => format!(
                    "Bearer realm=\"task-mcp\", resource_metadata=\"{}\"{error}",
                    o.metadata_url
                ),
                None => format!("Bearer realm=\"task-mcp\"{error}"),
            };
            let err = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
                .with_hint("send Authorization: Bearer <token> with a token from AUTH_TOKENS");
            let mut resp = reply::error(&err, &rid);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            add_cors(resp.headers_mut(), origin.as_deref());
            return resp;
        }
    }

    if let Some(limiter) = &state.limiter {
        let key = match token {
            Some(t) if !state.config.auth_tokens.is_empty() => format!("token:{t}"),
            _ => {
                let ip = req
                    .extensions()
                    .get::<ClientIp>()
                    .map(|c| c.0.to_string())
                    .unwrap_or_default();
                format!("ip:{ip}")
            }
        };
        if let Err(refusal) = limiter.check(&key).await {
            let (err, secs) = match refusal {
                Refusal::Limited(wait) => {
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    let err = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "RATE_LIMITED",
                        format!("more than {} requests per minute", limiter.per_minute()),
                    )
                    .with_hint(format!("retry after {secs} s"));
                    (err, secs)
                }
                // RATE_LIMIT_REDIS_FAILURE=closed and Redis did not answer in time.
                Refusal::Unavailable => (
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        "the rate limit cannot be checked: its store (Redis) is unreachable",
                    )
                    .with_hint("retry shortly; RATE_LIMIT_REDIS_FAILURE=open lets calls through"),
                    1,
                ),
            };
            let mut resp = reply::error(&err, &rid);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            add_cors(resp.headers_mut(), origin.as_deref());
            return resp;
        }
    }

    // Behind the gateway every request carries the gateway's token: the caller it
    // authenticated comes in TRUSTED_CALLER_HEADER, believed from internal peers only.
    let caller = caller.map(|c| forwarded_caller(&state.config, &req).unwrap_or(c));
    if let Some(caller) = caller {
        req.extensions_mut().insert(caller);
    }
    let mut resp = next.run(req).await;
    add_cors(resp.headers_mut(), origin.as_deref());
    resp
}

/// CORS response headers for an (already validated) origin.
fn add_cors(h: &mut HeaderMap, origin: Option<&str>) {
    let Some(origin) = origin else { return };
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// An empty list allows loopback origins only: a page served from this machine's own
/// `localhost` (the MCP spec's advice for local servers) and nothing a rebinding page can claim.
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let origin = normalize_origin(origin);
    if allowed.is_empty() {
        return is_loopback_origin(&origin);
    }
    allowed.iter().any(|a| a == "*" || *a == origin)
}

/// `http(s)://` + `localhost` or a loopback IP literal, any port.
fn is_loopback_origin(origin: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .and_then(parse_authority)
        .is_some_and(|(host, _)| is_loopback_host(&host))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller a trusted proxy names in TRUSTED_CALLER_HEADER: 1-200 visible ASCII
/// characters, from a loopback or private peer; None otherwise.
fn forwarded_caller(
    config: &crate::config::Config,
    req: &Request,
) -> Option<crate::caller::Caller> {
    let name = config.trusted_caller_header.as_ref()?;
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?
        .0
        .ip();
    if !super::observe::is_internal(peer) {
        return None;
    }
    let v = req.headers().get(name)?.to_str().ok()?.trim();
    let ok = !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| crate::caller::Caller::named(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_origins() {
        let tokens = vec!["alpha".to_string(), "beta".to_string()];
        assert_eq!(crate::caller::match_token(&tokens, "beta"), Some(1));
        assert_eq!(crate::caller::match_token(&tokens, "bet"), None);
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(&allowed, "https://App.example.com"));
        assert!(!origin_allowed(&allowed, "https://evil.example.com"));
        assert!(origin_allowed(&["*".to_string()], "http://x"));
        // A listed set is exactly that set: loopback is implicit only when the list is empty.
        assert!(!origin_allowed(&allowed, "http://localhost:3000"));
    }

    #[test]
    fn empty_origin_list_allows_loopback_only() {
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://LOCALHOST:8443/",
            "http://127.0.0.1:49152",
            "http://[::1]:8080",
            "https://[::1]",
        ] {
            assert!(origin_allowed(&[], ok), "{ok}");
        }
        for refused in [
            "http://evil.example.com",
            "http://localhost.evil.example.com",
            "http://127.0.0.1.nip.io",
            "null",
            "file://",
            "ftp://localhost",
            "http://user@localhost",
        ] {
            assert!(!origin_allowed(&[], refused), "{refused}");
        }
    }
}
