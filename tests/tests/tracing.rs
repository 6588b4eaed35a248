//! Distributed tracing across both tiers (W3C Trace Context, OTLP/HTTP JSON), against a small
//! OTLP receiver in the test (`e2e::otlp`): the gateway continues or starts the trace, sends
//! `traceparent` upstream with its own span as the parent and logs the trace id; the backend's
//! request span is the gateway span's child and each tool call's span the request span's
//! child; an invalid `traceparent` is replaced, never forwarded; with export off nothing is
//! sent but the header still travels.

use std::time::Duration;

use e2e::gateway::{pool_toml, Gateway, GatewaySetup, Upstream};
use e2e::otlp::{OtlpReceiver, RecordedSpan};
use e2e::{workspace_copy, Backend, CurlOut};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A random-enough id in hex (the test's own, not the code under test's).
fn hex_id(bytes: usize) -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut out = String::new();
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (std::process::id() as u64) << 32
        ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while out.len() < bytes * 2 {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(bytes * 2);
    out
}

fn routes(backend_port: u16, echo_port: u16) -> String {
    format!(
        "{}{}\n[[routes]]\nname = \"mcp\"\npath = \"/mcp\"\npool = \"p\"\nmcp = true\nstream = true\n\n\
         [[routes]]\nname = \"echo\"\npath = \"/echo\"\npool = \"echo\"\n",
        pool_toml("p", "least_conn", &[format!("127.0.0.1:{backend_port}")], ""),
        pool_toml("echo", "round_robin", &[format!("127.0.0.1:{echo_port}")], ""),
    )
}

fn tool_call(gw: &Gateway, headers: &[String], tool: &str, args: Value) -> CurlOut {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}})
    .to_string();
    let mut args: Vec<&str> = Vec::new();
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    let out = gw.mcp_post(&args, &body);
    assert_eq!(out.status, 200, "{}", out.body);
    out
}

/// What the echo upstream received, through the gateway.
fn echo(gw: &Gateway, headers: &[String]) -> Value {
    let mut args: Vec<&str> = Vec::new();
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    let out = gw.curl_https("/echo", &args);
    assert_eq!(out.status, 200, "{}", out.body);
    out.json()["headers"].clone()
}

