//! `POST /mcp` serves two protocols on one path, told apart by the body: JSON-RPC (an object
//! with `"jsonrpc"`, or a batch array) goes to rmcp's Streamable HTTP service; the Task MCP
//! form `{"tool","input"}` is answered here as NDJSON. The body is read once, under the size
//! limit, and handed on as bytes.

use super::body::read_limited;
use super::reply::{self, McpMethodLabel, RequestId, ToolLabel};
use super::task_api;
use super::AppState;
use crate::api_error::ApiError;
use crate::caller::Caller;
use crate::mcp::wire::{self, Refusal};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

/// Just enough of the body to route it, and to see that it is a well-formed JSON-RPC 2.0
/// message (the common case); unknown fields are skipped without allocating. Anything this
/// does not read cleanly takes the slow path (`classify_value`).
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    /// `Some(None)`: present and null.
    #[serde(default, deserialize_with = "present")]
    id: Option<Option<PeekId<'a>>>,
    #[serde(borrow)]
    params: Option<PeekParams<'a>>,
}

/// A valid id (string or integer): read only to fail the fast path otherwise.
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum PeekId<'a> {
    Int(i64),
    Str(#[serde(borrow)] Cow<'a, str>),
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    /// Read only to fail the fast path when it is not an object.
    #[serde(rename = "arguments")]
    _arguments: Option<ObjectOrNull>,
}

/// Accepts a JSON object (skipping its content) or null, and nothing else.
struct ObjectOrNull;

impl<'de> Deserialize<'de> for ObjectOrNull {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ObjectOrNull;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ObjectOrNull, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ObjectOrNull)
            }
            fn visit_unit<E>(self) -> Result<ObjectOrNull, E> {
                Ok(ObjectOrNull)
            }
        }
        d.deserialize_any(V)
    }
}

