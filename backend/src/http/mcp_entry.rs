//! `POST /mcp` serves two protocols on one path, told apart by the body: JSON-RPC (an object
//! with `"jsonrpc"`, or a batch array) goes to rmcp's Streamable HTTP service; the Task MCP
//! form `{"tool","input"}` is answered here as NDJSON. The body is read once, under the size
//! limit, and handed on as bytes.

use super::body::read_limited;
use super::reply::{self, RequestId, ToolLabel};
use super::task_api;
use super::AppState;
use crate::api_error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

/// Just enough of the body to route it; unknown fields are skipped without allocating.
#[derive(Deserialize)]
struct Peek<'a> {
    jsonrpc: Option<IgnoredAny>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<PeekParams<'a>>,
}

#[derive(Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

enum Kind {
    /// JSON-RPC; the tool name when it is a `tools/call`.
    JsonRpc(Option<String>),
    TaskApi,
    Malformed(String),
}

fn classify(bytes: &[u8]) -> Kind {
    if let Ok(p) = serde_json::from_slice::<Peek>(bytes) {
        if p.jsonrpc.is_some() {
            let tool = (p.method.as_deref() == Some("tools/call"))
                .then(|| p.params.and_then(|pp| pp.name).map(|n| n.into_owned()))
                .flatten();
            return Kind::JsonRpc(tool);
        }
        return Kind::TaskApi;
    }
    // Not an object of the expected shape: a batch, odd `params`, or not JSON at all.
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(_)) => Kind::JsonRpc(None),
        Ok(serde_json::Value::Object(o)) if o.contains_key("jsonrpc") => Kind::JsonRpc(None),
        Ok(_) => Kind::TaskApi,
        Err(e) => Kind::Malformed(e.to_string()),
    }
}

pub async fn post_mcp(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let rid = reply::request_id_of(&req);
    let (parts, body) = req.into_parts();
    let bytes = match read_limited(body, &parts.headers, state.config.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return reply::error(&e, &rid),
    };
    match classify(&bytes) {
        Kind::JsonRpc(tool) => {
            let label = tool.as_deref().and_then(|t| state.exec.tool_name(t));
            let req = Request::from_parts(parts, Body::from(bytes));
            let resp = state.mcp.handle(req).await.map(Body::new);
            let mut resp = envelope_plain_errors(resp, &rid).await;
            if let Some(t) = label {
                resp.extensions_mut().insert(ToolLabel(t));
            }
            resp
        }
        Kind::TaskApi => task_api::ndjson_call(state.clone(), &bytes, rid),
        Kind::Malformed(e) => reply::error(
            &ApiError::bad_request(format!("request body is not valid JSON: {e}"))
                .with_hint("send a JSON-RPC 2.0 message, or {\"tool\": ..., \"input\": {...}}"),
            &rid,
        ),
    }
}

/// rmcp answers transport-level refusals (406 without the right Accept, 415 without a JSON
/// Content-Type, ...) as plain text; outside JSON-RPC our clients expect the envelope. JSON
/// answers (JSON-RPC errors) and streams pass untouched.
async fn envelope_plain_errors(resp: Response, rid: &str) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with("text/event-stream")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        s if s.is_server_error() => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    };
    let message = if text.is_empty() {
        status.to_string()
    } else {
        text
    };
    let mut err = ApiError::new(status, code, message);
    if status == StatusCode::NOT_ACCEPTABLE {
        err = err.with_hint("send Accept: application/json, text/event-stream");
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        err = err.with_hint("send Content-Type: application/json");
    }
    let mut out = reply::error(&err, rid);
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// GET (and DELETE) /mcp: this server keeps no sessions and opens no standalone stream.
pub async fn mcp_method_not_allowed(
    axum::Extension(RequestId(rid)): axum::Extension<RequestId>,
    req: Request,
) -> Response {
    let err = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "{} /mcp is not supported: this server is stateless",
            req.method()
        ),
    )
    .with_hint(
        "send JSON-RPC with POST /mcp; server-to-client messages arrive on the POST's response",
    );
    let mut resp = reply::error(&err, &rid);
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bodies() {
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"change.open","arguments":{}}}"#),
            Kind::JsonRpc(Some(ref t)) if t == "change.open"
        ));
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#),
            Kind::JsonRpc(None)
        ));
        assert!(matches!(
            classify(br#"[{"jsonrpc":"2.0"}]"#),
            Kind::JsonRpc(None)
        ));
        assert!(matches!(
            classify(br#"{"tool":"change.open","input":{}}"#),
            Kind::TaskApi
        ));
        assert!(matches!(classify(b"{nope"), Kind::Malformed(_)));
    }
}
