//! The backend's HTTP surface against the real release binary, with curl as the client:
//! the user's Task MCP API (POST /sse, NDJSON on POST /mcp, /tools), the error envelope and
//! its codes, auth, Origin/CORS, limits, request ids, health probes and metrics.

use e2e::{curl, workspace_copy, Backend, CurlOut};
use serde_json::Value;

const JSON: &str = "content-type: application/json";

fn post(url: &str, body: &str, extra: &[&str]) -> CurlOut {
    let mut args = vec!["-X", "POST", url, "-H", JSON, "--data-binary", body];
    args.extend_from_slice(extra);
    curl(&args)
}

/// The envelope's shape, and its code.
fn assert_envelope(out: &CurlOut, status: u16, code: &str) -> Value {
    assert_eq!(out.status, status, "status for {code}: {}", out.body);
    let v = out.json();
    assert_eq!(v["apiVersion"], "1.0.0", "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(v["error"].get("hint").is_some(), "hint key present: {v}");
    let rid = v["requestId"].as_str().expect("requestId");
    assert_eq!(
        Some(rid),
        out.header("x-request-id"),
        "envelope and header carry one id"
    );
    let ts = v["timestamp"].as_str().expect("timestamp");
    assert!(
        ts.ends_with('Z') && ts.len() == 24,
        "RFC 3339 with ms and Z: {ts}"
    );
    v
}

/// SSE `event:`/`data:` pairs of a body.
fn sse_events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_string());
                }
            }
            Some((event?, data?))
        })
        .collect()
}

#[test]
fn post_sse_answers_a_result_event() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let out = post(
        &format!("{}/sse", b.url),
        r#"{"tool":"change.open","input":{"slug":"add-two-factor-auth"}}"#,
        &["-N"],
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let events = sse_events(&out.body);
    let (name, data) = events.last().expect("at least one event");
    assert_eq!(name, "result", "{}", out.body);
    let v: Value = serde_json::from_str(data).expect("result data is JSON");
    assert_eq!(v["apiVersion"], "1.0.0");
    assert_eq!(v["tool"], "change.open");
    assert_eq!(v["result"]["slug"], "add-two-factor-auth", "{v}");
}

#[test]
fn post_sse_reports_progress_then_result_and_errors_as_error_event() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let out = post(
        &format!("{}/sse", b.url),
        r#"{"tool":"change.archive","input":{"slug":"add-webhooks"}}"#,
        &["-N"],
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let events = sse_events(&out.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.iter().filter(|n| **n == "progress").count() >= 1,
        "progress events: {names:?}"
    );
    assert_eq!(names.last(), Some(&"result"), "{names:?}");
    assert!(
        names[..names.len() - 1].iter().all(|n| *n == "progress"),
        "{names:?}"
    );
    let progress: Value = serde_json::from_str(&events[0].1).unwrap();
    assert!(progress["progress"].is_number(), "{progress}");

    // The same change again: it is archived now, so the stream carries an error event.
    let out = post(
        &format!("{}/sse", b.url),
        r#"{"tool":"change.open","input":{"slug":"add-webhooks"}}"#,
        &["-N"],
    );
    let events = sse_events(&out.body);
    let (name, data) = events.last().expect("an event");
    assert_eq!(name, "error", "{}", out.body);
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["apiVersion"], "1.0.0");
    assert_eq!(v["error"]["code"], "NOT_FOUND", "{v}");
    assert!(
        v["requestId"].is_string() && v["timestamp"].is_string(),
        "{v}"
    );
}

