//! DNS-rebinding protection and the 2024-11-05 lifecycle, against the real release binary
//! with curl as the client.
//!
//! The MCP spec (Streamable HTTP, "Security Warning") asks servers to validate `Origin` and
//! local servers to bind to localhost; the official conformance suite's
//! `dns-rebinding-protection` scenario POSTs `initialize` to a localhost URL twice: with
//! `Host: evil.example.com` + `Origin: http://evil.example.com` it wants a 4xx, with the URL's
//! own `Host` (`localhost:PORT`) + `Origin: http://localhost:PORT` a 2xx. The same checks
//! guard every route except the health probes and /metrics.
//!
//! On the 2024-11-05 HTTP+SSE transport a request before `initialize` gets a plain JSON-RPC
//! "not initialized" error, not one about the 2026 `_meta` fields.

use e2e::{bin, curl, free_port, workspace_copy, Backend, CurlOut};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const JSON: &str = "content-type: application/json";
const ACCEPT: &str = "accept: application/json, text/event-stream";
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"conformance-dns-rebinding-test","version":"1.0.0"}}}"#;

/// POST `initialize` to /mcp with extra headers, as the conformance scenario does.
fn initialize(b: &Backend, headers: &[&str]) -> CurlOut {
    let url = format!("{}/mcp", b.url);
    let mut args = vec![
        "-X",
        "POST",
        &url,
        "-H",
        JSON,
        "-H",
        ACCEPT,
        "--data-binary",
        INIT,
    ];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    curl(&args)
}

/// The envelope of a refusal: 403, FORBIDDEN, and the message and hint.
fn assert_forbidden(out: &CurlOut, message_has: &str, hint_has: &str) {
    assert_eq!(out.status, 403, "{}", out.body);
    let v = out.json();
    assert_eq!(v["apiVersion"], "1.0.0", "{v}");
    assert_eq!(v["error"]["code"], "FORBIDDEN", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(message_has), "message names it: {v}");
    let hint = v["error"]["hint"].as_str().unwrap_or("");
    assert!(hint.contains(hint_has), "hint: {v}");
    assert_eq!(v["requestId"].as_str(), out.header("x-request-id"), "{v}");
}

/// A successful `initialize`: 200 and a JSON-RPC result.
fn assert_initialized(out: &CurlOut) {
    assert_eq!(out.status, 200, "{}", out.body);
    let v = out.json();
    assert_eq!(v["id"], 1, "{v}");
    assert!(v["result"]["protocolVersion"].is_string(), "{v}");
}

#[test]
fn the_conformance_scenario_rebinding_refused_localhost_accepted() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);

    let out = initialize(
        &b,
        &["Host: evil.example.com", "Origin: http://evil.example.com"],
    );
    assert_forbidden(&out, "evil.example.com", "ALLOWED_HOSTS");

    let local = format!("localhost:{}", b.port);
    let out = initialize(
        &b,
        &[
            &format!("Host: {local}"),
            &format!("Origin: http://{local}"),
        ],
    );
    assert_initialized(&out);
    assert_eq!(
        out.header("access-control-allow-origin"),
        Some(format!("http://{local}").as_str())
    );
}

#[test]
fn loopback_origins_pass_while_allowed_origins_is_empty() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let port = b.port;
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
        "https://localhost".to_string(),
        "http://127.0.0.1:5173".to_string(),
    ] {
        let out = initialize(&b, &[&format!("Origin: {origin}")]);
        assert_initialized(&out);
        assert_eq!(
            out.header("access-control-allow-origin"),
            Some(origin.as_str()),
            "CORS for {origin}"
        );
    }
    for origin in [
        "http://evil.example.com",
        "http://localhost.evil.example.com",
        "null",
    ] {
        let out = initialize(&b, &[&format!("Origin: {origin}")]);
        assert_forbidden(&out, origin, "ALLOWED_ORIGINS");
    }
}

