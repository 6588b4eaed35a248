//! The gateway's MCP view on a route marked `mcp = true`, in front of the real backend: the
//! method and tool of each request, from the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers or
//! from a bounded read of the JSON-RPC body (which still reaches the backend unchanged, over
//! HTTP/1.1 and HTTP/2), in `gateway_mcp_requests_total` and the access log; a header that
//! disagrees with the body is refused with -32020 before any backend sees it.

use e2e::gateway::{pool_toml, Gateway};
use std::time::Duration;

use e2e::{workspace_copy, Backend};
use serde_json::{json, Value};

fn call(gw: &Gateway, extra: &[&str], body: &str) -> e2e::CurlOut {
    gw.mcp_post(extra, body)
}

fn mcp_count(gw: &Gateway, method: &str, tool: &str, outcome: &str) -> f64 {
    let text = e2e::curl(&[&gw.admin("/metrics")]).body;
    text.lines()
        .filter(|l| l.starts_with("gateway_mcp_requests_total{"))
        .filter(|l| {
            l.contains(&format!("method=\"{method}\""))
                && l.contains(&format!("tool=\"{tool}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
                && l.contains("route=\"mcp\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn backend_mcp_posts(b: &Backend) -> f64 {
    let text = e2e::curl(&[&format!("{}/metrics", b.url)]).body;
    text.lines()
        .filter(|l| {
            l.starts_with("http_server_requests_total{")
                && l.contains("route=\"/mcp\"")
                && l.contains("method=\"POST\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn method_and_tool_are_seen_from_headers_or_body_and_mismatches_refused() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let body = format!(
        "{}\n[[routes]]\nname = \"mcp\"\npath = \"/mcp\"\npool = \"p\"\nmcp = true\nstream = true\n\n\
         [[routes]]\nname = \"tools\"\npath = \"/tools\"\npool = \"p\"\n",
        pool_toml("p", "least_conn", &[format!("127.0.0.1:{}", b.port)], "")
    );
    let gw = Gateway::start(&body);

    // From the body alone (revisions before 2026-07-28), HTTP/1.1 and HTTP/2.
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
                      "params":{"name":"change.list","arguments":{}}})
    .to_string();
    for proto in ["--http1.1", "--http2"] {
        let out = call(&gw, &[proto], &list);
        assert_eq!(out.status, 200, "{proto}: {}", out.body);
        let v: Value = out.json();
        assert_eq!(v["result"]["isError"], false, "{v}");
    }
    assert_eq!(mcp_count(&gw, "tools/call", "change.list", "ok"), 2.0);

    // From the headers (2026-07-28), agreeing with the body.
    let open = json!({"jsonrpc":"2.0","id":2,"method":"tools/call",
                      "params":{"name":"change.open","arguments":{"slug":"add-webhooks"}}})
    .to_string();
    let out = call(
        &gw,
        &[
            "-H",
            "mcp-method: tools/call",
            "-H",
            "mcp-name: change.open",
        ],
        &open,
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(mcp_count(&gw, "tools/call", "change.open", "ok"), 1.0);
    let out = call(
        &gw,
        &[],
        &json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}).to_string(),
    );
    assert_eq!(out.status, 200);
    assert_eq!(mcp_count(&gw, "tools/list", "-", "ok"), 1.0);

    // A header that disagrees with the body: -32020, HTTP 400, and the backend never sees it.
    let before = backend_mcp_posts(&b);
    for args in [
        vec!["-H", "mcp-method: tools/list"],
        vec![
            "-H",
            "mcp-method: tools/call",
            "-H",
            "mcp-name: task.update",
        ],
    ] {
        let out = call(&gw, &args, &open);
        assert_eq!(out.status, 400, "{args:?}: {}", out.body);
        let v: Value = out.json();
        assert_eq!(v["error"]["code"], -32020, "{v}");
        assert_eq!(v["id"], 2, "{v}");
    }
    assert_eq!(
        backend_mcp_posts(&b),
        before,
        "a mismatched request reached the backend"
    );
    assert!(mcp_count(&gw, "tools/list", "-", "refused") >= 1.0);

    // A body over the read-ahead limit passes unread ("unknown") and arrives whole: the
    // backend parses all of it (its answer is about the 70 KB argument).
    let big = json!({"jsonrpc":"2.0","id":4,"method":"tools/call",
                     "params":{"name":"change.list","arguments":{"x": "a".repeat(70_000)}}})
    .to_string();
    let out = call(&gw, &[], &big);
    assert_eq!(out.status, 200, "{}", out.body);
    let v: Value = out.json();
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("input.x"),
        "{v}"
    );
    // HTTP 200, but the tool failed: the answer's isError is the outcome.
    assert_eq!(mcp_count(&gw, "unknown", "-", "tool_error"), 1.0);

    // The access log (written by its own thread) names method and tool on the MCP route only.
    let out = gw.curl_https("/tools", &[]);
    assert_eq!(out.status, 200);
    let lines = || -> Vec<Value> {
        gw.setup
            .access_log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    gw.wait_until("the /tools access-log line", Duration::from_secs(5), || {
        lines().iter().any(|l| l["path"] == "/tools")
    });
    let lines = lines();
    assert!(
        lines
            .iter()
            .any(|l| l["mcp_method"] == "tools/call" && l["mcp_tool"] == "change.open"),
        "{lines:?}"
    );
    let tools_line = lines.iter().find(|l| l["path"] == "/tools").unwrap();
    assert!(tools_line.get("mcp_method").is_none(), "{tools_line}");
}
