//! Unit tests of the config module: the shipped files, defaults, and each class of mistake with
//! the key path and message an operator sees.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The smallest valid file; tests append to it or replace parts.
const MINIMAL: &str = r#"
[listeners.http]
address = "127.0.0.1:8080"

[pools.backend]
servers = ["127.0.0.1:3001"]

[[routes]]
path = "/"
pool = "backend"
"#;

fn file() -> PathBuf {
    PathBuf::from("/etc/gw/gateway.toml")
}

fn ok(text: &str) -> Config {
    match parse(text, &file()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Parses, expects failure, returns "key: reason" lines.
fn errors(text: &str) -> Vec<String> {
    match parse(text, &file()) {
        Ok(_) => panic!("expected errors, the config was accepted"),
        Err(e) => {
            assert_eq!(e.file, file());
            e.errors.iter().map(|e| e.to_string()).collect()
        }
    }
}

/// Asserts that some error line starts with `key: ` and contains `needle`.
#[track_caller]
fn has(errs: &[String], key: &str, needle: &str) {
    let prefix = if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    };
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&prefix) && e.contains(needle)),
        "no error `{prefix}...{needle}...` in:\n{}",
        errs.join("\n")
    );
}

fn repo_conf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf")
        .join(name)
}

#[test]
fn minimal_file_gets_the_seed_defaults() {
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
fn shipped_local_toml_is_valid_and_matches_the_seed() {
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

    let route = |p: &str| c.match_route(Some("localhost"), p).unwrap();
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
        route("/messages?sessionId=1").target,
        RouteTarget::Pool("legacy_sse".into())
    );
    assert_eq!(route("/healthz").name, "healthz");
    assert_eq!(route("/health/live").name, "health");
    assert_eq!(route("/tools/execute").name, "tools");
    // No catch-all: backend internals such as /metrics are not routed.
    assert!(c.match_route(None, "/metrics").is_none());
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
        c.match_route(None, "/mcp")
            .unwrap()
            .limit
            .as_ref()
            .unwrap()
            .zone,
        "api"
    );
    assert_eq!(c.zones["sse"].rate.to_string(), "5r/s");
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let errs = errors("[server]\nthreads = 2\ngrace_period = \"30s\n");
    assert_eq!(errs.len(), 1);
    has(&errs, "", "TOML syntax error at line 3");
    let errs = errors("[server\n");
    has(&errs, "", "line 1, column");
}

#[test]
fn missing_required_sections_and_keys() {
    let errs = errors("");
    has(&errs, "listeners", "missing");
    has(&errs, "pools", "missing");
    has(&errs, "routes", "missing");

    let errs = errors(
        r#"
[listeners.https]
address = "127.0.0.1:8443"
[pools.p]
servers = []
[[routes]]
name = "x"
"#,
    );
    has(&errs, "listeners.https.cert", "missing (required)");
    has(&errs, "listeners.https.key", "missing (required)");
    has(&errs, "pools.p.servers", "at least one server");
    has(&errs, "routes[0].path", "missing (required)");
    has(&errs, "routes[0].pool", "set pool or split");
}

#[test]
fn unknown_keys_are_named_by_path() {
    let text = MINIMAL
        .replace("[listeners.http]", "[listeners.http]\nredirect = true")
        .replace(
            "pool = \"backend\"",
            "pool = \"backend\"\nread_timout = \"5s\"",
        )
        + "\n[pools.backend.health_check]\npath = \"/h\"\nintervall = \"1s\"\n[extra]\n";
    let errs = errors(&text);
    has(&errs, "listeners.http.redirect", "unknown key");
    has(
        &errs,
        "routes[0].read_timout",
        "unknown key (expected one of: name, path",
    );
    has(&errs, "pools.backend.health_check.intervall", "unknown key");
    has(&errs, "extra", "unknown key");
    assert_eq!(errs.len(), 4, "{errs:?}");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = r#"
[listeners.http]
address = "127.0.0.1:99999"
[pools.backend]
servers = ["127.0.0.1:3001", "x:99999"]
balance = "fastest"
[zones.api]
rate = "10r/h"
[[routes]]
path = "/mcp"
pool = "bakend"
read_timeout = "10 minutes"
limit = { zone = "ap", burst = 20, nodelay = true }
"#;
    let errs = errors(text);
    has(&errs, "listeners.http.address", "is not ip:port");
    has(
        &errs,
        "pools.backend.servers[1]",
        "\"x:99999\" is not host:port (port out of range)",
    );
    has(&errs, "pools.backend.balance", "\"fastest\" is not one of");
    has(
        &errs,
        "zones.api.rate",
        "\"10r/h\" must be <n>r/s or <n>r/m",
    );
    has(
        &errs,
        "routes[0].pool",
        "unknown pool \"bakend\" (known: backend)",
    );
    has(&errs, "routes[0].read_timeout", "is not a duration");
    has(
        &errs,
        "routes[0].limit.zone",
        "unknown zone \"ap\" (known: api)",
    );
    assert_eq!(errs.len(), 7, "{errs:#?}");
}

