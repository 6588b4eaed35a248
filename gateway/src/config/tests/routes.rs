//! `[[routes]]`: paths, hosts, targets, timeouts, and which route a request gets.

use std::time::Duration;

use super::*;

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
    assert_eq!(match_route(&c, None, "/mcp/x").unwrap().name, "mcp");
    assert_eq!(match_route(&c, Some("other"), "/mcp").unwrap().name, "mcp");
    assert_eq!(
        match_route(&c, Some("api.example.com"), "/mcp")
            .unwrap()
            .name,
        "mcp-api-host"
    );
    assert_eq!(
        match_route(&c, Some("api.example.com"), "/x").unwrap().name,
        "root"
    );
}

#[test]
fn exact_routes_and_segment_boundaries() {
    let text = r#"
[listeners.http]
address = "127.0.0.1:8080"
[pools.a]
servers = ["127.0.0.1:1"]
[[routes]]
name = "health"
path = "= /health"
pool = "a"
[[routes]]
name = "live"
path = "/health/live"
pool = "a"
[[routes]]
name = "mcp"
path = "/mcp"
pool = "a"
"#;
    let c = ok(text);
    let name = |p: &str| match_route(&c, None, p).map(|r| r.name.as_str());
    assert_eq!(name("/health"), Some("health"));
    assert_eq!(name("/health/live"), Some("live"));
    assert_eq!(name("/health/metrics"), None);
    assert_eq!(name("/healthmetrics"), None);
    assert_eq!(name("/mcp/x"), Some("mcp"));
    assert_eq!(name("/mcpx"), None);
}

#[test]
fn route_paths_must_be_normalised() {
    let text = format!(
        "{MINIMAL}\n[[routes]]\npath = \"=health\"\npool = \"backend\"\n[[routes]]\npath = \"/a//b\"\npool = \"backend\"\n[[routes]]\npath = \"/a/../b\"\npool = \"backend\"\n[[routes]]\npath = \"/a%2Fb\"\npool = \"backend\"\n[[routes]]\npath = \"= /ok\"\npool = \"backend\"\n"
    );
    let errs = errors(&text);
    has(&errs, "routes[1].path", "must start with \"/\" (or \"= /\"");
    has(&errs, "routes[2].path", "is not a normalised path");
    has(&errs, "routes[3].path", "is not a normalised path");
    has(&errs, "routes[4].path", "not %-escaped");
    assert_eq!(errs.len(), 4, "{errs:#?}");
}
