//! The shipped files and their defaults, and the files a config names (certificates, keys).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert!(e.errors[0]
        .reason
        .starts_with("cannot read the configuration file"));

    // parse() does not look at certificate files; load() does, and says which key.
    let conf = dir.path().join("gw.toml");
    let text = format!(
        "{MINIMAL}\n[listeners.https]\naddress = \"127.0.0.1:8443\"\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n"
    );
    std::fs::write(&conf, &text).unwrap();
    assert!(parse(&text, &conf).is_ok());
    let e = load(&conf).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("listeners.https.cert: cannot read") && shown.contains("No such file"),
        "{shown}"
    );
    assert!(
        shown.contains("listeners.https.key: cannot read"),
        "{shown}"
    );
}

/// A self-signed certificate and its key, made by the openssl command (as `make run` does).
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command runs");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

#[test]
fn load_accepts_a_matching_cert_and_key_and_refuses_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = make_cert(dir.path(), "a");
    let (_cert_b, key_b) = make_cert(dir.path(), "b");
    let conf = dir.path().join("gw.toml");
    let write = |cert: &Path, key: &Path| {
        let text = format!(
            "{MINIMAL}\n[listeners.https]\naddress = \"127.0.0.1:8443\"\ncert = {:?}\nkey = {:?}\n",
            cert.file_name().unwrap().to_str().unwrap(),
            key.to_str().unwrap()
        );
        std::fs::write(&conf, text).unwrap();
    };
    write(&cert_a, &key_a);
    let c = load(&conf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.https.unwrap().cert, cert_a);

    write(&cert_a, &key_b);
    let shown = load(&conf).unwrap_err().to_string();
    assert!(
        shown.contains("listeners.https.key: does not match the certificate"),
        "{shown}"
    );

    // A key where the certificate should be.
    write(&key_a, &key_a);
    let shown = load(&conf).unwrap_err().to_string();
    assert!(
        shown.contains("listeners.https.cert: ") && shown.contains("holds no PEM certificate"),
        "{shown}"
    );
}

#[test]
fn shipped_examples_are_valid() {
    let dir = repo_conf("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let c = parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            c.listeners
                .https
                .as_ref()
                .unwrap()
                .cert
                .ends_with("run/tls/cert.pem"),
            "{}: the cert is the one `make run` makes",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 2, "canary and blue-green examples");
    let text = std::fs::read_to_string(dir.join("canary.toml")).unwrap();
    let c = parse(&text, &dir.join("canary.toml")).unwrap();
    let mut weights = c.splits["mcp"].pools.clone();
    weights.sort();
    assert_eq!(weights, [("canary".into(), 10), ("stable".into(), 90)]);
    assert!(c.splits["mcp"].rollback.is_some());
    let text = std::fs::read_to_string(dir.join("blue-green.toml")).unwrap();
    let c = parse(&text, &dir.join("blue-green.toml")).unwrap();
    assert_eq!(c.splits["live"].sticky, Sticky::None);
}