#[test]
fn display_is_one_file_key_reason_line_per_problem() {
    let e = parse(
        &MINIMAL.replace("pool = \"backend\"", "pool = \"nope\"\nretries = 99"),
        &file(),
    )
    .unwrap_err();
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines
        .contains(&"/etc/gw/gateway.toml: routes[0].pool: unknown pool \"nope\" (known: backend)"));
    assert!(lines.contains(&"/etc/gw/gateway.toml: routes[0].retries: 99 is out of range (0..=10)"));
}

#[test]
fn wrong_value_types_say_what_was_expected() {
    let text = MINIMAL.replace(
        "pool = \"backend\"",
        "pool = \"backend\"\nstream = \"yes\"\nretries = \"2\"\nmax_body_size = 1.5",
    );
    let errs = errors(&text);
    has(
        &errs,
        "routes[0].stream",
        "expected true or false, found a string",
    );
    has(
        &errs,
        "routes[0].retries",
        "expected an integer, found a string",
    );
    has(&errs, "routes[0].max_body_size", "found a float");
    let errs = errors(&MINIMAL.replace("[listeners.http]", "[listeners.http]\nhttps_port = 70000"));
    has(&errs, "listeners.http.https_port", "out of range");
}

#[test]
fn durations_and_sizes_accept_strings_and_integers() {
    let text = MINIMAL.replace(
        "pool = \"backend\"",
        "pool = \"backend\"\nconnect_timeout = \"500ms\"\nread_timeout = 86400\nwrite_timeout = \"1h 30m\"\nmax_body_size = \"10m\"",
    );
    let r = &ok(&text).routes[0];
    assert_eq!(r.connect_timeout, Duration::from_millis(500));
    assert_eq!(r.read_timeout, Duration::from_secs(86_400));
    assert_eq!(r.write_timeout, Duration::from_secs(5400));
    assert_eq!(r.max_body_size, 10 << 20);
    let errs = errors(&MINIMAL.replace(
        "pool = \"backend\"",
        "pool = \"backend\"\nconnect_timeout = -1\nmax_body_size = \"10mb\"\nread_timeout = \"0s\"",
    ));
    has(&errs, "routes[0].connect_timeout", "negative");
    has(&errs, "routes[0].max_body_size", "is not a size");
    has(&errs, "routes[0].read_timeout", "greater than 0");
}

#[test]
fn stream_routes_default_to_a_day_of_read_timeout() {
    let c = ok(&MINIMAL.replace("pool = \"backend\"", "pool = \"backend\"\nstream = true"));
    assert_eq!(c.routes[0].read_timeout, Duration::from_secs(86_400));
}

#[test]
fn duplicate_routes_are_refused() {
    let text = format!(
        "{MINIMAL}\n[[routes]]\nname = \"/\"\npath = \"/other\"\npool = \"backend\"\n[[routes]]\nname = \"z\"\npath = \"/\"\npool = \"backend\"\n[[routes]]\nname = \"h\"\npath = \"/\"\nhost = \"Example.com\"\npool = \"backend\"\n"
    );
    let errs = errors(&text);
    has(
        &errs,
        "routes[1].name",
        "duplicate route name \"/\" (also routes[0])",
    );
    has(
        &errs,
        "routes[2].path",
        "duplicate route for path \"/\" (also routes[0])",
    );
    // Same path on a specific host is a different route.
    assert_eq!(errs.len(), 2, "{errs:#?}");
}

