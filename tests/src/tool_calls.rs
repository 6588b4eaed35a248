//! Calling a backend's tools over MCP (`POST /mcp`, JSON-RPC `tools/call`) as a named caller,
//! the way the tool-family suites do: the JSON-RPC message, a call's `result`, its structured
//! content when it succeeded, its error text when it failed.

use crate::{mcp_post, CurlOut};
use serde_json::{json, Value};

/// One JSON-RPC request to `{url}/mcp` with `token` as the bearer; the response message
/// (from a JSON body or the last SSE `data:` line).
pub fn rpc(url: &str, token: &str, body: &Value) -> Value {
    let auth = format!("authorization: Bearer {token}");
    let out: CurlOut = mcp_post(
        &format!("{url}/mcp"),
        Some("2025-06-18"),
        &["-H", &auth],
        &body.to_string(),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let ct = out.header("content-type").unwrap_or("").to_string();
    if ct.starts_with("text/event-stream") {
        let data = out
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|d| !d.is_empty())
            .unwrap_or_else(|| panic!("no message: {}", out.body))
            .to_string();
        serde_json::from_str(&data).unwrap()
    } else {
        out.json()
    }
}

/// tools/call; the `result` (a CallToolResult).
pub fn call(url: &str, token: &str, tool: &str, args: Value) -> Value {
    let m = rpc(
        url,
        token,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": tool, "arguments": args}}),
    );
    m["result"].clone()
}

/// A successful call's structured content.
pub fn ok(url: &str, token: &str, tool: &str, args: Value) -> Value {
    let r = call(url, token, tool, args);
    assert_eq!(r["isError"], false, "{tool}: {r}");
    r["structuredContent"].clone()
}

/// A failed call's text ("CODE: message (hint: ...)").
pub fn err(url: &str, token: &str, tool: &str, args: Value) -> String {
    let r = call(url, token, tool, args);
    assert_eq!(r["isError"], true, "{tool}: expected an error: {r}");
    r["content"][0]["text"].as_str().unwrap_or("").to_string()
}

/// The names tools/list shows.
pub fn tool_names(url: &str, token: &str) -> Vec<String> {
    let m = rpc(
        url,
        token,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    );
    m["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}