#[test]
fn minimal_file_gets_the_nginx_conf_defaults() {
    let c = ok(MINIMAL);
    assert_eq!(c.file, file());
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.grace_period, Duration::from_secs(30));
    assert_eq!(c.server.access_log, AccessLog::Stdout);
    assert_eq!(c.server.error_log_level, log::LevelFilter::Info);
    let http = c.listeners.http.as_ref().unwrap();
    assert!(http.redirect_https);
    assert_eq!(http.https_port, 443);
    assert_eq!(http.redirect_exempt, ["/.well-known/acme-challenge/"]);
    assert!(c.listeners.https.is_none() && c.listeners.admin.is_none());

    assert_eq!(
        c.headers.hsts.as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(c.headers.server.as_deref(), Some("gateway"));
    let names: Vec<&str> = c.headers.set.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "X-Frame-Options",
            "X-Content-Type-Options",
            "X-XSS-Protection",
            "Referrer-Policy"
        ]
    );
    assert!(c.gzip.enabled && c.gzip.vary);
    assert_eq!(c.gzip.min_length, 1024);
    assert_eq!(c.gzip.level, 6);
    assert!(c.gzip.types.iter().any(|t| t == "application/json"));
    assert_eq!(c.gzip.types.len(), 8);
    assert!(c.real_ip.trusted_proxies.is_empty());

    let pool = &c.pools["backend"];
    assert_eq!(pool.balance, Balance::LeastConn);
    assert_eq!(pool.max_fails, 3);
    assert_eq!(pool.fail_timeout, Duration::from_secs(30));
    assert_eq!(pool.keepalive, 64);
    assert!(pool.tls.is_none() && pool.health_check.is_none());
    assert_eq!(
        pool.servers[0].socket_addr,
        Some("127.0.0.1:3001".parse().unwrap())
    );
    assert_eq!(pool.servers[0].weight, 1);

    let r = &c.routes[0];
    assert_eq!(r.name, "/");
    assert_eq!(r.target, RouteTarget::Pool("backend".into()));
    assert!(!r.stream);
    assert_eq!(r.connect_timeout, Duration::from_secs(5));
    assert_eq!(r.read_timeout, Duration::from_secs(60));
    assert_eq!(r.max_body_size, 1 << 20);
    assert_eq!(r.retries, 1);
    assert_eq!(r.response_headers, c.headers.set);
}

#[test]
fn https_defaults_are_tls12_plus_mozilla_intermediate() {
    let c = ok(&format!(
        "{MINIMAL}\n[listeners.https]\naddress = \"127.0.0.1:8443\"\ncert = \"tls/cert.pem\"\nkey = \"/abs/key.pem\"\n"
    ));
    let h = c.listeners.https.as_ref().unwrap();
    assert_eq!(h.min_tls, TlsVersion::Tls12);
    assert!(h.http2);
    assert_eq!(h.ciphers, defaults::MOZILLA_INTERMEDIATE_CIPHERS);
    assert!(h.ciphers.contains("ECDHE-RSA-AES128-GCM-SHA256"));
    assert_eq!(h.session_timeout, Duration::from_secs(600));
    // Relative to the config file's directory, not the cwd.
    assert_eq!(h.cert, PathBuf::from("/etc/gw/tls/cert.pem"));
    assert_eq!(h.key, PathBuf::from("/abs/key.pem"));
    // The redirect port follows the HTTPS listener.
    assert_eq!(c.listeners.http.as_ref().unwrap().https_port, 8443);
}