#[test]
fn route_paths_hosts_and_targets_are_checked() {
    let text = r#"
[listeners.http]
address = "127.0.0.1:8080"
[pools.backend]
servers = ["127.0.0.1:3001"]
[[routes]]
path = "mcp"
pool = "backend"
[[routes]]
path = "/a"
host = "example.com:443"
pool = "backend"
[[routes]]
path = "/b"
pool = "backend"
split = "s"
[[routes]]
path = "/c"
split = "nosuch"
"#;
    let errs = errors(text);
    has(&errs, "routes[0].path", "must start with \"/\"");
    has(&errs, "routes[1].host", "without a port");
    has(&errs, "routes[2]", "either pool or split, not both");
    has(
        &errs,
        "routes[3].split",
        "unknown split \"nosuch\" (none defined)",
    );
}

#[test]
fn longest_prefix_wins_and_host_routes_beat_generic_ones() {
    let text = r#"
[listeners.http]
address = "127.0.0.1:8080"
[pools.a]
servers = ["127.0.0.1:1"]
[pools.b]
servers = ["127.0.0.1:2"]
[[routes]]
name = "root"
path = "/"
pool = "a"
[[routes]]
name = "mcp"
path = "/mcp"
pool = "a"
[[routes]]
name = "mcp-api-host"
path = "/mcp"
host = "API.example.com"
pool = "b"
"#;
    let c = ok(text);
    assert_eq!(c.routes[2].host.as_deref(), Some("api.example.com"));
    assert_eq!(c.match_route(None, "/mcp/x").unwrap().name, "mcp");
    assert_eq!(c.match_route(Some("other"), "/mcp").unwrap().name, "mcp");
    assert_eq!(
        c.match_route(Some("api.example.com"), "/mcp").unwrap().name,
        "mcp-api-host"
    );
    assert_eq!(
        c.match_route(Some("api.example.com"), "/x").unwrap().name,
        "root"
    );
}

#[test]
fn pools_servers_balance_and_tls() {
    let text = r#"
[listeners.http]
address = "127.0.0.1:8080"
[pools.p]
balance = "hash"
hash_key = "header:X-Session"
servers = [{ address = "backend:3000", weight = 2 }, "[::1]:3001"]
tls = true
tls_sni = "api.internal"
ca_file = "ca.pem"
[pools.q]
balance = "round_robin"
servers = ["10.0.0.1:80"]
[[routes]]
path = "/"
pool = "p"
"#;
    let c = ok(text);
    let p = &c.pools["p"];
    assert_eq!(
        p.balance,
        Balance::Hash(HashKey::Header("X-Session".into()))
    );
    assert_eq!(p.servers[0].weight, 2);
    assert_eq!(p.servers[0].socket_addr, None);
    assert_eq!(p.servers[1].host, "::1");
    assert_eq!(
        p.servers[1].socket_addr,
        Some("[::1]:3001".parse().unwrap())
    );
    let tls = p.tls.as_ref().unwrap();
    assert!(tls.verify, "verification is on by default");
    assert_eq!(tls.sni.as_deref(), Some("api.internal"));
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/gw/ca.pem")));
    assert_eq!(c.pools["q"].balance, Balance::RoundRobin);

    let bad = r#"
[listeners.http]
address = "127.0.0.1:8080"
[pools.p]
hash_key = "client_ip"
servers = ["a:1", { address = "a:1" }, { address = "b:2", weight = 0 }, 42, { addr = "c:3" }]
tls_verify = false
[pools.h]
balance = "hash"
hash_key = "query:x"
servers = ["a:1"]
[pools."bad name"]
servers = ["a:1"]
[[routes]]
path = "/"
pool = "p"
"#;
    let errs = errors(bad);
    has(
        &errs,
        "pools.p.hash_key",
        "only used with balance = \"hash\"",
    );
    has(&errs, "pools.p.servers[1].address", "duplicate server");
    has(
        &errs,
        "pools.p.servers[2].weight",
        "out of range (1..=1000)",
    );
    has(&errs, "pools.p.servers[3]", "expected \"host:port\"");
    has(&errs, "pools.p.servers[4].addr", "unknown key");
    has(&errs, "pools.p.servers[4].address", "missing (required)");
    has(&errs, "pools.p.tls_verify", "only used with tls = true");
    has(&errs, "pools.h.hash_key", "\"query:x\" is not one of");
    has(&errs, "pools.\"bad name\"", "may only use letters");
}

