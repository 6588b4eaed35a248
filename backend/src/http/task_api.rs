//! The user's existing Task MCP API (the existing server's documentation), kept byte-compatible:
//!
//! - `POST /sse {"tool","input"}` → `text/event-stream`: `event: progress` while the tool
//!   reports progress, `: keep-alive` comments every HEARTBEAT_MS on long calls, then
//!   `event: result` with `{"apiVersion":"1.0.0","tool","result"}`, or `event: error` with
//!   the error envelope.
//! - `POST /mcp {"tool","input"}` (told from JSON-RPC by `mcp_entry`) → `application/x-ndjson`:
//!   `{"type":"start","ts"}`, `{"type":"progress",...}`*, `{"type":"result","result"}` or
//!   `{"type":"error","error"}`, then `{"type":"end","ts"}`.
//! - `GET /tools` and `POST /tools/execute {"tool","args"}` → plain JSON; `POST /tools/NAME`
//!   with the arguments as the whole body (the memory server's form,
//!   `POST /tools/memory_recall {"key":"session_1"}`) → the same answer as `/tools/execute`.
//! - `GET /servers` → the tool families this replica serves, each with its tools.
//!
//! A malformed body or an unknown tool is answered before any stream starts, with the
//! envelope and its HTTP status; errors of the call itself arrive inside the stream.

use super::body::read_limited;
use super::reply::{self, RequestId, ToolLabel};
use super::AppState;
use crate::api_error::{epoch_ms, ApiError, ErrorObject, API_VERSION};
use crate::caller::Caller;
use crate::exec::ProgressUpdate;
use crate::trace::RequestSpan;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Parses `{"tool": "...", "<input_field>": {...}}`; a missing input is `{}`.
pub fn parse_tool_request(bytes: &[u8], input_field: &str) -> Result<(String, Value), ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::invalid_input(format!(
            "request body must be a JSON object with fields `tool` and `{input_field}`"
        )));
    };
    let tool = match obj.remove("tool") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ApiError::invalid_input("field `tool` must be a string")),
        None => {
            return Err(ApiError::invalid_input("field `tool` is required")
                .with_hint("GET /tools lists the tool names"))
        }
    };
    let input = match obj.remove(input_field) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(ApiError::invalid_input(format!(
                "field `{input_field}` must be a JSON object"
            )))
        }
    };
    Ok((tool, input))
}

/// Body, tool name and input of a Task MCP call.
async fn read_call(
    state: &AppState,
    req: Request,
    input_field: &str,
) -> Result<(&'static str, Value), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_limited(body, &parts.headers, state.config.max_request_bytes).await?;
    call_from_bytes(state, &bytes, input_field)
}

fn call_from_bytes(
    state: &AppState,
    bytes: &[u8],
    input_field: &str,
) -> Result<(&'static str, Value), ApiError> {
    let (tool, input) = parse_tool_request(bytes, input_field)?;
    let name = state
        .exec
        .tool_name(&tool)
        .ok_or_else(|| ApiError::unknown_tool(&tool))?;
    Ok((name, input))
}

fn sse_event(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Serializes in field order (a `Value` would sort the keys); plain data cannot fail.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn ndjson_line<T: Serialize>(value: &T) -> Bytes {
    let mut line = to_json(value);
    line.push('\n');
    Bytes::from(line)
}

/// The wire shapes, fields in the existing API's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultEvent<'a> {
    api_version: &'static str,
    tool: &'a str,
    result: &'a Value,
}

#[derive(Serialize)]
struct ProgressData<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    progress: f64,
    total: Option<f64>,
    message: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line<'a> {
    Start {
        ts: i64,
    },
    Result {
        result: &'a Value,
    },
    Error {
        error: ErrorObject<'a>,
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    End {
        ts: i64,
    },
}

fn progress_data<'a>(p: &'a ProgressUpdate, kind: Option<&'static str>) -> ProgressData<'a> {
    ProgressData {
        kind,
        progress: p.progress,
        total: p.total,
        message: p.message.as_deref(),
    }
}