#[test]
fn shipped_local_toml_is_valid_and_matches_the_replaced_nginx_conf() {
    let path = repo_conf("local.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let l = &c.listeners;
    assert_eq!(
        l.http.as_ref().unwrap().address,
        "127.0.0.1:8080".parse().unwrap()
    );
    assert_eq!(l.http.as_ref().unwrap().https_port, 8443);
    let https = l.https.as_ref().unwrap();
    assert_eq!(https.address, "127.0.0.1:8443".parse().unwrap());
    assert!(https.cert.ends_with("run/tls/cert.pem"));
    assert!(!https.cert.to_string_lossy().contains(".."));
    assert_eq!(https.ciphers, defaults::MOZILLA_INTERMEDIATE_CIPHERS);
    assert_eq!(
        l.admin.as_ref().unwrap().address,
        "127.0.0.1:9464".parse().unwrap()
    );

    let backend = &c.pools["backend"];
    assert_eq!(backend.balance, Balance::LeastConn);
    let addrs: Vec<&str> = backend.servers.iter().map(|s| s.address.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:3001", "127.0.0.1:3002"]);
    assert_eq!(backend.health_check.as_ref().unwrap().path, "/healthz");
    assert_eq!(
        c.pools["legacy_sse"].balance,
        Balance::Hash(HashKey::ClientIp)
    );

    let route = |p: &str| match_route(&c, Some("localhost"), p).unwrap();
    let mcp = route("/mcp");
    assert!(mcp.stream);
    assert_eq!(mcp.read_timeout, Duration::from_secs(86_400));
    assert_eq!(
        mcp.limit,
        Some(RouteLimit {
            zone: "api".into(),
            burst: 20,
            delay: LimitDelay::NoDelay
        })
    );
    let sse = route("/sse");
    assert!(sse.stream);
    assert_eq!(sse.target, RouteTarget::Pool("legacy_sse".into()));
    assert_eq!(sse.limit.as_ref().unwrap().burst, 10);
    assert_eq!(
        route("/messages").target,
        RouteTarget::Pool("legacy_sse".into())
    );
    assert_eq!(route("/healthz").name, "healthz");
    assert_eq!(route("/health/live").name, "health_live");
    assert_eq!(route("/health").name, "health");
    assert_eq!(route("/tools/execute").name, "tools");
    // No catch-all: backend internals such as /metrics are not routed.
    assert!(match_route(&c, None, "/metrics").is_none());
    assert_eq!(c.zones["api"].rate.to_string(), "10r/s");
    assert_eq!(c.zones["sse"].rate.to_string(), "5r/s");
    assert_eq!(c.zones["api"].size, 10 << 20);
}

#[test]
fn shipped_gateway_toml_is_valid_for_the_container() {
    let path = repo_conf("gateway/gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let l = &c.listeners;
    assert_eq!(
        l.http.as_ref().unwrap().address,
        "0.0.0.0:80".parse().unwrap()
    );
    assert_eq!(l.http.as_ref().unwrap().https_port, 443);
    assert_eq!(
        l.https.as_ref().unwrap().cert,
        PathBuf::from("/var/lib/gateway/tls/cert.pem")
    );
    assert_eq!(
        l.admin.as_ref().unwrap().address,
        "0.0.0.0:9464".parse().unwrap()
    );
    let s = &c.pools["backend"].servers[0];
    assert_eq!((s.host.as_str(), s.port), ("backend", 3000));
    assert_eq!(
        s.socket_addr, None,
        "a DNS name must be resolved, not fixed"
    );
    assert_eq!(
        match_route(&c, None, "/mcp")
            .unwrap()
            .limit
            .as_ref()
            .unwrap()
            .zone,
        "api"
    );
    assert_eq!(c.zones["sse"].rate.to_string(), "5r/s");
}

/// The `gateway.toml: |` block of a ConfigMap, unindented.
fn config_map_toml(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "gateway.toml: |");
    lines.next();
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    body.iter()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_configs_publish_the_probes_and_not_the_backend_internals() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts: Vec<(String, String)> = [
        "conf/gateway/gateway.toml",
        "conf/local.toml",
        "conf/examples/canary.toml",
        "conf/examples/blue-green.toml",
        "conf/examples/compose-canary/gateway.toml",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read_to_string(root.join(f)).unwrap(),
        )
    })
    .collect();
    for f in [
        "deploy/kubernetes/gateway-config.yaml",
        "deploy/kubernetes/canary/gateway-config.yaml",
    ] {
        let yaml = std::fs::read_to_string(root.join(f)).unwrap();
        texts.push((f.to_string(), config_map_toml(&yaml)));
    }
    for (name, text) in &texts {
        let c = parse(text, &root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for p in ["/health", "/health/live", "/health/ready"] {
            assert!(match_route(&c, None, p).is_some(), "{name}: {p} not routed");
        }
        for p in ["/health/metrics", "/healthmetrics", "/metrics", "/health/"] {
            assert!(match_route(&c, None, p).is_none(), "{name}: {p} is routed");
        }
        // The compose canary publishes no probes of its own (compose checks the containers).
        if name.contains("compose-canary") {
            continue;
        }
        for p in ["/healthz", "/readyz"] {
            assert!(match_route(&c, None, p).is_some(), "{name}: {p} not routed");
        }
    }
}