#[test]
fn health_checks_are_validated() {
    let c = ok(&format!("{MINIMAL}\n[pools.backend.health_check]\n"));
    let hc = c.pools["backend"].health_check.as_ref().unwrap();
    assert_eq!(hc.path, "/healthz");
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!((hc.rise, hc.fall), (2, 2));
    let errs = errors(&format!(
        "{MINIMAL}\n[pools.backend.health_check]\npath = \"healthz\"\ninterval = \"0s\"\nrise = 0\n"
    ));
    has(&errs, "pools.backend.health_check.path", "must be a path");
    has(
        &errs,
        "pools.backend.health_check.interval",
        "greater than 0",
    );
    has(&errs, "pools.backend.health_check.rise", "out of range");
}

#[test]
fn listeners_are_checked() {
    let errs = errors(
        r#"
[listeners.admin]
address = "127.0.0.1:8080"
[pools.backend]
servers = ["127.0.0.1:3001"]
[[routes]]
path = "/"
pool = "backend"
"#,
    );
    has(
        &errs,
        "listeners",
        "at least one of [listeners.http] or [listeners.https]",
    );

    let errs = errors(&format!(
        "{MINIMAL}\n[listeners.admin]\naddress = \"0.0.0.0:8080\"\n"
    ));
    has(
        &errs,
        "listeners.admin.address",
        "also used by listeners.http",
    );

    let errs = errors(&format!(
        "{MINIMAL}\n[listeners.https]\naddress = \"localhost:8443\"\ncert = \"c\"\nkey = \"k\"\nmin_tls = \"1.1\"\nciphers = \"NOT-A-CIPHER\"\n"
    ));
    has(&errs, "listeners.https.address", "is not ip:port");
    has(&errs, "listeners.https.min_tls", "\"1.1\" is not supported");
    has(&errs, "listeners.https.ciphers", "OpenSSL accepts none");

    let errs = errors(&MINIMAL.replace(
        "[listeners.http]",
        "[listeners.http]\nredirect_exempt = [\"acme\", 3]",
    ));
    has(
        &errs,
        "listeners.http.redirect_exempt[0]",
        "must start with \"/\"",
    );
    has(
        &errs,
        "listeners.http.redirect_exempt[1]",
        "expected a string",
    );
}

#[test]
fn server_section_values() {
    let c = ok(&format!(
        "{MINIMAL}\n[server]\nthreads = 4\naccess_log = \"../log/access.json\"\nerror_log_level = \"WARN\"\npid_file = \"gw.pid\"\n"
    ));
    assert_eq!(c.server.threads, 4);
    assert_eq!(
        c.server.access_log,
        AccessLog::File(PathBuf::from("/etc/log/access.json"))
    );
    assert_eq!(c.server.error_log_level, log::LevelFilter::Warn);
    assert_eq!(c.server.pid_file, PathBuf::from("/etc/gw/gw.pid"));
    assert_eq!(
        ok(&format!("{MINIMAL}\n[server]\naccess_log = \"off\"\n"))
            .server
            .access_log,
        AccessLog::Off
    );
    let errs = errors(&format!(
        "{MINIMAL}\n[server]\nthreads = 0\nerror_log_level = \"loud\"\n"
    ));
    has(&errs, "server.threads", "out of range");
    has(&errs, "server.error_log_level", "\"loud\" is not one of");
}

#[test]
fn headers_merge_per_route_and_are_validated() {
    let text = format!(
        "{MINIMAL}\n[headers]\nhsts = \"\"\nserver = \"\"\n[headers.set]\n\"X-Frame-Options\" = \"SAMEORIGIN\"\n\"X-Global\" = \"1\"\n"
    )
    .replace(
        "pool = \"backend\"",
        "pool = \"backend\"\n[routes.headers]\n\"x-frame-options\" = \"DENY\"\n\"X-Global\" = \"\"\n\"Cache-Control\" = \"no-store\"",
    );
    let c = ok(&text);
    assert_eq!(c.headers.hsts, None);
    assert_eq!(c.headers.server, None);
    assert_eq!(c.headers.set.len(), 2);
    let mut got = c.routes[0].response_headers.clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("Cache-Control".to_string(), "no-store".to_string()),
            ("x-frame-options".to_string(), "DENY".to_string()),
        ]
    );

    let errs = errors(&format!(
        "{MINIMAL}\n[headers.set]\n\"Bad Name\" = \"x\"\n\"X-Ok\" = \"line\\nbreak\"\n\"X-Num\" = 5\n"
    ));
    has(&errs, "headers.set.\"Bad Name\"", "not a valid header name");
    has(&errs, "headers.set.X-Ok", "not a valid header value");
    has(
        &errs,
        "headers.set.X-Num",
        "expected a string, found an integer",
    );
}

