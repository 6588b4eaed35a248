//! Small response helpers shared by the handlers: the request id and tool label extensions,
//! envelope responses, JSON responses, the 404/405 fallbacks.

use crate::api_error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::sync::Arc;

/// The request's id (honoured from `X-Request-ID` or generated), set by `observe`.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// The tool a request called, put on the response so the access log can name it.
#[derive(Clone, Copy, Debug)]
pub struct ToolLabel(pub &'static str);

/// The JSON-RPC method of an MCP request (`otlp::semconv::mcp_method_name`), put on the response for
/// the request's span.
#[derive(Clone, Copy, Debug)]
pub struct McpMethodLabel(pub &'static str);

pub fn request_id_of(req: &Request) -> Arc<str> {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Arc::from("-"))
}

/// `value` as an `application/json` response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The envelope for `err`, with its status.
pub fn error(err: &ApiError, request_id: &str) -> Response {
    let mut resp = Response::new(Body::from(err.envelope_json(request_id)));
    *resp.status_mut() = err.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if err.status == StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key(header::ALLOW) {
        // Set by the caller when it knows better; POST is what most routes take.
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

pub async fn not_found(req: Request) -> Response {
    let rid = request_id_of(&req);
    let err = ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
    .with_hint("MCP is on POST /mcp; GET /tools lists the tools");
    error(&err, &rid)
}

pub async fn method_not_allowed(req: Request) -> Response {
    let rid = request_id_of(&req);
    let err = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    );
    let mut resp = error(&err, &rid);
    // axum's own 405 carries `Allow`; ours replaces it, so name the usual methods per route.
    let allow = match req.uri().path() {
        "/sse" => "GET, POST",
        "/tools" | "/healthz" | "/readyz" | "/health" | "/health/live" | "/health/ready"
        | "/health/metrics" | "/metrics" => "GET",
        _ => "POST",
    };
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
