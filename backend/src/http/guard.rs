//! Who may call: Origin validation and CORS (ALLOWED_ORIGINS), bearer auth (AUTH_TOKENS,
//! constant-time compare), and the per-key rate limit (RATE_LIMIT). Health probes and
//! /metrics are open: probes and Prometheus carry no token.
//!
//! Without auth the rate-limit key is the client IP (see `observe::client_ip` for how a
//! proxy's forwarded address is trusted).
//!
//! Order: a foreign `Origin` is refused first (403: a browser page must not drive the tools,
//! whatever token it holds), then CORS preflights are answered (browsers send them without
//! credentials), then the token is checked (401), then the rate limit (429). A request with no
//! `Origin` header comes from a non-browser client and passes the Origin check.

use super::observe::ClientIp;
use super::reply::{self, request_id_of};
use super::AppState;
use crate::api_error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use subtle::ConstantTimeEq;

const EXPOSE_HEADERS: &str =
    "Mcp-Session-Id, Mcp-Protocol-Version, X-Request-ID, Retry-After, WWW-Authenticate";
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, \
                             Mcp-Method, Mcp-Name, Last-Event-ID, X-Request-ID";
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";

fn is_open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path == "/health"
        || path.starts_with("/health/")
}

pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if is_open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let rid = request_id_of(&req);
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
                format!("origin {origin:?} is not allowed"),
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
    if !state.config.auth_tokens.is_empty() {
        let ok = token.is_some_and(|t| token_matches(&state.config.auth_tokens, t));
        if !ok {
            let (message, challenge) = match token {
                None => ("missing bearer token", "Bearer realm=\"task-mcp\""),
                Some(_) => (
                    "invalid bearer token",
                    "Bearer realm=\"task-mcp\", error=\"invalid_token\"",
                ),
            };
            let err = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
                .with_hint("send Authorization: Bearer <token> with a token from AUTH_TOKENS");
            let mut resp = reply::error(&err, &rid);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
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
        if let Err(wait) = limiter.check(&key) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("more than {} requests per minute", limiter.per_minute()),
            )
            .with_hint(format!("retry after {secs} s"));
            let mut resp = reply::error(&err, &rid);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            add_cors(resp.headers_mut(), origin.as_deref());
            return resp;
        }
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

pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let origin = crate::config::normalize_origin(origin);
    allowed.iter().any(|a| a == "*" || *a == origin)
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares against every configured token without stopping at the first match, each
/// comparison in constant time for equal lengths.
fn token_matches(tokens: &[String], presented: &str) -> bool {
    let mut found = subtle::Choice::from(0u8);
    for t in tokens {
        found |= t.as_bytes().ct_eq(presented.as_bytes());
    }
    found.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_origins() {
        let tokens = vec!["alpha".to_string(), "beta".to_string()];
        assert!(token_matches(&tokens, "beta"));
        assert!(!token_matches(&tokens, "bet"));
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(&allowed, "https://App.example.com"));
        assert!(!origin_allowed(&allowed, "https://evil.example.com"));
        assert!(origin_allowed(&["*".to_string()], "http://x"));
    }
}