#[test]
fn post_mcp_task_form_answers_ndjson() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let out = post(
        &format!("{}/mcp", b.url),
        r#"{"tool":"change.list","input":{}}"#,
        &["-N"],
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/x-ndjson"));
    let lines: Vec<Value> = out
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(types, ["start", "result", "end"], "{}", out.body);
    assert!(lines[0]["ts"].is_i64() && lines[2]["ts"].is_i64());
    let slugs: Vec<&str> = lines[1]["result"]["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["slug"].as_str())
        .collect();
    assert!(slugs.contains(&"add-two-factor-auth"), "{slugs:?}");

    // A tool error inside the stream: an error line, then end.
    let out = post(
        &format!("{}/mcp", b.url),
        r#"{"tool":"task.list","input":{"slug":"no-such-change"}}"#,
        &["-N"],
    );
    let lines: Vec<Value> = out
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(types, ["start", "error", "end"], "{}", out.body);
    assert_eq!(lines[1]["error"]["code"], "NOT_FOUND");
}

#[test]
fn tools_listing_and_execute() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let out = curl(&[&format!("{}/tools", b.url)]);
    assert_eq!(out.status, 200);
    let v = out.json();
    let tools = v["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for n in [
        "change.list",
        "change.open",
        "change.archive",
        "task.list",
        "task.update",
        "spec.list",
        "spec.open",
    ] {
        assert!(names.contains(&n), "{n} listed: {names:?}");
    }
    assert!(
        tools.iter().all(|t| t["inputSchema"]["type"] == "object"),
        "{v}"
    );

    let out = post(
        &format!("{}/tools/execute", b.url),
        r#"{"tool":"spec.open","args":{"capability":"auth"}}"#,
        &[],
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let v = out.json();
    assert_eq!(v["tool"], "spec.open");
    assert!(v["result"].is_object(), "{v}");
}

#[test]
fn envelope_codes() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("MAX_REQUEST_SIZE_KB", "1")]);
    let exec = format!("{}/tools/execute", b.url);

    let out = post(&exec, r#"{"tool":"nope","args":{}}"#, &[]);
    assert_envelope(&out, 404, "UNKNOWN_TOOL");

    let out = post(&exec, r#"{"tool":"change.open","args":{"slug":42}}"#, &[]);
    let v = assert_envelope(&out, 400, "INVALID_INPUT");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("slug"),
        "names the field: {v}"
    );

    let out = post(&exec, r#"{"tool":"change.open","args":{}}"#, &[]);
    let v = assert_envelope(&out, 400, "INVALID_INPUT");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("slug"),
        "names the field: {v}"
    );

    let out = post(&exec, r#"{"args":{}}"#, &[]);
    let v = assert_envelope(&out, 400, "INVALID_INPUT");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("tool"),
        "{v}"
    );

    let out = post(&exec, r#"{"tool": "change.open", "#, &[]);
    assert_envelope(&out, 400, "BAD_REQUEST");

    let out = post(
        &exec,
        r#"{"tool":"change.open","args":{"slug":"no-such-change"}}"#,
        &[],
    );
    assert_envelope(&out, 404, "NOT_FOUND");

    let out = post(
        &exec,
        r#"{"tool":"change.archive","args":{"slug":"add-task-due-dates"}}"#,
        &[],
    );
    assert_envelope(&out, 409, "CONFLICT");

    let big = format!(
        r#"{{"tool":"change.list","args":{{"pad":"{}"}}}}"#,
        "x".repeat(4096)
    );
    let out = post(&exec, &big, &[]);
    assert_envelope(&out, 413, "PAYLOAD_TOO_LARGE");
    let out = post(&format!("{}/mcp", b.url), &big, &[]);
    assert_envelope(&out, 413, "PAYLOAD_TOO_LARGE");

    let out = curl(&[&format!("{}/no/such/route", b.url)]);
    assert_envelope(&out, 404, "NOT_FOUND");

    let out = curl(&[&format!("{}/mcp", b.url)]);
    assert_envelope(&out, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(out.header("allow"), Some("POST"));

    let out = curl(&["-X", "PUT", &format!("{}/tools", b.url)]);
    assert_envelope(&out, 405, "METHOD_NOT_ALLOWED");

    // JSON-RPC without the Accept header Streamable HTTP requires: still the envelope.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let out = post(
        &format!("{}/mcp", b.url),
        ping,
        &["-H", "accept: text/plain"],
    );
    let v = assert_envelope(&out, 406, "BAD_REQUEST");
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("text/event-stream"),
        "{v}"
    );
}

#[test]
fn response_size_limit_is_an_error_not_a_truncation() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("MAX_RESPONSE_SIZE_KB", "1")]);
    let out = post(
        &format!("{}/tools/execute", b.url),
        r#"{"tool":"change.open","args":{"slug":"add-two-factor-auth"}}"#,
        &[],
    );
    let v = assert_envelope(&out, 422, "RESPONSE_TOO_LARGE");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("1024"),
        "names the limit: {v}"
    );
}

