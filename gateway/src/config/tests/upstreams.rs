//! `[pools.NAME]`: servers, balancers, upstream TLS, health checks.

use std::path::Path;
use std::time::Duration;

use super::*;

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
