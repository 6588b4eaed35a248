//! Upstream TLS per pool (`tls`, `tls_verify`, `tls_sni`, `ca_file`) against a real HTTPS
//! upstream on loopback (tests/python/upstreams.py with --tls-cert, a self-signed certificate
//! for `localhost` and IP 127.0.0.1): a verified connection succeeds and really is TLS; an
//! unverifiable certificate or a wrong name is a 502 in the JSON envelope with the reason in the
//! gateway log, never a silent success; `tls_verify = false` is the operator's explicit opt-out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::gateway::{make_cert, pool_toml, Gateway};
use e2e::{free_port, repo_root, wait_for_port, Proc};
use tempfile::TempDir;

/// An HTTPS upstream with its own self-signed certificate (cert.pem is also its CA file).
struct TlsUpstream {
    proc: Proc,
    port: u16,
    cert: PathBuf,
    _dir: TempDir,
}

impl TlsUpstream {
    fn start(name: &str) -> TlsUpstream {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = make_cert(dir.path());
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/python/upstreams.py"))
            .args(["--port", &port.to_string(), "--name", name])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key);
        let mut proc = Proc::spawn(&format!("tls-upstream-{name}"), cmd);
        if !wait_for_port(port, Duration::from_secs(10)) {
            let _ = proc.is_running();
            proc.fail("TLS upstream did not listen");
        }
        TlsUpstream {
            proc,
            port,
            cert,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the upstream itself reports on /tls, asked directly over verified HTTPS.
    fn direct_tls(&self) -> serde_json::Value {
        let cacert = self.cert.display().to_string();
        let url = format!("https://localhost:{}/tls", self.port);
        let out = e2e::curl(&["--cacert", &cacert, "--resolve", &self.resolve(), &url]);
        assert_eq!(out.status, 200, "{out:?}\n{}", self.proc.log());
        out.json()
    }

    fn resolve(&self) -> String {
        format!("localhost:{}:127.0.0.1", self.port)
    }
}

/// A gateway with one route `/` to pool `p` over `servers`, with `pool_extra` lines (the TLS
/// keys). No retries, so each request is one real attempt; one failure marks the backend down,
/// which is the log line that names it.
fn gateway(servers: &[String], pool_extra: &str) -> Gateway {
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\nretries = 0\nconnect_timeout = \"3s\"\nread_timeout = \"5s\"\n",
        pool_toml(
            "p",
            "round_robin",
            servers,
            &format!("max_fails = 1\n{pool_extra}")
        )
    );
    Gateway::start(&body)
}

fn ca_line(path: &Path) -> String {
    format!("ca_file = \"{}\"\n", path.display())
}

/// A 502 in the gateway's JSON error envelope (never the upstream's answer).
fn assert_bad_gateway(out: &e2e::CurlOut) {
    assert_eq!(out.status, 502, "{out:?}");
    assert_eq!(
        out.header("content-type"),
        Some("application/json"),
        "{out:?}"
    );
    let v = out.json();
    assert_eq!(v["error"]["code"], "BAD_GATEWAY", "{v}");
    assert_eq!(v["apiVersion"], "1.0.0", "{v}");
    assert!(v.get("tls").is_none(), "upstream body leaked through: {v}");
}

/// The gateway log says the certificate did not verify, and names the backend.
fn assert_logged_verify_failure(gw: &Gateway, up: &TlsUpstream) {
    let log = gw.proc.log();
    if !log.contains("certificate verify failed") {
        gw.proc
            .fail("no certificate verification failure in the log");
    }
    // Pingora's connect error carries only the SNI; the backend is named by the gateway's
    // marked-down warning that the same failure triggers.
    if !log
        .lines()
        .any(|l| l.contains(&up.addr()) && l.contains("marked down"))
    {
        gw.proc
            .fail(&format!("no log line names the backend {}", up.addr()));
    }
}

#[test]
fn verified_tls_upstream_succeeds_over_tls_with_the_configured_sni() {
    let up = TlsUpstream::start("tls-ok");
    let gw = gateway(
        &[up.addr()],
        &format!("tls = true\ntls_sni = \"localhost\"\n{}", ca_line(&up.cert)),
    );
    let out = gw.curl_https("/tls", &[]);
    assert_eq!(out.status, 200, "{out:?}\n{}", gw.proc.log());
    let v = out.json();
    // Only a TLS connection has a negotiated version; the SNI is the configured name.
    assert!(
        v["tls"].as_str().is_some_and(|t| t.starts_with("TLSv1.")),
        "{v}"
    );
    assert_eq!(v["sni"], "localhost", "{v}");
    assert_eq!(v["name"], "tls-ok");
    // And ordinary routes go through the same verified connection.
    let echo = gw.curl_https("/echo", &[]);
    assert_eq!(echo.status, 200, "{echo:?}");
    assert_eq!(echo.json()["name"], "tls-ok");
}

