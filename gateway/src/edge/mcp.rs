//! The MCP view of a request on a route marked `mcp = true`: its JSON-RPC method and, for
//! `tools/call`, the tool. MCP 2026-07-28 puts them in the `Mcp-Method` and `Mcp-Name` headers
//! so that an intermediary need not parse bodies; older revisions send them only in the body,
//! so a body of known length up to [`PEEK_LIMIT`] is read ahead and parsed (then forwarded
//! unchanged, replayed by Pingora from its retry buffer). A larger or chunked body, or one the
//! client holds back for `Expect: 100-continue`, passes unread as method "unknown". When a
//! header and the body disagree, the request is refused as the backend refuses it: HTTP 400
//! with the JSON-RPC error -32020 (header mismatch).
//!
//! Metric labels stay bounded: methods outside MCP's own list count as "other", and at most
//! [`MAX_TOOL_LABELS`] distinct well-formed tool names get a label of their own.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde::Deserialize;

use crate::edge::headers;

/// Pingora's retry buffer (64 KiB): what is read ahead must fit it to be replayed.
pub const PEEK_LIMIT: u64 = 64 * 1024;
pub const MAX_TOOL_LABELS: usize = 200;
/// SEP-2243's "header mismatch" JSON-RPC error.
pub const HEADER_MISMATCH: i64 = -32020;

/// The method and tool labels of one MCP request.
#[derive(Debug, Clone, PartialEq)]
pub struct McpView {
    pub method: &'static str,
    /// The tool of a `tools/call` ("other" past the label cap), else "-".
    pub tool: String,
}

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

/// MCP's methods (2025-03-26 through 2026-07-28); anything else is "other".
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

pub fn method_label(m: &str) -> &'static str {
    METHODS
        .iter()
        .find(|k| **k == m)
        .copied()
        .unwrap_or("other")
}

static TOOL_LABELS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// A tool name as a metric label: itself while it looks like a tool name and the label set has
/// room, else "other".
pub fn tool_label(name: &str) -> String {
    let well_formed = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b));
    if !well_formed {
        return "other".into();
    }
    let mut labels = TOOL_LABELS.lock().unwrap_or_else(|p| p.into_inner());
    if labels.contains(name) || labels.len() < MAX_TOOL_LABELS {
        labels.insert(name.to_string());
        name.to_string()
    } else {
        "other".into()
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
async fn peek_body(session: &mut Session) -> pingora::Result<Option<Bytes>> {
    let req = session.req_header();
    let expects = headers::expects_continue(req);
    let length = headers::declared_length(req);
    let Some(length) = length.filter(|n| *n > 0 && *n <= PEEK_LIMIT && !expects) else {
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
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(serde_json::Value::Null),
        "error": {"code": HEADER_MISMATCH, "message": what},
    });
    let view = McpView {
        method: method_label(header_method),
        tool: "-".into(),
    };
    Read::Mismatch(Bytes::from(body.to_string()), view)
}

/// The view of a POST on an MCP route (None for other methods: no JSON-RPC there).
pub async fn read(session: &mut Session) -> pingora::Result<Option<Read>> {
    if session.req_header().method != http::Method::POST {
        return Ok(None);
    }
    let h_method = header(session, "mcp-method").map(str::to_string);
    let h_name = header(session, "mcp-name").map(str::to_string);
    let body = peek_body(session).await?;
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
    let tool = if is_call {
        h_name
            .as_deref()
            .or(b_name)
            .map_or("other".into(), tool_label)
    } else {
        "-".into()
    };
    Ok(Some(Read::View(McpView {
        method: method.map_or("unknown", method_label),
        tool,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("x/evil"), "other");
        assert_eq!(tool_label("change.open"), "change.open");
        assert_eq!(tool_label("bad name"), "other");
        assert_eq!(tool_label(&"a".repeat(65)), "other");
        for i in 0..MAX_TOOL_LABELS + 10 {
            tool_label(&format!("t{i}"));
        }
        assert_eq!(tool_label("one-more-new-tool"), "other");
        assert_eq!(tool_label("change.open"), "change.open");
    }
}
