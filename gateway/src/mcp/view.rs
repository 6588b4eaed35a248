//! The MCP view of a request on a route marked `mcp = true`: its JSON-RPC method and, for
//! `tools/call`, the tool. MCP 2026-07-28 puts them in the `Mcp-Method` and `Mcp-Name` headers
//! so that an intermediary need not parse bodies; older revisions send them only in the body,
//! so a body of known length up to the route's `mcp_peek` (at most 64 KiB, Pingora's retry
//! buffer, which the config enforces) is read ahead and parsed (then forwarded
//! unchanged, replayed by Pingora from its retry buffer). A larger or chunked body, or one the
//! client holds back for `Expect: 100-continue`, passes unread as method "unknown". When a
//! header and the body disagree, the request is refused as the backend refuses it: HTTP 400
//! with the JSON-RPC error -32020 (header mismatch).
//!
//! Metric labels stay bounded: methods outside MCP's own list count as "other". Tool names get
//! a label of their own when the gateway knows them (named in the configuration, or seen in a
//! backend's `tools/list` answer), and otherwise only the first [`MAX_TOOL_LABELS`] distinct
//! well-formed names: a client inventing names cannot crowd out the real tools.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde::Deserialize;

use crate::edge::headers;

/// Labels for tool names the gateway does not know.
pub const MAX_TOOL_LABELS: usize = 200;
/// Labels for tool names it knows (configuration, `tools/list`).
pub const MAX_KNOWN_TOOLS: usize = 1000;
/// SEP-2243's "header mismatch" JSON-RPC error.
pub const HEADER_MISMATCH: i64 = -32020;
/// The gateway's own refusals, in JSON-RPC's implementation-defined server-error range:
/// a caller outside its grants, and a per-tool or per-method rate limit.
pub const FORBIDDEN: i64 = -32003;
pub const RATE_LIMITED: i64 = -32029;

/// A JSON-RPC error response (the request's id, or null when it is unknown).
pub fn jsonrpc_error(
    id: Option<&serde_json::Value>,
    code: i64,
    message: &str,
    data: Option<serde_json::Value>,
) -> Bytes {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(serde_json::Value::Null),
        "error": error,
    });
    Bytes::from(body.to_string())
}

/// The method and tool labels of one MCP request.
#[derive(Debug, Clone, PartialEq)]
pub struct McpView {
    pub method: &'static str,
    /// The tool of a `tools/call` as a label ("other" past the label cap), else "-".
    pub tool: Arc<str>,
    /// The tool's name as the request gave it (grants and limits see this), bounded.
    pub tool_name: Option<Box<str>>,
    /// The JSON-RPC id, for errors the gateway answers itself.
    pub id: Option<serde_json::Value>,
    /// Method and tool were read from the body itself (not only from headers the body was
    /// not there to confirm): grants that restrict a caller rely only on a checked view.
    pub checked: bool,
}

impl McpView {
    fn new(method: &'static str) -> McpView {
        McpView {
            method,
            tool: Arc::clone(&DASH),
            tool_name: None,
            id: None,
            checked: false,
        }
    }
}

static DASH: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));
static OTHER: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("other"));

pub enum Read {
    View(McpView),
    /// A header disagrees with the body: this JSON-RPC error body, HTTP 400 (the view names
    /// the headers' method).
    Mismatch(Bytes, McpView),
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    id: Option<serde_json::Value>,
    #[serde(borrow)]
    params: Option<PeekParams<'a>>,
}

#[derive(Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// MCP's own methods (OpenTelemetry's `mcp.method.name` values); anything else is "other".
pub fn is_method(m: &str) -> bool {
    otlp::semconv::mcp_method(m).is_some()
}

pub fn method_label(m: &str) -> &'static str {
    otlp::semconv::mcp_method_name(m)
}

#[derive(Default)]
struct ToolLabels {
    known: HashSet<Arc<str>>,
    first_come: HashSet<Arc<str>>,
}

static TOOL_LABELS: LazyLock<Mutex<ToolLabels>> = LazyLock::new(Default::default);

fn well_formed(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
}

