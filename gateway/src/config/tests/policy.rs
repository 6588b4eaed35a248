//! `[zones]`, route limits and `[splits]`.

use std::time::Duration;

use super::*;

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