#[test]
fn auth_with_bearer_tokens() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("AUTH_TOKENS", "tok-one, tok-two")]);
    let tools = format!("{}/tools", b.url);

    let out = curl(&[&tools]);
    assert_envelope(&out, 401, "UNAUTHORIZED");
    assert!(
        out.header("www-authenticate")
            .unwrap_or("")
            .starts_with("Bearer"),
        "{:?}",
        out.headers
    );

    let out = curl(&[&tools, "-H", "Authorization: Bearer wrong"]);
    assert_envelope(&out, 401, "UNAUTHORIZED");
    assert!(out
        .header("www-authenticate")
        .unwrap_or("")
        .contains("invalid_token"));

    let out = curl(&[&tools, "-H", "Authorization: Bearer tok-two"]);
    assert_eq!(out.status, 200, "{}", out.body);

    // Probes and metrics stay open.
    for path in [
        "/healthz",
        "/readyz",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/security/metrics",
    ] {
        let out = curl(&[&format!("{}{path}", b.url)]);
        assert_eq!(out.status, 200, "{path} without a token: {}", out.body);
    }
}

#[test]
fn rate_limit_per_token_with_retry_after() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("RATE_LIMIT", "3"), ("AUTH_TOKENS", "a,b")]);
    let tools = format!("{}/tools", b.url);
    for i in 0..3 {
        let out = curl(&[&tools, "-H", "Authorization: Bearer a"]);
        assert_eq!(out.status, 200, "request {i} within the limit");
    }
    let out = curl(&[&tools, "-H", "Authorization: Bearer a"]);
    assert_envelope(&out, 429, "RATE_LIMITED");
    let retry: u64 = out
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&retry), "retry after {retry}");
    // Another token has its own allowance; probes are not limited.
    assert_eq!(curl(&[&tools, "-H", "Authorization: Bearer b"]).status, 200);
    assert_eq!(curl(&[&format!("{}/healthz", b.url)]).status, 200);
}

#[test]
fn rate_limit_per_client_ip_behind_a_proxy_when_auth_is_off() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("RATE_LIMIT", "2")]);
    let tools = format!("{}/tools", b.url);
    // The peer is loopback (a proxy such as the gateway): its X-Real-IP names the client.
    for _ in 0..2 {
        assert_eq!(curl(&[&tools, "-H", "X-Real-IP: 203.0.113.7"]).status, 200);
    }
    let out = curl(&[&tools, "-H", "X-Real-IP: 203.0.113.7"]);
    assert_envelope(&out, 429, "RATE_LIMITED");
    assert_eq!(
        curl(&[&tools, "-H", "X-Real-IP: 203.0.113.8"]).status,
        200,
        "another client"
    );
    assert_eq!(
        curl(&[&tools, "-H", "X-Forwarded-For: 203.0.113.7, 198.51.100.1"]).status,
        200,
        "the proxy-appended (last) X-Forwarded-For entry is the client"
    );
}