enum Kind {
    /// A valid JSON-RPC message: its method (`otlp::semconv::mcp_method_name`), and the tool name
    /// when it is a `tools/call`.
    JsonRpc(&'static str, Option<String>),
    /// A JSON array: a JSON-RPC batch.
    Batch(Vec<serde_json::Value>),
    /// JSON-RPC that rmcp would misread: answered here.
    Invalid(Refusal),
    TaskApi,
    /// Not JSON.
    Malformed(String),
}

fn classify(bytes: &[u8]) -> Kind {
    if let Ok(p) = serde_json::from_slice::<Peek>(bytes) {
        if p.jsonrpc.is_none() && p.method.is_none() {
            return Kind::TaskApi;
        }
        let tools_call = p.method.as_deref() == Some("tools/call");
        let well_formed = p.jsonrpc.as_deref() == Some("2.0")
            && p.method.is_some()
            && !matches!(p.id, Some(None))
            && (!tools_call || p.params.as_ref().is_some_and(|pp| pp.name.is_some()));
        if well_formed {
            let method = otlp::semconv::mcp_method_name(p.method.as_deref().unwrap_or(""));
            let tool = tools_call
                .then(|| p.params.and_then(|pp| pp.name).map(|n| n.into_owned()))
                .flatten();
            return Kind::JsonRpc(method, tool);
        }
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => classify_value(v),
        Err(e) => Kind::Malformed(e.to_string()),
    }
}

/// The slow path: the whole body as a value, checked field by field for a precise error.
fn classify_value(v: serde_json::Value) -> Kind {
    match v {
        serde_json::Value::Array(items) => Kind::Batch(items),
        serde_json::Value::Object(ref o)
            if !o.contains_key("jsonrpc") && !o.contains_key("method") =>
        {
            Kind::TaskApi
        }
        v => match wire::check(&v) {
            Ok(()) => {
                let method = otlp::semconv::mcp_method_name(v["method"].as_str().unwrap_or(""));
                let tool = (v["method"] == "tools/call")
                    .then(|| v["params"]["name"].as_str().map(str::to_string))
                    .flatten();
                Kind::JsonRpc(method, tool)
            }
            Err(r) => Kind::Invalid(r),
        },
    }
}

/// A client speaking MCP (not the Task API's plain JSON): it accepts SSE or names a revision.
fn is_mcp_client(headers: &HeaderMap) -> bool {
    headers.contains_key("mcp-protocol-version")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"))
}

fn refusal(r: &Refusal) -> Response {
    reply::json(r.status, &r.to_json())
}

/// The caller `guard` found (anonymous if none, which only a route outside the guard sees).
fn caller_of(parts: &axum::http::request::Parts) -> Caller {
    parts
        .extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

pub async fn post_mcp(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let rid = reply::request_id_of(&req);
    let (parts, body) = req.into_parts();
    let bytes = match read_limited(body, &parts.headers, state.config.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return reply::error(&e, &rid),
    };
    match classify(&bytes) {
        Kind::JsonRpc(method, tool) => {
            let label = tool.as_deref().and_then(|t| state.exec.tool_name(t));
            let req = Request::from_parts(parts, Body::from(bytes));
            let resp = state.mcp.handle(req).await.map(Body::new);
            let mut resp = envelope_plain_errors(resp, &rid).await;
            if let Some(t) = label {
                resp.extensions_mut().insert(ToolLabel(t));
            }
            resp.extensions_mut().insert(McpMethodLabel(method));
            resp
        }
        Kind::Batch(items) => batch(&state, parts, items, &rid).await,
        Kind::Invalid(r) => refusal(&r),
        Kind::TaskApi => task_api::ndjson_call(
            state.clone(),
            &bytes,
            rid,
            caller_of(&parts),
            parts.extensions.get().copied(),
        ),
        Kind::Malformed(e) if is_mcp_client(&parts.headers) => refusal(&Refusal::parse_error(&e)),
        Kind::Malformed(e) => reply::error(
            &ApiError::bad_request(format!("request body is not valid JSON: {e}"))
                .with_hint("send a JSON-RPC 2.0 message, or {\"tool\": ..., \"input\": {...}}"),
            &rid,
        ),
    }
}

/// The revisions whose Streamable HTTP transport receives JSON-RPC batches: 2025-03-26 (the
/// header is absent before the client has negotiated one; that revision is then assumed).
/// 2025-06-18 removed batching.
fn batches_allowed(headers: &HeaderMap) -> Result<(), String> {
    match headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
    {
        None | Some("2025-03-26") => Ok(()),
        Some(v) => Err(crate::bounded::bounded(v).to_string()),
    }
}

/// Largest answer of one batched message read back from rmcp.
const BATCH_ITEM_LIMIT: usize = 16 << 20;

/// A JSON-RPC batch (JSON-RPC 2.0 section 6, MCP 2025-03-26): each message goes through rmcp
/// on its own, in order; the answers to its requests come back as one JSON array (202 when it
/// held only notifications and responses). A refusal of the whole request (406, 415, ...)
/// is answered as it is.
async fn batch(
    state: &AppState,
    parts: axum::http::request::Parts,
    items: Vec<serde_json::Value>,
    rid: &str,
) -> Response {
    if let Err(version) = batches_allowed(&parts.headers) {
        return refusal(&Refusal::new(
            wire::INVALID_REQUEST,
            format!(
                "invalid request: JSON-RPC batches are not part of MCP revision {version} \
                 (removed in 2025-06-18); send one message per request"
            ),
            serde_json::Value::Null,
        ));
    }
    if items.is_empty() {
        return refusal(&Refusal::new(
            wire::INVALID_REQUEST,
            "invalid request: an empty batch",
            serde_json::Value::Null,
        ));
    }
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        if let Err(r) = wire::check(&item) {
            answers.push(r.to_json());
            continue;
        }
        let mut one = Request::new(Body::from(item.to_string()));
        *one.method_mut() = parts.method.clone();
        *one.uri_mut() = parts.uri.clone();
        *one.headers_mut() = parts.headers.clone();
        if let Some(c) = parts.extensions.get::<Caller>() {
            one.extensions_mut().insert(c.clone());
        }
        if let Some(span) = parts.extensions.get::<crate::trace::RequestSpan>() {
            one.extensions_mut().insert(*span);
        }
        one.headers_mut().remove(header::CONTENT_LENGTH);
        let resp = state.mcp.handle(one).await.map(Body::new);
        let status = resp.status();
        if status == StatusCode::ACCEPTED {
            continue;
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !content_type.starts_with("application/json")
            && !content_type.starts_with("text/event-stream")
        {
            return envelope_plain_errors(resp, rid).await;
        }
        let Ok(body) = axum::body::to_bytes(resp.into_body(), BATCH_ITEM_LIMIT).await else {
            answers.push(
                Refusal::new(
                    -32603,
                    "internal error: the answer was too large for a batch",
                    item.get("id").cloned().unwrap_or_default(),
                )
                .to_json(),
            );
            continue;
        };
        if content_type.starts_with("application/json") {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Array(a)) => answers.extend(a),
                Ok(v) => answers.push(v),
                Err(_) => {}
            }
        } else {
            // An SSE answer: its final message is the response (progress notifications before
            // it have no place in a batch's array).
            let text = String::from_utf8_lossy(&body);
            answers.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
                    .filter(|m| m.get("id").is_some() && m.get("method").is_none()),
            );
        }
    }
    if answers.is_empty() {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    }
    reply::json(StatusCode::OK, &serde_json::Value::Array(answers))
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
            Kind::JsonRpc("tools/call", Some(ref t)) if t == "change.open"
        ));
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#),
            Kind::Invalid(_)
        ));
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Kind::JsonRpc("ping", None)
        ));
        assert!(matches!(
            classify(br#"[{"jsonrpc":"2.0"}]"#),
            Kind::Batch(ref b) if b.len() == 1
        ));
        assert!(matches!(
            classify(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            Kind::Invalid(ref r) if r.code == wire::INVALID_REQUEST
        ));
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            Kind::Invalid(ref r) if r.code == wire::INVALID_REQUEST
        ));
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[]}}"#),
            Kind::Invalid(ref r) if r.code == wire::INVALID_PARAMS
        ));
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#),
            Kind::Invalid(ref r) if r.code == wire::INVALID_PARAMS
        ));
        assert!(matches!(
            classify(br#"{"tool":"change.open","input":{}}"#),
            Kind::TaskApi
        ));
        assert!(matches!(classify(b"{nope"), Kind::Malformed(_)));
    }
}