/// The gateway's access-log line of the request with this X-Request-ID.
fn access_line(gw: &Gateway, request_id: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = gw
            .setup
            .access_log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == request_id);
        if let Some(v) = found {
            return v;
        }
        if std::time::Instant::now() > deadline {
            gw.proc
                .fail(&format!("no access-log line for request {request_id}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn by_service<'a>(spans: &'a [RecordedSpan], service: &str, kind: i64) -> &'a RecordedSpan {
    let found: Vec<&RecordedSpan> = spans
        .iter()
        .filter(|s| s.service == service && s.kind() == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {service} span of kind {kind}: {spans:#?}"
    );
    found[0]
}

struct Stack {
    receiver: OtlpReceiver,
    backend: Backend,
    gw: Gateway,
    _echo: Upstream,
    _ws: tempfile::TempDir,
}

/// Gateway exporting as `edge-test`, backend with OTEL_ENABLED as `task-mcp-http`, both to one
/// receiver.
fn traced_stack() -> Stack {
    let receiver = OtlpReceiver::start();
    let ws = workspace_copy();
    let endpoint = receiver.endpoint();
    let backend = Backend::start(
        ws.path(),
        &[
            ("OTEL_ENABLED", "true"),
            ("OTEL_SERVICE_NAME", "task-mcp-http"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
        ],
    );
    let echo = Upstream::start("echo");
    let body = format!(
        "{}\n[tracing]\notlp_traces_endpoint = \"{endpoint}\"\nservice_name = \"edge-test\"\n",
        routes(backend.port, echo.port)
    );
    let gw = Gateway::start(&body);
    Stack {
        receiver,
        backend,
        gw,
        _echo: echo,
        _ws: ws,
    }
}

#[test]
fn a_client_trace_runs_through_gateway_backend_and_tool_call() {
    let s = traced_stack();
    let trace = hex_id(16);
    let client_span = hex_id(8);
    let headers = [
        format!("traceparent: 00-{trace}-{client_span}-01"),
        "tracestate: vendor=abc".to_string(),
        "x-request-id: traced-1".to_string(),
    ];
    let out = tool_call(&s.gw, &headers, "change.list", json!({}));
    assert_eq!(out.json()["result"]["isError"], false, "{}", out.body);

    let spans = s.receiver.wait_trace(&trace, 3, WAIT);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let gateway = by_service(&spans, "edge-test", 2);
    let request = by_service(&spans, "task-mcp-http", 2);
    let tool = by_service(&spans, "task-mcp-http", 1);

    // The links: client → gateway → backend request → tool call.
    assert_eq!(gateway.parent(), Some(client_span.as_str()));
    assert_eq!(request.parent(), Some(gateway.span_id()));
    assert_eq!(tool.parent(), Some(request.span_id()));
    let ids = [gateway.span_id(), request.span_id(), tool.span_id()];
    for id in ids {
        assert_eq!(id.len(), 16, "{id}");
        assert_ne!(id, client_span);
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    // The parents came from other processes (SpanFlags: has-is-remote, is-remote, sampled).
    assert_eq!(gateway.span["flags"], 0x301);
    assert_eq!(request.span["flags"], 0x301);
    assert_eq!(tool.span["flags"], 0x101);

    // What each span says.
    assert_eq!(gateway.name(), "POST mcp");
    assert_eq!(gateway.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        gateway.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(gateway.attr("http.route").as_deref(), Some("mcp"));
    assert_eq!(
        gateway.attr("mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(
        gateway.attr("gen_ai.tool.name").as_deref(),
        Some("change.list")
    );
    assert_eq!(request.name(), "POST /mcp");
    assert_eq!(request.attr("url.path").as_deref(), Some("/mcp"));
    assert_eq!(request.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        request.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        request.attr("mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(tool.name(), "tools/call change.list");
    assert_eq!(
        tool.attr("gen_ai.tool.name").as_deref(),
        Some("change.list")
    );
    assert_eq!(tool.attr("tool.outcome").as_deref(), Some("ok"));
    assert_eq!(tool.attr("error").as_deref(), Some("false"));
    for sp in [gateway, request, tool] {
        assert_eq!(sp.status_code(), 0, "{sp:#?}");
        let start: u64 = sp.span["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let end: u64 = sp.span["endTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(start > 1_600_000_000_000_000_000 && end >= start, "{sp:#?}");
    }
    // Children sit inside their parents' time.
    let t = |sp: &RecordedSpan, k: &str| -> u64 { sp.span[k].as_str().unwrap().parse().unwrap() };
    assert!(t(tool, "startTimeUnixNano") >= t(request, "startTimeUnixNano"));
    assert!(t(tool, "endTimeUnixNano") <= t(request, "endTimeUnixNano"));

    // OTLP/HTTP JSON, as a collector expects it.
    for e in s.receiver.exports() {
        assert_eq!(e.path, "/v1/traces");
        assert_eq!(e.content_type, "application/json");
    }

    // Both access logs carry the trace id.
    assert_eq!(access_line(&s.gw, "traced-1")["trace_id"], trace.as_str());
    let backend_line = s
        .backend
        .proc
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["requestId"] == "traced-1")
        .expect("backend access line");
    assert_eq!(backend_line["traceId"], trace.as_str());

    // Counted on both tiers.
    let gw_metrics = e2e::curl(&[&s.gw.admin("/metrics")]).body;
    assert!(
        gw_metrics
            .lines()
            .any(|l| l.starts_with("gateway_trace_spans_exported_total ") && !l.ends_with(" 0")),
        "{gw_metrics}"
    );
    let b_metrics = e2e::curl(&[&format!("{}/metrics", s.backend.url)]).body;
    assert!(
        b_metrics
            .lines()
            .any(|l| l.starts_with("trace_spans_exported_total ") && !l.ends_with(" 0")),
        "{b_metrics}"
    );
}

#[test]
fn missing_or_invalid_traceparent_starts_a_new_trace() {
    let s = traced_stack();
    let bad = format!("00-{}-{}-01", hex_id(16).to_uppercase(), hex_id(8));
    let cases = [
        ("untraced-1", None),
        ("invalid-1", Some(bad.clone())),
        (
            "invalid-2",
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()),
        ),
    ];
    for (rid, tp) in &cases {
        let mut headers = vec![
            format!("x-request-id: {rid}"),
            "tracestate: k=v".to_string(),
        ];
        if let Some(tp) = tp {
            headers.push(format!("traceparent: {tp}"));
        }
        tool_call(&s.gw, &headers, "change.list", json!({}));
        let line = access_line(&s.gw, rid);
        let trace = line["trace_id"].as_str().expect("trace_id").to_string();
        assert_eq!(trace.len(), 32, "{line}");
        assert!(trace
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        if let Some(tp) = tp {
            assert!(!tp.to_lowercase().contains(&trace), "{rid}: kept {tp}");
        }
        let spans = s.receiver.wait_trace(&trace, 3, WAIT);
        let gateway = by_service(&spans, "edge-test", 2);
        let request = by_service(&spans, "task-mcp-http", 2);
        let tool = by_service(&spans, "task-mcp-http", 1);
        assert_eq!(gateway.parent(), None, "{rid}: a root span");
        assert_eq!(gateway.span["flags"], 0x101);
        assert_eq!(request.parent(), Some(gateway.span_id()), "{rid}");
        assert_eq!(tool.parent(), Some(request.span_id()), "{rid}");
    }

    // An unsampled trace (flags 00) is continued but not recorded by either tier.
    let quiet = hex_id(16);
    let seen_before = s.receiver.spans().len();
    tool_call(
        &s.gw,
        &[format!("traceparent: 00-{quiet}-{}-00", hex_id(8))],
        "change.list",
        json!({}),
    );
    // A sampled request after it: once its spans are in, the quiet one's would be too.
    let marker = hex_id(16);
    tool_call(
        &s.gw,
        &[format!("traceparent: 00-{marker}-{}-01", hex_id(8))],
        "change.list",
        json!({}),
    );
    s.receiver.wait_trace(&marker, 3, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        s.receiver.trace(&quiet).is_empty(),
        "unsampled trace recorded"
    );
    assert!(s.receiver.spans().len() >= seen_before + 3);
}

#[test]
fn a_failing_tool_call_marks_its_span_error() {
    let s = traced_stack();
    let trace = hex_id(16);
    let out = tool_call(
        &s.gw,
        &[format!("traceparent: 00-{trace}-{}-01", hex_id(8))],
        "change.open",
        json!({"slug": "Not A Slug!"}),
    );
    assert_eq!(out.json()["result"]["isError"], true, "{}", out.body);
    let spans = s.receiver.wait_trace(&trace, 3, WAIT);
    let request = by_service(&spans, "task-mcp-http", 2);
    let tool = by_service(&spans, "task-mcp-http", 1);
    assert_eq!(tool.parent(), Some(request.span_id()));
    assert_eq!(tool.name(), "tools/call change.open");
    assert_eq!(tool.status_code(), 2, "{tool:#?}");
    assert!(
        tool.span["status"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{tool:#?}"
    );
    assert_eq!(tool.attr("error").as_deref(), Some("true"));
    assert_eq!(tool.attr("error.type").as_deref(), Some("INVALID_INPUT"));
    assert_eq!(tool.attr("tool.outcome").as_deref(), Some("invalid_input"));
    // The HTTP exchange itself succeeded (the error is in the MCP result).
    assert_eq!(request.status_code(), 0);
    assert_eq!(by_service(&spans, "edge-test", 2).status_code(), 0);

    // Directly on the backend (no gateway): the Task API's call, its span under the caller's.
    let trace = hex_id(16);
    let parent = hex_id(8);
    let out = e2e::curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", s.backend.url),
        "-H",
        "content-type: application/json",
        "-H",
        &format!("traceparent: 00-{trace}-{parent}-01"),
        "--data-binary",
        r#"{"tool":"change.open","args":{"slug":"no-such-change"}}"#,
    ]);
    assert_eq!(out.status, 404, "{}", out.body);
    let spans = s.receiver.wait_trace(&trace, 2, WAIT);
    let request = by_service(&spans, "task-mcp-http", 2);
    let tool = by_service(&spans, "task-mcp-http", 1);
    assert_eq!(request.parent(), Some(parent.as_str()));
    assert_eq!(request.attr("url.path").as_deref(), Some("/tools/execute"));
    assert_eq!(
        request.attr("http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(tool.parent(), Some(request.span_id()));
    assert_eq!(tool.status_code(), 2);
    assert_eq!(tool.attr("error.type").as_deref(), Some("NOT_FOUND"));
}

#[test]
fn without_export_nothing_is_sent_and_traceparent_still_propagates() {
    // Export off on both tiers, with an endpoint the backend would use if it were on.
    let receiver = OtlpReceiver::start();
    let ws = workspace_copy();
    let endpoint = receiver.endpoint();
    let backend = Backend::start(
        ws.path(),
        &[
            ("OTEL_ENABLED", "false"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
        ],
    );
    let upstream = Upstream::start("echo");
    let gw = Gateway::start_setup(GatewaySetup::new(&routes(backend.port, upstream.port), ""));

    // A valid traceparent: same trace, the gateway's span as the parent, tracestate unchanged.
    let trace = hex_id(16);
    let client_span = hex_id(8);
    let seen = echo(
        &gw,
        &[
            format!("traceparent: 00-{trace}-{client_span}-01"),
            "tracestate: rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into(),
            "x-request-id: echo-1".into(),
        ],
    );
    let tp = seen["traceparent"].as_str().expect("traceparent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace.as_str(), "01"),
        "{tp}"
    );
    assert_eq!(parts[2].len(), 16);
    assert_ne!(
        parts[2], client_span,
        "the gateway's own span is the parent"
    );
    assert_eq!(
        seen["tracestate"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "{seen}"
    );
    assert_eq!(access_line(&gw, "echo-1")["trace_id"], trace.as_str());

    // Unsampled stays unsampled.
    let seen = echo(&gw, &[format!("traceparent: 00-{trace}-{client_span}-00")]);
    assert!(
        seen["traceparent"].as_str().unwrap().ends_with("-00"),
        "{seen}"
    );

    // Invalid ones are replaced by a new trace, and their tracestate is dropped.
    for bad in [
        "00-zz-00f067aa0ba902b7-01".to_string(),
        format!("ff-{trace}-{client_span}-01"),
        format!("00-{trace}-0000000000000000-01"),
        format!("00-{trace}-{client_span}-01-more"),
    ] {
        let seen = echo(
            &gw,
            &[
                format!("traceparent: {bad}"),
                "tracestate: k=v".into(),
                "x-request-id: bad-echo".into(),
            ],
        );
        let tp = seen["traceparent"].as_str().expect("traceparent upstream");
        assert_ne!(tp, bad);
        assert!(!tp.contains(&trace), "{bad} → {tp}");
        let p: Vec<&str> = tp.split('-').collect();
        assert!(
            p.len() == 4 && p[0] == "00" && p[1].len() == 32 && p[2].len() == 16 && p[3] == "01",
            "{tp}"
        );
        assert!(seen.get("tracestate").is_none(), "{bad}: {seen}");
    }

    // None: one is started.
    let seen = echo(&gw, &["x-request-id: echo-none".into()]);
    let tp = seen["traceparent"].as_str().expect("traceparent upstream");
    let logged = access_line(&gw, "echo-none")["trace_id"].clone();
    assert_eq!(tp.split('-').nth(1), logged.as_str(), "{tp}");

    // The backend gets it too and logs its trace id; no span goes anywhere.
    let trace = hex_id(16);
    tool_call(
        &gw,
        &[
            format!("traceparent: 00-{trace}-{client_span}-01"),
            "x-request-id: untraced-call".into(),
        ],
        "change.list",
        json!({}),
    );
    let deadline = std::time::Instant::now() + WAIT;
    let line = loop {
        let found = backend
            .proc
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["requestId"] == "untraced-call");
        if let Some(v) = found {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backend access line"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(line["traceId"], trace.as_str());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        receiver.exports().is_empty(),
        "spans sent with export off: {:#?}",
        receiver.spans()
    );
    let gw_metrics = e2e::curl(&[&gw.admin("/metrics")]).body;
    assert!(gw_metrics.contains("gateway_trace_spans_exported_total 0"));
}