#[test]
fn origin_check_and_cors() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("ALLOWED_ORIGINS", "https://app.example.com")]);
    let mcp = format!("{}/mcp", b.url);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let accept = "accept: application/json, text/event-stream";

    let out = post(
        &mcp,
        init,
        &["-H", accept, "-H", "Origin: https://evil.example.com"],
    );
    assert_envelope(&out, 403, "FORBIDDEN");

    let out = post(
        &mcp,
        init,
        &["-H", accept, "-H", "Origin: https://app.example.com"],
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(
        out.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let expose = out
        .header("access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in ["mcp-session-id", "mcp-protocol-version", "x-request-id"] {
        assert!(expose.contains(h), "exposes {h}: {expose}");
    }

    // No Origin: a non-browser client, allowed.
    let out = post(&mcp, init, &["-H", accept]);
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.header("access-control-allow-origin").is_none());

    // Preflight.
    let out = curl(&[
        "-X",
        "OPTIONS",
        &mcp,
        "-H",
        "Origin: https://app.example.com",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: authorization, content-type, mcp-protocol-version",
    ]);
    assert_eq!(out.status, 204, "{}", out.body);
    assert_eq!(
        out.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(out
        .header("access-control-allow-methods")
        .unwrap_or("")
        .contains("POST"));
    assert!(out
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase()
        .contains("authorization"));
    let out = curl(&[
        "-X",
        "OPTIONS",
        &mcp,
        "-H",
        "Origin: https://evil.example.com",
        "-H",
        "Access-Control-Request-Method: POST",
    ]);
    assert_envelope(&out, 403, "FORBIDDEN");
}

#[test]
fn request_id_is_honoured_or_generated() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let url = format!("{}/nope", b.url);
    let out = curl(&[&url, "-H", "X-Request-ID: trace-abc.123_x"]);
    assert_eq!(out.header("x-request-id"), Some("trace-abc.123_x"));
    assert_eq!(out.json()["requestId"], "trace-abc.123_x");

    let out = curl(&[&url, "-H", "X-Request-ID: bad id with spaces"]);
    let id = out.header("x-request-id").expect("generated id");
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let out = curl(&[&format!("{}/healthz", b.url)]);
    assert!(out.header("x-request-id").is_some());
    // The access log line carries it.
    let out = curl(&[&url, "-H", "X-Request-ID: find-me-in-the-log"]);
    assert_eq!(out.status, 404);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = b.proc.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"find-me-in-the-log\""))
        .unwrap_or_else(|| panic!("access log line with the id:\n{log}"));
    let v: Value = serde_json::from_str(line).expect("access log is JSON");
    assert_eq!(v["status"], 404);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/nope");
    assert!(v["duration_ms"].is_number() && v["bytes"].is_number() && v["ts"].is_string());
}

#[test]
fn health_probes() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    for path in ["/healthz", "/health/live", "/readyz", "/health/ready"] {
        let out = curl(&[&format!("{}{path}", b.url)]);
        assert_eq!(out.status, 200, "{path}");
    }
    let v = curl(&[&format!("{}/health", b.url)]).json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["service"], "task-mcp-backend");
    assert_eq!(v["transport"], "http");
    assert_eq!(v["capabilities"]["mcp"], true);

    // The workspace becomes unreadable: not ready, but still alive.
    let openspec = ws.path().join("openspec");
    let moved = ws.path().join("moved-away");
    std::fs::rename(&openspec, &moved).unwrap();
    let out = curl(&[&format!("{}/readyz", b.url)]);
    assert_eq!(out.status, 503, "{}", out.body);
    assert_eq!(curl(&[&format!("{}/health/ready", b.url)]).status, 503);
    assert_eq!(curl(&[&format!("{}/healthz", b.url)]).status, 200);
    std::fs::rename(&moved, &openspec).unwrap();
    assert_eq!(curl(&[&format!("{}/readyz", b.url)]).status, 200);
}

#[test]
fn metrics_use_the_seed_names_with_route_patterns() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    post(
        &format!("{}/tools/execute", b.url),
        r#"{"tool":"change.open","args":{"slug":"add-two-factor-auth"}}"#,
        &[],
    );
    post(
        &format!("{}/sse", b.url),
        r#"{"tool":"change.list","input":{}}"#,
        &["-N"],
    );
    curl(&[&format!("{}/some/random/path/12345", b.url)]);
    let out = curl(&[&format!("{}/metrics", b.url)]);
    assert_eq!(out.status, 200);
    let content_type = out.header("content-type").map(str::to_string);
    let text = out.body;
    for name in [
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "http_server_active_requests",
        "tool_executions_total",
        "tool_execution_duration_seconds_bucket",
        "tool_active_executions",
        "streaming_active_connections",
        "streaming_messages_total",
        "streaming_bytes_transferred_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} in /metrics");
    }
    assert!(
        text.contains(r#"tool_executions_total{outcome="ok",tool="change.open"} 1"#),
        "tool counter: {}",
        text.lines()
            .filter(|l| l.starts_with("tool_executions_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The same exposition where the user's compose file scrapes it: the same metric families.
    let families = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let security = curl(&[&format!("{}/security/metrics", b.url)]);
    assert_eq!(security.status, 200);
    assert_eq!(security.header("content-type"), content_type.as_deref());
    assert_eq!(families(&security.body), families(&text));
    assert!(text.contains(r#"route="/tools/execute""#));
    assert!(text.contains(r#"route="unmatched""#));
    assert!(!text.contains("12345"), "raw paths never become labels");
}
