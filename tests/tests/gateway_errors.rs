//! Responses the gateway makes itself, in the backend's JSON envelope with the request id:
//! 404 no route, 413 body too large, 502 no healthy backend, 504 upstream timeout; and the admin
//! listener's /readyz, /status and /metrics.

use std::time::Duration;

use e2e::free_port;
use e2e::gateway::{pool_toml, Gateway, Upstream};

fn assert_envelope(out: &e2e::CurlOut, status: u16, code: &str) {
    assert_eq!(out.status, status, "{out:?}");
    assert_eq!(out.header("content-type"), Some("application/json"));
    let v = out.json();
    assert_eq!(v["apiVersion"], "1.0.0");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let rid = out.header("x-request-id").expect("x-request-id");
    assert_eq!(v["requestId"], rid);
    assert!(v["timestamp"].as_str().is_some());
    assert_eq!(out.header("x-frame-options"), Some("DENY"));
}

#[test]
fn not_found_and_body_limit() {
    let up = Upstream::start("e");
    let body = format!(
        "{}\n[[routes]]\nname = \"mcp\"\npath = \"/echo\"\npool = \"p\"\nmax_body_size = \"1k\"\n",
        pool_toml("p", "least_conn", &[up.addr()], "")
    );
    let gw = Gateway::start(&body);
    let out = gw.curl_https("/nowhere", &["-H", "X-Request-ID: rid-404"]);
    assert_envelope(&out, 404, "NOT_FOUND");
    assert_eq!(out.json()["requestId"], "rid-404");

    let small = "x".repeat(1000);
    let ok = gw.curl_https("/echo", &["-X", "POST", "--data-binary", &small]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["body_len"], 1000);

    let big = "x".repeat(5000);
    for proto in ["--http1.1", "--http2"] {
        let out = gw.curl_https("/echo", &[proto, "-X", "POST", "--data-binary", &big]);
        assert_envelope(&out, 413, "PAYLOAD_TOO_LARGE");
        // Without Content-Length (chunked upload) the limit holds as the body streams in.
        let out = gw.curl_https(
            "/echo",
            &[
                proto,
                "-X",
                "POST",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &big,
            ],
        );
        assert_envelope(&out, 413, "PAYLOAD_TOO_LARGE");
    }
}

#[test]
fn no_healthy_backend_is_502_and_readyz_says_so() {
    // Nothing listens on these ports: the health check marks both down.
    let dead = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let body = format!(
        "{}[pools.p.health_check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\n",
        pool_toml("p", "least_conn", &dead, "")
    );
    let gw = Gateway::start(&body);
    gw.wait_status("pool unhealthy", Duration::from_secs(10), |st| {
        st["pools"][0]["healthy"] == false
    });
    let out = gw.curl_https("/anything", &[]);
    assert_envelope(&out, 502, "NO_HEALTHY_BACKEND");
    let ready = e2e::curl(&[&gw.admin("/readyz")]);
    assert_eq!(ready.status, 503);
    assert_eq!(e2e::curl(&[&gw.admin("/healthz")]).status, 200);
    let metrics = e2e::curl(&[&gw.admin("/metrics")]).body;
    assert!(
        metrics.contains(r#"gateway_backend_up{backend="#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gateway_requests_total{pool="p",route="all",status_class="5xx"} 1"#),
        "{metrics}"
    );
}

/// `/readyz` of a health-checked pool waits for a backend to pass a check: a replica that
/// accepts connections but never answers keeps the gateway unready from the start (before,
/// it was ready until `fall` checks had failed), while it still gets traffic like nginx's
/// servers do; an answering replica makes it ready within the first check round.
#[test]
fn readyz_of_a_checked_pool_waits_for_a_passed_check() {
    let stalled = Upstream::start_stall("st");
    let check = "[pools.p.health_check]\npath = \"/healthz\"\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 1\nfall = 3\n\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\n";
    let body = format!(
        "{}{check}",
        pool_toml("p", "least_conn", &[stalled.addr()], "max_fails = 0")
    );
    let gw = Gateway::start(&body);
    for _ in 0..3 {
        let ready = e2e::curl(&[&gw.admin("/readyz")]);
        assert_eq!(ready.status, 503, "{ready:?}");
        assert_eq!(ready.json()["status"], "not ready");
        // The stalled replica is still in the pool: its checks have not reached `fall`.
        let st = gw.status();
        assert_eq!(st["pools"][0]["healthy"], true, "{st}");
        assert_eq!(st["ready"], false, "{st}");
        std::thread::sleep(Duration::from_millis(500));
    }

    let up = Upstream::start("a");
    let body = format!("{}{check}", pool_toml("p", "least_conn", &[up.addr()], ""));
    let gw = Gateway::start(&body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while e2e::curl(&[&gw.admin("/readyz")]).status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "a pool whose replica answers its check is not ready after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.status()["ready"], true);
}

#[test]
fn dead_backend_without_checks_is_502_and_stalled_one_is_504() {
    let dead = format!("127.0.0.1:{}", free_port());
    let stalled = Upstream::start_stall("st");
    let body = format!(
        "{}{}\n[[routes]]\nname = \"dead\"\npath = \"/dead\"\npool = \"d\"\n\n[[routes]]\nname = \"slow\"\npath = \"/slow\"\npool = \"s\"\nread_timeout = \"1s\"\n",
        pool_toml("d", "least_conn", &[dead], "max_fails = 0"),
        pool_toml("s", "least_conn", &[stalled.addr()], "max_fails = 0"),
    );
    let gw = Gateway::start(&body);
    assert_envelope(&gw.curl_https("/dead", &[]), 502, "BAD_GATEWAY");
    assert_envelope(&gw.curl_https("/slow", &[]), 504, "GATEWAY_TIMEOUT");
}

#[test]
fn admin_status_and_metrics_describe_pools() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let body = format!(
        "[pools.p]\nservers = [{{ address = \"{}\", weight = 3 }}, \"{}\"]\n\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\n",
        a.addr(),
        b.addr()
    );
    let gw = Gateway::start(&body);
    assert_eq!(gw.curl_https("/whoami", &[]).status, 200);
    assert_eq!(e2e::curl(&[&gw.admin("/readyz")]).status, 200);
    let st = gw.status();
    assert_eq!(st["ready"], true);
    assert_eq!(st["generation"], 1);
    let backends = st["pools"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let wa = backends.iter().find(|x| x["address"] == a.addr()).unwrap();
    assert_eq!(wa["weight"], 3);
    assert_eq!(wa["up"], true);
    assert_eq!(wa["in_flight"], 0);
    assert_eq!(st["pools"][0]["balance"], "least_conn");
    let metrics = e2e::curl(&[&gw.admin("/metrics")]).body;
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_connect_seconds_bucket",
        "gateway_upstream_header_seconds_bucket",
        "gateway_upstream_response_seconds_bucket",
        "gateway_backend_in_flight",
        "gateway_backend_up",
        "gateway_config_generation 1",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}