#[test]
fn gzip_settings() {
    let c = ok(&format!(
        "{MINIMAL}\n[gzip]\nenabled = false\nmin_length = \"2k\"\ntypes = [\"Application/JSON\"]\n"
    ));
    assert!(!c.gzip.enabled);
    assert_eq!(c.gzip.min_length, 2048);
    assert_eq!(c.gzip.types, ["application/json"]);
    let errs = errors(&format!(
        "{MINIMAL}\n[gzip]\nlevel = 10\ntypes = [\"json\"]\n"
    ));
    has(&errs, "gzip.level", "out of range (1..=9)");
    has(&errs, "gzip.types[0]", "is not a media type");
}

#[test]
fn real_ip_trusts_only_configured_proxies() {
    let c = ok(&format!(
        "{MINIMAL}\n[real_ip]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n"
    ));
    let r = &c.real_ip;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    // Untrusted peer: the header is ignored, whatever it says.
    assert_eq!(
        r.client_ip(ip("203.0.113.9"), Some("1.2.3.4")),
        ip("203.0.113.9")
    );
    // Trusted peer: right-most untrusted address.
    assert_eq!(
        r.client_ip(ip("10.1.1.1"), Some("6.6.6.6, 198.51.100.7, 10.2.2.2")),
        ip("198.51.100.7")
    );
    assert_eq!(r.client_ip(ip("127.0.0.1"), None), ip("127.0.0.1"));
    // Garbage stops the walk at the last good hop.
    assert_eq!(
        r.client_ip(ip("10.1.1.1"), Some("198.51.100.7, junk")),
        ip("10.1.1.1")
    );
    let errs = errors(&format!(
        "{MINIMAL}\n[real_ip]\ntrusted_proxies = [\"10.0.0.0/33\", \"10.1.0.0/8\"]\nheader = \"bad header\"\n"
    ));
    has(&errs, "real_ip.trusted_proxies[0]", "prefix length");
    has(&errs, "real_ip.trusted_proxies[1]", "host bits set");
    has(&errs, "real_ip.header", "not a valid header name");
}

#[test]
fn zones_and_route_limits() {
    let text = format!(
        "{MINIMAL}\n[zones.api]\nrate = \"30r/m\"\nkey = \"bearer\"\n[zones.hdr]\nrate = \"1r/s\"\nkey = \"header:X-Client\"\nsize = \"64k\"\nstatus = 503\n"
    )
    .replace(
        "pool = \"backend\"",
        "pool = \"backend\"\nlimit = { zone = \"api\", burst = 5, delay = 3 }",
    );
    let c = ok(&text);
    let z = &c.zones["api"];
    assert_eq!(z.key, LimitKey::Bearer);
    assert_eq!(z.rate.milli_per_sec(), 500);
    assert_eq!((z.size, z.status), (10 << 20, 429));
    assert_eq!(c.zones["hdr"].key, LimitKey::Header("X-Client".into()));
    assert_eq!(c.zones["hdr"].status, 503);
    assert_eq!(
        c.routes[0].limit,
        Some(RouteLimit {
            zone: "api".into(),
            burst: 5,
            delay: LimitDelay::AfterExcess(3)
        })
    );
    // No nodelay / delay: every excess request waits (nginx's default).
    let plain = ok(&text.replace(", delay = 3", ""));
    assert_eq!(
        plain.routes[0].limit.as_ref().unwrap().delay,
        LimitDelay::AfterExcess(0)
    );

    let errs = errors(
        &format!("{MINIMAL}\n[zones.api]\nkey = \"cookie:x\"\nsize = \"1k\"\nstatus = 200\n[zones.b]\nrate = \"0r/s\"\n")
            .replace(
                "pool = \"backend\"",
                "pool = \"backend\"\nlimit = { zone = \"api\", burst = -1, nodelay = true, delay = 2, rate = 1 }",
            ),
    );
    has(
        &errs,
        "zones.api.key",
        "\"cookie:x\" is not one of client_ip, bearer",
    );
    has(&errs, "zones.api.rate", "missing (required)");
    has(&errs, "zones.api.size", "too small");
    has(&errs, "zones.api.status", "out of range (400..=599)");
    has(&errs, "zones.b.rate", "at least 1 request");
    has(&errs, "routes[0].limit.burst", "out of range");
    has(&errs, "routes[0].limit.delay", "not both");
    has(&errs, "routes[0].limit.rate", "unknown key");
    // The zone exists (though broken): no misleading "unknown zone" on top.
    assert!(
        !errs.iter().any(|e| e.contains("unknown zone")),
        "{errs:#?}"
    );
}