#[test]
fn a_listed_origin_set_is_exactly_that_set() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("ALLOWED_ORIGINS", "https://app.example.com")]);
    assert_initialized(&initialize(&b, &["Origin: https://app.example.com"]));
    let out = initialize(&b, &[&format!("Origin: http://localhost:{}", b.port)]);
    assert_forbidden(&out, "localhost", "ALLOWED_ORIGINS");
}

#[test]
fn a_foreign_host_is_refused_on_a_loopback_bind_on_every_route_but_the_probes() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let evil = "Host: evil.example.com";

    // Without an Origin too: the name alone is a rebinding page's.
    assert_forbidden(
        &initialize(&b, &[evil]),
        "evil.example.com",
        "ALLOWED_HOSTS",
    );
    let out = curl(&[&format!("{}/tools", b.url), "-H", evil]);
    assert_forbidden(&out, "evil.example.com", "ALLOWED_HOSTS");
    let out = curl(&[&format!("{}/sse", b.url), "-H", evil, "--max-time", "5"]);
    assert_forbidden(&out, "evil.example.com", "ALLOWED_HOSTS");
    // A name that only starts like a loopback address is not one.
    let out = curl(&[&format!("{}/tools", b.url), "-H", "Host: 127.0.0.1.nip.io"]);
    assert_forbidden(&out, "127.0.0.1.nip.io", "ALLOWED_HOSTS");

    // Loopback names, any port, are served.
    for host in [
        format!("127.0.0.1:{}", b.port),
        "localhost".to_string(),
        "[::1]:1234".to_string(),
    ] {
        let out = curl(&[&format!("{}/tools", b.url), "-H", &format!("Host: {host}")]);
        assert_eq!(out.status, 200, "Host: {host}: {}", out.body);
    }

    // Probes and metrics are called by address and stay open.
    for path in ["/healthz", "/readyz", "/health", "/health/live", "/metrics"] {
        let out = curl(&[&format!("{}{path}", b.url), "-H", evil]);
        assert_eq!(out.status, 200, "{path}: {}", out.body);
    }

    // A huge name is quoted only in part.
    let long = format!("{}.example.com", "a".repeat(4000));
    let out = curl(&[&format!("{}/tools", b.url), "-H", &format!("Host: {long}")]);
    assert_forbidden(&out, "bytes]", "ALLOWED_HOSTS");
    assert!(
        out.body.len() < 1000,
        "bounded envelope: {} bytes",
        out.body.len()
    );
}

#[test]
fn allowed_hosts_lets_listed_names_through() {
    let ws = workspace_copy();
    let b = Backend::start(
        ws.path(),
        &[("ALLOWED_HOSTS", "mcp.example.com, api.example.com:8443")],
    );
    let tools = format!("{}/tools", b.url);
    for ok in [
        "mcp.example.com",
        "MCP.example.com:9000",
        "api.example.com:8443",
    ] {
        let out = curl(&[&tools, "-H", &format!("Host: {ok}")]);
        assert_eq!(out.status, 200, "Host: {ok}: {}", out.body);
    }
    // A port in the entry pins it; the list replaces the loopback default.
    for refused in [
        "api.example.com",
        "api.example.com:443",
        "evil.example.com",
        "localhost",
    ] {
        let out = curl(&[&tools, "-H", &format!("Host: {refused}")]);
        assert_forbidden(&out, refused, "ALLOWED_HOSTS");
    }
    let out = initialize(
        &b,
        &["Host: mcp.example.com", "Origin: https://evil.example.com"],
    );
    assert_forbidden(&out, "evil.example.com", "ALLOWED_ORIGINS");
}

#[test]
fn allowed_hosts_star_allows_any() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("ALLOWED_HOSTS", "*")]);
    let out = initialize(&b, &["Host: evil.example.com"]);
    assert_initialized(&out);
}