#[test]
fn plain_http_to_a_tls_upstream_is_refused_by_it_so_tls_really_is_spoken() {
    // Control for the test above: without `tls = true` the same upstream cannot be used, so the
    // 200 there proves the gateway spoke TLS.
    let up = TlsUpstream::start("tls-plain");
    let gw = gateway(&[up.addr()], "");
    let out = gw.curl_https("/tls", &[]);
    assert_eq!(out.status, 502, "{out:?}");
    assert_eq!(out.json()["error"]["code"], "BAD_GATEWAY");
}

#[test]
fn self_signed_upstream_without_ca_file_is_502_and_logged() {
    let up = TlsUpstream::start("tls-untrusted");
    // The upstream is fine when asked with its CA: the failure below is the gateway's check.
    assert!(up.direct_tls()["tls"].is_string());
    let gw = gateway(&[up.addr()], "tls = true\ntls_sni = \"localhost\"\n");
    let out = gw.curl_https("/tls", &[]);
    assert_bad_gateway(&out);
    assert_logged_verify_failure(&gw, &up);
}

#[test]
fn self_signed_upstream_by_ip_without_tls_sni_is_still_verified() {
    // The server is an IP literal and no tls_sni is set: verification is on by default, so the
    // self-signed certificate must still be refused (no SNI must not mean no verification).
    let up = TlsUpstream::start("tls-ip");
    let gw = gateway(&[up.addr()], "tls = true\n");
    let out = gw.curl_https("/tls", &[]);
    assert_bad_gateway(&out);
    assert_logged_verify_failure(&gw, &up);
}

#[test]
fn tls_verify_false_accepts_the_self_signed_upstream() {
    let up = TlsUpstream::start("tls-noverify");
    let gw = gateway(&[up.addr()], "tls = true\ntls_verify = false\n");
    let out = gw.curl_https("/tls", &[]);
    assert_eq!(out.status, 200, "{out:?}\n{}", gw.proc.log());
    let v = out.json();
    assert!(
        v["tls"].as_str().is_some_and(|t| t.starts_with("TLSv1.")),
        "{v}"
    );
    assert_eq!(v["name"], "tls-noverify");
}

#[test]
fn sni_that_does_not_match_the_certificate_is_502() {
    let up = TlsUpstream::start("tls-wrong-name");
    let gw = gateway(
        &[up.addr()],
        &format!(
            "tls = true\ntls_sni = \"wrong.example\"\n{}",
            ca_line(&up.cert)
        ),
    );
    let out = gw.curl_https("/tls", &[]);
    assert_bad_gateway(&out);
    assert_logged_verify_failure(&gw, &up);
}

#[test]
fn ip_server_is_checked_as_a_name_so_an_ip_only_certificate_needs_tls_sni() {
    // Fail closed: the IP literal is the verification name, and OpenSSL's name check does not
    // match it against the certificate's IP SAN; `tls_sni = "localhost"` is the remedy (above).
    let up = TlsUpstream::start("tls-ip-ca");
    let gw = gateway(&[up.addr()], &format!("tls = true\n{}", ca_line(&up.cert)));
    assert_bad_gateway(&gw.curl_https("/tls", &[]));
    assert_logged_verify_failure(&gw, &up);
}

#[test]
fn active_health_check_uses_the_same_tls_verification() {
    // The probe must verify like the proxy does: a trusted upstream is up, an untrusted one is
    // marked down (and so never chosen), in the same gateway.
    let good = TlsUpstream::start("hc-good");
    let bad = TlsUpstream::start("hc-bad");
    let check = |pool: &str| {
        format!(
            "[pools.{pool}.health_check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n"
        )
    };
    let body = format!(
        "{}{}{}{}\n[[routes]]\nname = \"good\"\npath = \"/good\"\npool = \"good\"\n\n[[routes]]\nname = \"bad\"\npath = \"/bad\"\npool = \"bad\"\n",
        pool_toml(
            "good",
            "round_robin",
            &[good.addr()],
            &format!("tls = true\ntls_sni = \"localhost\"\n{}", ca_line(&good.cert))
        ),
        check("good"),
        pool_toml("bad", "round_robin", &[bad.addr()], "tls = true\ntls_sni = \"localhost\"\n"),
        check("bad"),
    );
    let gw = Gateway::start(&body);
    gw.wait_status("good up, bad down", Duration::from_secs(10), |_| {
        let up = |pool, port| gw.backend_status(pool, port).map(|b| b["up"].clone());
        up("good", good.port) == Some(serde_json::Value::Bool(true))
            && up("bad", bad.port) == Some(serde_json::Value::Bool(false))
    });
    // Through the gateway: the good pool reaches its upstream (its own 404 body for a path it
    // does not serve), the bad one is refused by the gateway.
    let good_out = gw.curl_https("/good/x", &[]);
    assert_eq!(good_out.status, 404, "{good_out:?}");
    assert_eq!(good_out.json()["error"], "no such path", "{good_out:?}");
    let bad_out = gw.curl_https("/bad/x", &[]);
    assert_eq!(bad_out.status, 502, "{bad_out:?}");
    assert_eq!(
        bad_out.json()["error"]["code"],
        "NO_HEALTHY_BACKEND",
        "{bad_out:?}"
    );
}