#[test]
fn splits_reference_pools_and_validate_rollback() {
    let base = r#"
[listeners.http]
address = "127.0.0.1:8080"
[pools.stable]
servers = ["127.0.0.1:1"]
[pools.canary]
servers = ["127.0.0.1:2"]
[[routes]]
path = "/mcp"
split = "mcp"
"#;
    let c = ok(&format!(
        "{base}\n[splits.mcp]\npools = {{ stable = 90, canary = 10 }}\nsticky = \"bearer\"\n[splits.mcp.rollback]\npool = \"canary\"\nmax_5xx_ratio = 0.05\n"
    ));
    let s = &c.splits["mcp"];
    let mut pools = s.pools.clone();
    pools.sort();
    assert_eq!(
        pools,
        [("canary".to_string(), 10), ("stable".to_string(), 90)]
    );
    assert_eq!(s.sticky, Sticky::Bearer);
    assert_eq!(s.cookie, "gw_split");
    assert_eq!(s.force_header.as_deref(), Some("X-Gateway-Pool"));
    let rb = s.rollback.as_ref().unwrap();
    assert_eq!(
        (rb.pool.as_str(), rb.window, rb.min_requests),
        ("canary", Duration::from_secs(60), 50)
    );
    assert_eq!(c.routes[0].target, RouteTarget::Split("mcp".into()));
    // Blue-green cut-over: a zero weight is fine while the sum is positive.
    let cut = ok(&format!(
        "{base}\n[splits.mcp]\npools = {{ stable = 0, canary = 100 }}\nforce_header = \"\"\n"
    ));
    assert_eq!(cut.splits["mcp"].force_header, None);

    let errs = errors(&format!(
        "{base}\n[splits.mcp]\npools = {{ stable = 0, canary = 0 }}\n[splits.x]\npools = {{ stable = 1, canari = 1 }}\nsticky = \"session\"\ncookie = \"a b\"\n[splits.x.rollback]\npool = \"other\"\nmax_5xx_ratio = 1.5\n"
    ));
    has(&errs, "splits.mcp.pools", "weights sum to 0");
    has(
        &errs,
        "splits.x.pools.canari",
        "unknown pool \"canari\" (known: canary, stable)",
    );
    has(&errs, "splits.x.sticky", "\"session\" is not one of");
    has(&errs, "splits.x.cookie", "not a valid cookie name");
    has(
        &errs,
        "splits.x.rollback.pool",
        "not one of this split's pools",
    );
    has(
        &errs,
        "splits.x.rollback.max_5xx_ratio",
        "must be in (0, 1]",
    );
}

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
fn error_log_is_a_path_relative_to_the_file_and_never_empty() {
    let c = ok(&format!(
        "[server]\nerror_log = \"logs/error.log\"\n{MINIMAL}"
    ));
    assert_eq!(
        c.server.error_log.as_deref(),
        Some(file().parent().unwrap().join("logs/error.log").as_path())
    );
    assert_eq!(ok(MINIMAL).server.error_log, None);
    let errs = errors(&format!("[server]\nerror_log = \"\"\n{MINIMAL}"));
    assert!(
        errs.iter().any(|e| e.contains("server.error_log: empty")),
        "{errs:?}"
    );
}