fn streaming_response(
    content_type: &'static str,
    rx: mpsc::Receiver<Bytes>,
    tool: &'static str,
) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx-style proxies must pass events through as they are written.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.extensions_mut().insert(ToolLabel(tool));
    resp
}

/// The caller `guard` found (see `caller`).
fn caller_of(req: &Request) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

/// How a streamed call is written: SSE events or NDJSON lines.
#[derive(Clone, Copy)]
enum Format {
    Sse,
    Ndjson,
}

/// Runs the call and writes its events to `tx` until the result (or the client leaves, or the
/// shutdown grace period ends), for the caller and under the request's span (`trace`).
async fn stream_call(
    state: Arc<AppState>,
    tool: &'static str,
    input: Value,
    rid: Arc<str>,
    format: Format,
    (caller, span): (Caller, Option<RequestSpan>),
    tx: mpsc::Sender<Bytes>,
) {
    if let Format::Ndjson = format {
        if tx
            .send(ndjson_line(&Line::Start { ts: epoch_ms() }))
            .await
            .is_err()
        {
            return;
        }
    }
    let (ptx, mut prx) = mpsc::unbounded_channel::<ProgressUpdate>();
    let exec = state.exec.clone();
    let call = async move { exec.call(tool, input, &caller, Some(ptx), span).await };
    tokio::pin!(call);
    let heartbeat = state.config.heartbeat;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let closed = state.shutdown.streams_token();
    let progress_msg = |p: &ProgressUpdate| match format {
        Format::Sse => sse_event("progress", &to_json(&progress_data(p, None))),
        Format::Ndjson => ndjson_line(&progress_data(p, Some("progress"))),
    };
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            Some(p) = prx.recv() => {
                if tx.send(progress_msg(&p)).await.is_err() { return; }
            }
            _ = ticker.tick(), if matches!(format, Format::Sse) => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() { return; }
            }
            _ = tx.closed() => return,
            _ = closed.cancelled() => return,
        }
    };
    // Reports made just before the call returned are still queued: they go first.
    while let Ok(p) = prx.try_recv() {
        if tx.send(progress_msg(&p)).await.is_err() {
            return;
        }
    }
    let last = match (format, &result) {
        (Format::Sse, Ok(out)) => sse_event(
            "result",
            &to_json(&ResultEvent {
                api_version: API_VERSION,
                tool,
                result: &out.structured,
            }),
        ),
        (Format::Sse, Err(e)) => sse_event("error", &e.envelope_json(&rid)),
        (Format::Ndjson, Ok(out)) => ndjson_line(&Line::Result {
            result: &out.structured,
        }),
        (Format::Ndjson, Err(e)) => ndjson_line(&Line::Error {
            error: e.error_object(),
            request_id: &rid,
        }),
    };
    if tx.send(last).await.is_err() {
        return;
    }
    if let Format::Ndjson = format {
        let _ = tx.send(ndjson_line(&Line::End { ts: epoch_ms() })).await;
    }
}

/// `POST /sse {"tool","input"}`.
pub async fn post_sse(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let rid = reply::request_id_of(&req);
    let caller = caller_of(&req);
    let span = req.extensions().get::<RequestSpan>().copied();
    let (tool, input) = match read_call(&state, req, "input").await {
        Ok(call) => call,
        Err(e) => return reply::error(&e, &rid),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(stream_call(
        state,
        tool,
        input,
        rid,
        Format::Sse,
        (caller, span),
        tx,
    ));
    streaming_response("text/event-stream", rx, tool)
}

/// `POST /mcp {"tool","input"}`: called by `mcp_entry` with the body it already read.
pub fn ndjson_call(
    state: Arc<AppState>,
    bytes: &[u8],
    rid: Arc<str>,
    caller: Caller,
    span: Option<RequestSpan>,
) -> Response {
    let (tool, input) = match call_from_bytes(&state, bytes, "input") {
        Ok(call) => call,
        Err(e) => return reply::error(&e, &rid),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(stream_call(
        state,
        tool,
        input,
        rid,
        Format::Ndjson,
        (caller, span),
        tx,
    ));
    streaming_response("application/x-ndjson", rx, tool)
}

/// `GET /tools`: every tool with its schemas.
pub async fn list_tools(State(state): State<Arc<AppState>>) -> Response {
    let tools: Vec<Value> = state
        .exec
        .registry()
        .list()
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "title": d.title,
                "description": d.description,
                "inputSchema": d.input_schema,
                "outputSchema": d.output_schema,
            })
        })
        .collect();
    reply::json(
        StatusCode::OK,
        &json!({"apiVersion": API_VERSION, "tools": tools}),
    )
}

