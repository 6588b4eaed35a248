//! MCP Streamable HTTP on /mcp at the wire level, with curl: every protocol revision from
//! 2025-03-26 to 2026-07-28 (initialize for the older ones, `server/discover` and per-request
//! metadata for 2026-07-28), statelessness across replicas, and progress on the POST's stream.

use e2e::{curl, workspace_copy, Backend, CurlOut};
use serde_json::{json, Value};

fn rpc(url: &str, version: Option<&str>, extra: &[&str], body: &Value) -> CurlOut {
    e2e::mcp_post(url, version, extra, &body.to_string())
}

fn raw(url: &str, version: Option<&str>, body: &str) -> CurlOut {
    e2e::mcp_post(url, version, &[], body)
}

/// The JSON-RPC messages of a response, whether it came as JSON or as an SSE stream.
fn messages(out: &CurlOut) -> Vec<Value> {
    let ct = out.header("content-type").unwrap_or("");
    if ct.starts_with("text/event-stream") {
        out.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{d}: {e}")))
            .collect()
    } else {
        vec![out.json()]
    }
}

#[test]
fn initialize_negotiates_each_revision_before_2026() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let url = format!("{}/mcp", b.url);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let out = rpc(
            &url,
            None,
            &[],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "curl", "version": "1"}}}),
        );
        assert_eq!(out.status, 200, "{version}: {}", out.body);
        assert!(
            out.header("mcp-session-id").is_none(),
            "stateless: no session id"
        );
        let m = &messages(&out)[0];
        assert_eq!(m["result"]["protocolVersion"], version, "{m}");
        assert_eq!(m["result"]["serverInfo"]["name"], "task-mcp-backend");
        assert!(m["result"]["capabilities"]["tools"].is_object());

        // Any later request stands alone: no session, the version in the header.
        let out = rpc(
            &url,
            Some(version),
            &[],
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        );
        let m = &messages(&out)[0];
        assert_eq!(
            m["result"]["tools"].as_array().map(Vec::len),
            Some(7),
            "{version}: {m}"
        );
    }
}

#[test]
fn discover_and_per_request_metadata_for_2026_07_28() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let url = format!("{}/mcp", b.url);
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let out = rpc(
        &url,
        Some("2026-07-28"),
        &["-H", "mcp-method: server/discover"],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let m = &messages(&out)[0];
    let versions: Vec<&str> = m["result"]["supportedVersions"]
        .as_array()
        .expect("supportedVersions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for v in ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"] {
        assert!(versions.contains(&v), "{v} in {versions:?}");
    }
    assert!(m["result"]["capabilities"]["tools"].is_object(), "{m}");

    let out = rpc(
        &url,
        Some("2026-07-28"),
        &[
            "-H",
            "mcp-method: tools/call",
            "-H",
            "mcp-name: change.open",
        ],
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "change.open", "arguments": {"slug": "add-two-factor-auth"}, "_meta": meta}}),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let m = &messages(&out)[0];
    assert_eq!(m["result"]["isError"], false, "{m}");
    assert_eq!(
        m["result"]["structuredContent"]["slug"],
        "add-two-factor-auth"
    );
    assert!(m["result"]["content"][0]["text"].is_string());
}

#[test]
fn any_replica_serves_any_request() {
    let ws = workspace_copy();
    let a = Backend::start(ws.path(), &[]);
    let b = Backend::start(ws.path(), &[]);
    let init = rpc(
        &format!("{}/mcp", a.url),
        None,
        &[],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "curl", "version": "1"}}}),
    );
    assert_eq!(init.status, 200);
    // The follow-up goes to the other replica, which never saw the initialize.
    let notified = rpc(
        &format!("{}/mcp", b.url),
        Some("2025-06-18"),
        &[],
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(notified.status, 202);
    let out = rpc(
        &format!("{}/mcp", b.url),
        Some("2025-06-18"),
        &[],
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "task.list", "arguments": {"slug": "add-task-due-dates"}}}),
    );
    let m = &messages(&out)[0];
    assert_eq!(m["result"]["isError"], false, "{m}");
}

#[test]
fn progress_notifications_precede_the_result_on_the_post_stream() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let out = rpc(
        &format!("{}/mcp", b.url),
        Some("2025-06-18"),
        &["-N"],
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "change.archive", "arguments": {"slug": "add-webhooks"},
            "_meta": {"progressToken": "tok-7"}}}),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let msgs = messages(&out);
    let last = msgs.last().expect("messages");
    assert_eq!(last["id"], 7, "the result comes last: {msgs:#?}");
    assert_eq!(last["result"]["isError"], false);
    let progress: Vec<&Value> = msgs[..msgs.len() - 1].iter().collect();
    assert!(!progress.is_empty(), "{msgs:#?}");
    for p in progress {
        assert_eq!(p["method"], "notifications/progress");
        assert_eq!(p["params"]["progressToken"], "tok-7");
    }

    // Without a token: one plain JSON answer.
    let out = rpc(
        &format!("{}/mcp", b.url),
        Some("2025-06-18"),
        &[],
        &json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {
            "name": "change.list", "arguments": {}}}),
    );
    assert!(out
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    assert_eq!(out.json()["id"], 8);
}

