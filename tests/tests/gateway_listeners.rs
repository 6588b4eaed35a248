//! The listeners as a client sees them: HTTP → 301 to HTTPS keeping path and query (with exempt
//! prefixes proxied), TLS 1.2/1.3 only with Mozilla-intermediate ciphers, session resumption,
//! h2 by ALPN, the request/response headers of the nginx it replaces, and upstream keep-alive.

use std::io::Write;
use std::process::{Command, Stdio};

use e2e::gateway::{pool_toml, Gateway, Upstream};

fn gateway_for(up: &Upstream) -> Gateway {
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\n",
        pool_toml("p", "least_conn", &[up.addr()], "")
    );
    Gateway::start(&body)
}

/// `openssl s_client` against the HTTPS listener; returns (exit ok, output).
fn s_client(gw: &Gateway, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", gw.setup.https_port))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    // Stay connected briefly so TLS 1.3 session tickets arrive before we hang up.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = child.stdin.take().map(|mut i| i.write_all(b""));
    let out = child.wait_with_output().expect("s_client output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn http_redirects_to_https_keeping_path_query_and_public_port() {
    let up = Upstream::start("r");
    let gw = gateway_for(&up);
    let out = e2e::curl(&[&gw.http("/mcp/x?a=1&b=two")]);
    assert_eq!(out.status, 301);
    assert_eq!(
        out.header("location"),
        Some(format!("https://127.0.0.1:{}/mcp/x?a=1&b=two", gw.setup.https_port).as_str())
    );
    let out = e2e::curl(&["-H", "Host: example.com:8080", &gw.http("/")]);
    assert_eq!(
        out.header("location"),
        Some(format!("https://example.com:{}/", gw.setup.https_port).as_str())
    );
    assert!(
        out.header("strict-transport-security").is_none(),
        "no HSTS on plain HTTP"
    );
    // Exempt prefix (ACME) is proxied on plain HTTP, not redirected.
    let acme = e2e::curl(&[&gw.http("/.well-known/acme-challenge/token")]);
    assert_eq!(
        acme.status, 404,
        "proxied to the upstream, which has no such path"
    );
    assert_eq!(acme.json()["path"], "/.well-known/acme-challenge/token");
    // Following the redirect works end to end.
    let cacert = gw.setup.cert.display().to_string();
    let followed = e2e::curl(&["-L", "--cacert", &cacert, &gw.http("/whoami")]);
    assert_eq!(followed.status, 200);
    assert_eq!(followed.json()["name"], "r");
}

#[test]
fn tls_versions_ciphers_resumption_and_alpn() {
    let up = Upstream::start("t");
    let gw = gateway_for(&up);
    // Old protocols are refused by the server even when the client would allow them.
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(&gw, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!ok, "{old} accepted: {text}");
        assert!(
            text.contains("protocol version") || text.contains("Cipher is (NONE)"),
            "{text}"
        );
    }
    for (flag, proto) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(&gw, &[flag, "-alpn", "h2,http/1.1"]);
        assert!(ok, "{flag} refused: {text}");
        assert!(text.contains(&format!("New, {proto}")), "{text}");
        assert!(text.contains("ALPN protocol: h2"), "{text}");
    }
    let (_, text) = s_client(&gw, &["-tls1_2", "-alpn", "http/1.1"]);
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    // A CBC suite outside Mozilla intermediate is refused.
    let (ok, text) = s_client(&gw, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]);
    assert!(!ok, "CBC cipher accepted: {text}");
    // Session resumption, TLS 1.2 and 1.3, by ticket and (-no_ticket) from the server's
    // session cache (nginx's ssl_session_cache).
    let dir = tempfile::tempdir().unwrap();
    for flag in ["-tls1_2", "-tls1_3"] {
        for how in ["-ticket", "-no_ticket"] {
            let sess = dir.path().join(format!("sess{flag}{how}"));
            let sess = sess.to_str().unwrap();
            let extra: &[&str] = if how == "-no_ticket" { &[how] } else { &[] };
            let (ok, _) = s_client(&gw, &[&[flag, "-sess_out", sess], extra].concat());
            assert!(ok);
            let (ok, text) = s_client(&gw, &[&[flag, "-sess_in", sess], extra].concat());
            assert!(ok);
            assert!(
                text.contains("Reused,"),
                "{flag} {how}: session not resumed: {text}"
            );
        }
    }
    // curl negotiates h2 by ALPN, and HTTP/1.1 when asked.
    assert_eq!(gw.curl_https("/whoami", &["--http2"]).http_version, "2");
    assert_eq!(gw.curl_https("/whoami", &["--http1.1"]).http_version, "1.1");
}

#[test]
fn request_and_response_headers() {
    let up = Upstream::start("h");
    let gw = gateway_for(&up);
    let out = gw.curl_https(
        "/echo",
        &[
            "-H",
            "X-Forwarded-For: 203.0.113.7",
            "-H",
            "X-Request-ID: client-chosen-42",
            "-H",
            "Host: api.example.com",
        ],
    );
    assert_eq!(out.status, 200);
    let seen = out.json();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["host"], "api.example.com");
    assert_eq!(h["x-request-id"], "client-chosen-42");
    assert_eq!(out.header("x-request-id"), Some("client-chosen-42"));
    // Security headers, HSTS on HTTPS, Server without version.
    assert_eq!(out.header("x-frame-options"), Some("DENY"));
    assert_eq!(out.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(out.header("x-xss-protection"), Some("1; mode=block"));
    assert!(out.header("referrer-policy").is_some());
    assert_eq!(
        out.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(out.header("server"), Some("gateway"));
    // Without a (valid) request id the gateway makes one, sends it upstream and returns it.
    for extra in [vec![], vec!["-H", "X-Request-ID: has spaces and ; junk"]] {
        let out = gw.curl_https("/echo", &extra);
        let rid = out.header("x-request-id").unwrap().to_string();
        assert_eq!(rid.len(), 36, "{rid}");
        assert_eq!(out.json()["headers"]["x-request-id"], rid.as_str());
    }
    // HTTP/2 clients send :authority; upstream still gets Host.
    let out = gw.curl_https("/echo", &["--http2"]);
    assert_eq!(
        out.json()["headers"]["host"],
        format!("127.0.0.1:{}", gw.setup.https_port)
    );
}

#[test]
fn upstream_connections_are_kept_alive() {
    let up = Upstream::start("k");
    let gw = gateway_for(&up);
    for _ in 0..20 {
        assert_eq!(gw.curl_https("/whoami", &[]).status, 200);
    }
    let stats = up.stats();
    let conns = stats["connections"].as_i64().unwrap();
    // 20 client connections, a handful of upstream connections (plus the /stats one).
    assert!(
        conns <= 4,
        "upstream saw {conns} connections for 20 requests: {stats}"
    );
}
