//! The listeners as a client sees them: HTTP → 301 to HTTPS keeping path and query (with exempt
//! prefixes proxied), TLS 1.2/1.3 only with Mozilla-intermediate ciphers, session resumption,
//! OCSP stapling, h2 by ALPN, the request/response headers of the nginx it replaces, and
//! upstream keep-alive.

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

/// Header names are case-insensitive (RFC 9110 section 5.1) and the gateway does not keep
/// their spelling: over HTTP/1.1 both directions carry the canonical form (`Mcp-Session-Id`),
/// whatever the client or the upstream wrote; values are untouched.
#[test]
fn header_names_go_out_in_canonical_form() {
    let up = Upstream::start("n");
    let gw = gateway_for(&up);
    let out = gw.curl_https(
        "/echo",
        &[
            "--http1.1",
            "-H",
            "x-custom-HEADER: Keep THIS",
            "-H",
            "MCP-SESSION-ID: s1",
        ],
    );
    assert_eq!(out.status, 200, "{out:?}");
    let seen = out.json();
    let names: Vec<&str> = seen["raw_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for name in [
        "X-Custom-Header",
        "Mcp-Session-Id",
        "Host",
        "X-Forwarded-For",
        "X-Real-Ip",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(
        names
            .iter()
            .all(|n| !n.contains("HEADER") && !n.contains("SESSION")),
        "{names:?}"
    );
    assert_eq!(seen["headers"]["x-custom-header"], "Keep THIS");

    for proto in ["--http1.1", "--http2"] {
        let out = gw.curl_https("/names", &[proto]);
        assert_eq!(out.status, 200, "{out:?}");
        let names: Vec<&str> = out.headers.iter().map(|(k, _)| k.as_str()).collect();
        let want: &[&str] = if proto == "--http1.1" {
            &[
                "X-Lower-Name",
                "X-Upper-Name",
                "Mcp-Session-Id",
                "Content-Type",
                "X-Frame-Options",
            ]
        } else {
            // HTTP/2 field names are lower case (RFC 9113 section 8.2.1).
            &[
                "x-lower-name",
                "x-upper-name",
                "mcp-session-id",
                "content-type",
                "x-frame-options",
            ]
        };
        for name in want {
            assert!(names.contains(name), "{proto}: {name} not in {names:?}");
        }
        assert_eq!(out.header("mcp-session-id"), Some("s"));
    }
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

/// `openssl` with `args` in `dir`; panics with its output when it fails.
fn openssl_in(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a leaf for localhost it signed (chain.pem = leaf + CA), and an OCSP response about the
/// leaf, signed by the CA, with `state` "V" (good) or "R" (revoked), written to `out`.
fn ocsp_response(dir: &std::path::Path, state: &str, out: &str) {
    let serial = Command::new("openssl")
        .args(["x509", "-in", "leaf.pem", "-noout", "-serial"])
        .current_dir(dir)
        .output()
        .expect("openssl x509");
    let serial = String::from_utf8_lossy(&serial.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string();
    let revoked = if state == "R" { "251201000000Z" } else { "" };
    std::fs::write(
        dir.join("index.txt"),
        format!("{state}\t301231000000Z\t{revoked}\t{serial}\tunknown\t/CN=localhost\n"),
    )
    .unwrap();
    openssl_in(
        dir,
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "leaf.pem",
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    openssl_in(
        dir,
        &[
            "ocsp",
            "-index",
            "index.txt",
            "-rsigner",
            "ca.pem",
            "-rkey",
            "ca.key",
            "-CA",
            "ca.pem",
            "-reqin",
            "req.der",
            "-respout",
            out,
            "-ndays",
            "1",
        ],
    );
}

fn make_ca_and_leaf(dir: &std::path::Path) {
    openssl_in(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Test CA",
        ],
    );
    openssl_in(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl_in(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let chain = [
        std::fs::read_to_string(dir.join("leaf.pem")).unwrap(),
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
}

#[test]
fn ocsp_response_is_stapled_checked_and_re_read_on_reload() {
    let up = Upstream::start("o");
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\n",
        pool_toml("p", "least_conn", &[up.addr()], "")
    );
    let setup = e2e::gateway::GatewaySetup::new(&body, "");
    let pki = setup.dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_ca_and_leaf(&pki);
    ocsp_response(&pki, "V", "ocsp.der");
    let original = std::fs::read_to_string(&setup.config_path).unwrap();
    let mut lines: Vec<String> = Vec::new();
    for line in original.lines() {
        if line.starts_with("cert = ") {
            lines.push(format!("cert = \"{}\"", pki.join("chain.pem").display()));
            lines.push(format!(
                "stapling_file = \"{}\"",
                pki.join("ocsp.der").display()
            ));
        } else if line.starts_with("key = ") {
            lines.push(format!("key = \"{}\"", pki.join("leaf.key").display()));
        } else {
            lines.push(line.to_string());
        }
    }
    let config = lines.join("\n");
    std::fs::write(&setup.config_path, &config).unwrap();
    let gw = Gateway::start_setup(setup);

    let status = |gw: &Gateway| {
        let ca = pki.join("ca.pem");
        let (_, text) = s_client(gw, &["-status", "-CAfile", ca.to_str().unwrap()]);
        text
    };
    let text = status(&gw);
    assert!(
        text.contains("OCSP Response Status: successful") && text.contains("Cert Status: good"),
        "{text}"
    );
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // A client that does not ask gets no status.
    let (_, text) = s_client(&gw, &[]);
    assert!(!text.contains("OCSP Response Status"), "{text}");

    // The file is re-read on reload: a new response (here: revoked) is stapled from then on.
    ocsp_response(&pki, "R", "ocsp.der");
    gw.proc.signal("HUP");
    gw.wait_status("the reload", std::time::Duration::from_secs(10), |st| {
        st["generation"] == 2
    });
    let text = status(&gw);
    assert!(text.contains("Cert Status: revoked"), "{text}");

    // `-t` refuses a file that is not an OCSP response, and a response about another
    // certificate, naming the key.
    let check = |cfg: &str| {
        let path = gw.setup.dir.path().join("check.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(e2e::bin("gateway"))
            .args(["-t", "-c", path.to_str().unwrap()])
            .output()
            .expect("gateway -t");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    std::fs::write(pki.join("junk.der"), b"not der").unwrap();
    let (ok, err) = check(&config.replace("ocsp.der", "junk.der"));
    assert!(
        !ok && err.contains("listeners.https.stapling_file")
            && err.contains("not a DER OCSP response"),
        "{err}"
    );
    let other = pki.join("other");
    std::fs::create_dir(&other).unwrap();
    make_ca_and_leaf(&other);
    ocsp_response(&other, "V", "ocsp.der");
    let (ok, err) = check(&config.replace(
        pki.join("ocsp.der").to_str().unwrap(),
        other.join("ocsp.der").to_str().unwrap(),
    ));
    assert!(
        !ok && err.contains("gives no status for the certificate"),
        "{err}"
    );
}