#[test]
fn unknown_tool_is_a_jsonrpc_error_and_tool_failures_are_results() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let url = format!("{}/mcp", b.url);
    let out = rpc(
        &url,
        Some("2025-06-18"),
        &[],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "nope", "arguments": {}}}),
    );
    let m = &messages(&out)[0];
    assert_eq!(m["error"]["code"], -32602, "{m}");
    assert!(m["error"]["message"].as_str().unwrap().contains("nope"));

    let out = rpc(
        &url,
        Some("2025-06-18"),
        &[],
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "spec.open", "arguments": {"capability": "../secrets"}}}),
    );
    let m = &messages(&out)[0];
    assert_eq!(m["result"]["isError"], true, "{m}");
    let text = m["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("INVALID_INPUT") && text.contains("capability"),
        "{text}"
    );
}

#[test]
fn invalid_jsonrpc_gets_jsonrpc_errors_and_undeclared_capabilities_are_not_found() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let url = format!("{}/mcp", b.url);
    let v = Some("2025-11-25");
    // JSON-RPC 2.0 section 5.1: -32700 and -32600 with HTTP 400, never a 415 for a body that
    // did say application/json.
    for (body, code, id) in [
        ("{nope", -32700, Value::Null),
        (
            r#"{"jsonrpc":"1.0","id":4,"method":"ping"}"#,
            -32600,
            json!(4),
        ),
        (
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            -32600,
            Value::Null,
        ),
        (r#"{"jsonrpc":"2.0","id":6,"method":7}"#, -32600, json!(6)),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            -32600,
            Value::Null,
        ),
        ("7", -32600, Value::Null),
    ] {
        let out = raw(&url, v, body);
        assert_eq!(out.status, 400, "{body}: {}", out.body);
        let m = out.json();
        assert_eq!(m["error"]["code"], code, "{body}: {m}");
        assert_eq!(m["id"], id, "{body}: {m}");
        assert_eq!(m["jsonrpc"], "2.0", "{m}");
    }
    // tools/call with params that do not fit: -32602 in band (HTTP 200), naming the problem.
    for body in [
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{}}}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":5}}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"change.list","arguments":5}}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call"}),
    ] {
        let out = rpc(&url, v, &[], &body);
        assert_eq!(out.status, 200, "{body}: {}", out.body);
        let m = &messages(&out)[0];
        assert_eq!(m["error"]["code"], -32602, "{body}: {m}");
        assert_eq!(m["id"], 2, "{m}");
    }
    // Only tools is declared: the other capabilities' methods are -32601, not empty lists.
    for method in [
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "completion/complete",
    ] {
        let params = if method == "completion/complete" {
            json!({"ref": {"type": "ref/prompt", "name": "x"}, "argument": {"name": "a", "value": "b"}})
        } else {
            json!({})
        };
        let out = rpc(
            &url,
            v,
            &[],
            &json!({"jsonrpc":"2.0","id":9,"method":method,"params":params}),
        );
        let m = &messages(&out)[0];
        assert_eq!(m["error"]["code"], -32601, "{method}: {m}");
    }
    // The Task API's own plain JSON still gets its envelope for a body that is not JSON.
    let out = curl(&[
        "-X",
        "POST",
        &url,
        "-H",
        "content-type: application/json",
        "--data-binary",
        "{nope",
    ]);
    assert_eq!(out.status, 400, "{}", out.body);
    assert_eq!(out.json()["error"]["code"], "BAD_REQUEST", "{}", out.body);
}

#[test]
fn batches_are_received_under_2025_03_26_and_refused_after() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let url = format!("{}/mcp", b.url);
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"ping"},
        {"jsonrpc":"2.0","method":"notifications/initialized"},
        {"jsonrpc":"2.0","id":"two","method":"tools/call","params":{"name":"change.list","arguments":{}}},
        {"jsonrpc":"1.0","id":3,"method":"ping"},
    ]);
    // 2025-03-26 (and no header: the revision assumed before negotiation) receives batches.
    for version in [None, Some("2025-03-26")] {
        let out = rpc(&url, version, &[], &batch);
        assert_eq!(out.status, 200, "{version:?}: {}", out.body);
        let answers = out.json();
        let answers = answers.as_array().expect("an array of responses");
        assert_eq!(answers.len(), 3, "{answers:?}");
        let by_id = |id: Value| answers.iter().find(|a| a["id"] == id).cloned();
        assert!(by_id(json!(1)).expect("ping")["result"].is_object());
        let call = by_id(json!("two")).expect("tools/call");
        assert_eq!(call["result"]["isError"], false, "{call}");
        assert!(call["result"]["structuredContent"]["changes"].is_array());
        assert_eq!(by_id(json!(3)).expect("invalid")["error"]["code"], -32600);
    }
    // Only notifications: 202, no body.
    let out = rpc(
        &url,
        Some("2025-03-26"),
        &[],
        &json!([{"jsonrpc":"2.0","method":"notifications/initialized"}]),
    );
    assert_eq!(out.status, 202, "{}", out.body);
    // An empty batch is one invalid request.
    let out = raw(&url, Some("2025-03-26"), "[]");
    assert_eq!(out.status, 400);
    assert_eq!(out.json()["error"]["code"], -32600);
    // 2025-06-18 removed batching.
    for version in ["2025-06-18", "2025-11-25"] {
        let out = rpc(&url, Some(version), &[], &batch);
        assert_eq!(out.status, 400, "{version}: {}", out.body);
        let m = out.json();
        assert_eq!(m["error"]["code"], -32600, "{m}");
        assert!(
            m["error"]["message"].as_str().unwrap().contains(version),
            "{m}"
        );
    }
}
