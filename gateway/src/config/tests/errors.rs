//! How mistakes are reported: syntax, missing and unknown keys, every problem at once, value types.

use std::time::Duration;

use super::*;

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