/// Tool names the gateway knows: they always get a label of their own.
pub fn learn_tools<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut labels = TOOL_LABELS.lock().unwrap_or_else(|p| p.into_inner());
    for name in names {
        if well_formed(name) && labels.known.len() < MAX_KNOWN_TOOLS && !labels.known.contains(name)
        {
            labels.known.insert(Arc::from(name));
        }
    }
}

/// A tool name as a metric label: itself when known, or while it looks like a tool name and
/// the first-come label set has room; else "other".
pub fn tool_label(name: &str) -> Arc<str> {
    if !well_formed(name) {
        return Arc::clone(&OTHER);
    }
    let mut labels = TOOL_LABELS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = labels
        .known
        .get(name)
        .or_else(|| labels.first_come.get(name))
    {
        return Arc::clone(l);
    }
    if labels.first_come.len() < MAX_TOOL_LABELS {
        let l: Arc<str> = Arc::from(name);
        labels.first_come.insert(Arc::clone(&l));
        l
    } else {
        Arc::clone(&OTHER)
    }
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Reads the body ahead when it is small enough to be replayed; None when it is not read.
async fn peek_body(session: &mut Session, limit: u64) -> pingora::Result<Option<Bytes>> {
    let req = session.req_header();
    let expects = headers::expects_continue(req);
    let length = headers::declared_length(req);
    let Some(length) = length.filter(|n| *n > 0 && *n <= limit && !expects) else {
        return Ok(None);
    };
    session.as_downstream_mut().enable_retry_buffering();
    let mut body = BytesMut::with_capacity(length as usize);
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

fn mismatch(id: Option<serde_json::Value>, header_method: &str, what: &str) -> Read {
    let body = jsonrpc_error(id.as_ref(), HEADER_MISMATCH, what, None);
    Read::Mismatch(body, McpView::new(method_label(header_method)))
}

/// The view of a POST on an MCP route (None for other methods: no JSON-RPC there); a body up
/// to `peek` bytes is read ahead when the headers do not name the method.
pub async fn read(session: &mut Session, peek: u64) -> pingora::Result<Option<Read>> {
    if session.req_header().method != http::Method::POST {
        return Ok(None);
    }
    let h_method = header(session, "mcp-method").map(str::to_string);
    let h_name = header(session, "mcp-name").map(str::to_string);
    let body = peek_body(session, peek).await?;
    let peek = body
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Peek>(b).ok());
    let (b_method, b_name, id) = match &peek {
        Some(p) => (
            p.method.as_deref(),
            p.params.as_ref().and_then(|pp| pp.name.as_deref()),
            p.id.clone(),
        ),
        None => (None, None, None),
    };
    if let (Some(h), Some(b)) = (h_method.as_deref(), b_method) {
        if h != b {
            return Ok(Some(mismatch(
                id,
                h,
                "header mismatch: Mcp-Method does not match the body's method",
            )));
        }
    }
    let method = h_method.as_deref().or(b_method);
    let is_call = method == Some("tools/call");
    if let (true, Some(h), Some(b)) = (is_call, h_name.as_deref(), b_name) {
        if h != b {
            return Ok(Some(mismatch(
                id,
                "tools/call",
                "header mismatch: Mcp-Name does not match the body's params.name",
            )));
        }
    }
    let mut view = McpView::new(method.map_or("unknown", method_label));
    view.id = id;
    view.checked = b_method.is_some();
    if is_call {
        let name = h_name.as_deref().or(b_name);
        view.tool = name.map_or_else(|| Arc::clone(&OTHER), tool_label);
        view.tool_name = name.map(|n| crate::edge::strict::bounded(n).into());
    }
    Ok(Some(Read::View(view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("x/evil"), "other");
        assert_eq!(&*tool_label("change.open"), "change.open");
        assert_eq!(&*tool_label("bad name"), "other");
        assert_eq!(&*tool_label(&"a".repeat(65)), "other");
        for i in 0..MAX_TOOL_LABELS + 10 {
            tool_label(&format!("t{i}"));
        }
        assert_eq!(&*tool_label("one-more-new-tool"), "other");
        assert_eq!(&*tool_label("change.open"), "change.open");
        // A tool the backend lists keeps its own label past the first-come cap.
        learn_tools(["change.archive"]);
        assert_eq!(&*tool_label("change.archive"), "change.archive");
    }
}