#[test]
fn a_non_loopback_bind_accepts_any_host_by_default() {
    let ws = workspace_copy();
    // Listening on every address (a container behind the gateway), reached via 127.0.0.1.
    let b = Backend::start(ws.path(), &[("HOST", "0.0.0.0")]);
    let out = initialize(&b, &["Host: mcp.example.com"]);
    assert_initialized(&out);
    let out = curl(&[&format!("{}/tools", b.url), "-H", "Host: evil.example.com"]);
    assert_eq!(out.status, 200, "{}", out.body);
    // The Origin check still holds.
    let out = initialize(
        &b,
        &["Host: mcp.example.com", "Origin: http://evil.example.com"],
    );
    assert_forbidden(&out, "evil.example.com", "ALLOWED_ORIGINS");

    // ALLOWED_HOSTS narrows it there too.
    let b = Backend::start(
        ws.path(),
        &[("HOST", "0.0.0.0"), ("ALLOWED_HOSTS", "mcp.example.com")],
    );
    assert_initialized(&initialize(&b, &["Host: mcp.example.com"]));
    assert_forbidden(
        &initialize(&b, &["Host: evil.example.com"]),
        "evil.example.com",
        "ALLOWED_HOSTS",
    );
}

#[test]
fn a_malformed_allowed_hosts_entry_stops_start_up_with_exit_code_2() {
    let ws = workspace_copy();
    for bad in ["http://mcp.example.com", "mcp.example.com:http", "a b"] {
        let out = Command::new(bin("backend"))
            .env_clear()
            .env("PORT", free_port().to_string())
            .env("HOST", "127.0.0.1")
            .env("WORKING_DIRECTORY", ws.path())
            .env("ALLOWED_HOSTS", bad)
            .stdin(Stdio::null())
            .output()
            .expect("run backend");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("ALLOWED_HOSTS"), "{bad}: {stderr}");
    }
}

/// `curl -N` on an SSE stream, line by line; killed on drop.
struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Stream {
    fn open(url: &str) -> Stream {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run curl");
        let stdout = child.stdout.take().expect("curl stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream { child, lines }
    }

    /// The data of the next `event: NAME`.
    fn next_event(&self, name: &str) -> String {
        let mut in_event = false;
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no `event: {name}` within 10 s"));
            if line == format!("event: {name}") {
                in_event = true;
            } else if let Some(data) = line.strip_prefix("data: ").filter(|_| in_event) {
                return data.to_string();
            }
        }
    }

    fn next_message(&self) -> Value {
        let data = self.next_event("message");
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sse_transport_answers_a_request_before_initialize_with_not_initialized() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[]);
    let stream = Stream::open(&format!("{}/sse", b.url));
    let endpoint = stream.next_event("endpoint");
    assert!(endpoint.starts_with("/messages?sessionId="), "{endpoint}");
    let messages = format!("{}{endpoint}", b.url);
    let send = |body: &str| {
        let out = curl(&["-X", "POST", &messages, "-H", JSON, "--data-binary", body]);
        assert_eq!(out.status, 202, "{body}: {}", out.body);
    };

    send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    let m = stream.next_message();
    assert_eq!(m["id"], 1, "{m}");
    assert_eq!(m["error"]["code"], -32600, "{m}");
    assert_eq!(
        m["error"]["message"], "the session is not initialized: send initialize first",
        "{m}"
    );
    assert!(
        !m.to_string().contains("_meta"),
        "nothing about 2026 _meta: {m}"
    );

    // A stray notification does not end the session, ping is allowed, and the ordinary
    // 2024-11-05 lifecycle then works.
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    let m = stream.next_message();
    assert_eq!(m["id"], 2, "{m}");
    assert!(m["result"].is_object(), "{m}");
    send(
        r#"{"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"old-client","version":"1"}}}"#,
    );
    let m = stream.next_message();
    assert_eq!(m["id"], 3, "{m}");
    assert_eq!(m["result"]["protocolVersion"], "2024-11-05", "{m}");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
    let m = stream.next_message();
    assert_eq!(m["id"], 4, "{m}");
    assert!(
        m["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{m}"
    );
}