/// `GET /servers`: the families (TOOLS) with their tools, in registry order.
pub async fn list_servers(State(state): State<Arc<AppState>>) -> Response {
    let servers: Vec<Value> = state
        .exec
        .registry()
        .families()
        .into_iter()
        .map(|(family, defs)| {
            json!({
                "name": family.as_str(),
                "description": family.description(),
                "tools": defs.iter().map(|d| json!({
                    "name": d.name,
                    "title": d.title,
                    "description": d.description,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    reply::json(
        StatusCode::OK,
        &json!({"apiVersion": API_VERSION, "servers": servers}),
    )
}

/// `POST /tools/execute {"tool","args"}` → `{"apiVersion","tool","result"}` or the envelope.
pub async fn execute(
    State(state): State<Arc<AppState>>,
    axum::Extension(RequestId(rid)): axum::Extension<RequestId>,
    req: Request,
) -> Response {
    let caller = caller_of(&req);
    let span = req.extensions().get::<RequestSpan>().copied();
    match read_call(&state, req, "args").await {
        Ok((tool, input)) => answer_call(&state, tool, input, &caller, span, &rid).await,
        Err(e) => reply::error(&e, &rid),
    }
}

/// `POST /tools/NAME {args}`: the arguments are the body (empty body: `{}`).
pub async fn execute_named(
    State(state): State<Arc<AppState>>,
    axum::Extension(RequestId(rid)): axum::Extension<RequestId>,
    axum::extract::Path(name): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let caller = caller_of(&req);
    let span = req.extensions().get::<RequestSpan>().copied();
    let Some(tool) = state.exec.tool_name(&name) else {
        return reply::error(&ApiError::unknown_tool(&name), &rid);
    };
    let (parts, body) = req.into_parts();
    let bytes = match read_limited(body, &parts.headers, state.config.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return reply::error(&e, &rid),
    };
    let input = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                let e = ApiError::invalid_input("request body must be a JSON object of arguments")
                    .with_hint(format!("e.g. POST /tools/{tool} {{\"key\": \"...\"}}"));
                return reply::error(&e, &rid);
            }
            Err(e) => {
                let e = ApiError::bad_request(format!("request body is not valid JSON: {e}"));
                return reply::error(&e, &rid);
            }
        }
    };
    answer_call(&state, tool, input, &caller, span, &rid).await
}

/// Runs a plain-JSON call: `{"apiVersion","tool","result"}` or the envelope.
async fn answer_call(
    state: &AppState,
    tool: &'static str,
    input: Value,
    caller: &Caller,
    span: Option<RequestSpan>,
    rid: &str,
) -> Response {
    let mut resp = match state.exec.call(tool, input, caller, None, span).await {
        Ok(out) => {
            let body = to_json(&ResultEvent {
                api_version: API_VERSION,
                tool,
                result: &out.structured,
            });
            let mut resp = Response::new(Body::from(body));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => reply::error(&e, rid),
    };
    resp.extensions_mut().insert(ToolLabel(tool));
    resp
}

#[cfg(test)]
mod tests {
    use super::parse_tool_request;

    #[test]
    fn parse_names_the_field() {
        assert_eq!(
            parse_tool_request(b"{", "input").unwrap_err().code,
            "BAD_REQUEST"
        );
        let e = parse_tool_request(br#"{"input":{}}"#, "input").unwrap_err();
        assert!(e.message.contains("`tool`"));
        let e = parse_tool_request(br#"{"tool":"x","args":3}"#, "args").unwrap_err();
        assert!(e.message.contains("`args`"));
        let (t, i) = parse_tool_request(br#"{"tool":"x"}"#, "input").unwrap();
        assert_eq!(t, "x");
        assert!(i.as_object().unwrap().is_empty());
    }
}
