//! `[auth]` (named tokens, grants, `[auth.oauth]`), the MCP route keys (`mcp_limits`,
//! `mcp_peek`), `allowed_origins` / `allowed_hosts`, and the tool-error rollback ratio.

use super::*;

const AUTH: &str = r#"
[zones.per_caller]
key = "caller"
rate = "1r/s"

[auth]
tokens_file = "callers.txt"
upstream_token = "backend-secret"
caller_header = "X-Gateway-Caller"

[[auth.grants]]
callers = ["reader"]
scopes = ["mcp:read"]
methods = ["tools/list", "tools/call"]
tools = ["change.list", "spec.*"]

[auth.oauth]
resource = "https://mcp.example.com/mcp"
authorization_servers = ["https://auth.example.com"]
jwks_url = "https://auth.example.com/jwks.json"
"#;

fn mcp_route(keys: &str) -> String {
    format!("{MINIMAL}{AUTH}").replace(
        "pool = \"backend\"",
        &format!("pool = \"backend\"\nmcp = true\nauth = true\n{keys}"),
    )
}

#[test]
fn auth_grants_and_oauth_defaults() {
    let c = ok(&mcp_route(
        "mcp_limits = [{ tool = \"change.archive\", zone = \"per_caller\", nodelay = true }, { method = \"tools/list\", zone = \"per_caller\", burst = 5 }]\nallowed_origins = [\"https://App.example.com\"]\nallowed_hosts = [\"mcp.example.com\", \"127.0.0.1\"]",
    ));
    let a = &c.auth;
    assert_eq!(a.tokens_file, Some(PathBuf::from("/etc/gw/callers.txt")));
    assert_eq!(a.upstream_token, Some(Secret("backend-secret".into())));
    assert_eq!(format!("{:?}", a.upstream_token), "Some(***)");
    assert_eq!(a.caller_header.as_deref(), Some("X-Gateway-Caller"));
    assert_eq!(a.grants[0].methods, ["tools/list", "tools/call"]);
    let o = a.oauth.as_ref().unwrap();
    assert_eq!(o.issuer, "https://auth.example.com");
    assert_eq!(o.audiences, ["https://mcp.example.com/mcp"]);
    assert_eq!(o.algorithms, ["RS256", "ES256"]);
    assert_eq!(o.metadata_path, "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(c.zones["per_caller"].key, LimitKey::Caller);
    let r = &c.routes[0];
    assert!(r.auth && r.mcp);
    assert_eq!(r.mcp_peek, 64 * 1024);
    assert_eq!(
        r.mcp_limits[0].selector,
        McpSelector::Tool("change.archive".into())
    );
    assert_eq!(
        r.mcp_limits[1].selector,
        McpSelector::Method("tools/list".into())
    );
    assert_eq!(r.mcp_limits[1].limit.burst, 5);
    assert_eq!(r.allowed_origins, ["https://app.example.com"]);
    assert_eq!(r.allowed_hosts, ["mcp.example.com", "127.0.0.1"]);
    // Grants with no methods or tools given allow everything.
    let all = ok(&format!(
        "{MINIMAL}{AUTH}[[auth.grants]]\ncallers = [\"admin\"]\n"
    ));
    assert_eq!(all.auth.grants[1].methods, ["*"]);
    assert_eq!(all.auth.grants[1].tools, ["*"]);
}

#[test]
fn auth_mistakes_are_named() {
    let errs = errors(&format!(
        "{MINIMAL}\n[zones.z]\nrate = \"1r/s\"\n[auth]\nupstream_token = \"has space\"\ncaller_header = \"bad header\"\nsecret = 1\n[[auth.grants]]\nmethods = [\"tools/destroy\"]\ntools = [\"a*b\"]\n[auth.oauth]\nresource = \"http://mcp.example.com/mcp\"\njwks_file = \"k.json\"\njwks_url = \"https://a/k\"\nalgorithms = [\"none\", \"HS256\"]\n"
    )
    .replace(
        "pool = \"backend\"",
        "pool = \"backend\"\nmcp_peek = \"1m\"\nmcp_limits = [{ tool = \"x\", method = \"ping\", zone = \"nope\" }]\nallowed_origins = [\"https://a.example.com/path\"]\nallowed_hosts = [\"a.example.com:443\"]",
    ));
    has(&errs, "auth.upstream_token", "not a bearer token");
    has(&errs, "auth.secret", "unknown key");
    has(&errs, "auth.caller_header", "not a header name");
    has(&errs, "auth.grants[0]", "names nobody");
    has(&errs, "auth.grants[0].methods[0]", "not an MCP method");
    has(&errs, "auth.grants[0].tools[0]", "prefix ending in");
    has(&errs, "auth.oauth.resource", "not an absolute https URL");
    has(
        &errs,
        "auth.oauth.authorization_servers",
        "missing (required)",
    );
    has(&errs, "auth.oauth", "either jwks_file or jwks_url");
    has(
        &errs,
        "auth.oauth.algorithms[0]",
        "\"none\" is not accepted",
    );
    has(
        &errs,
        "auth.oauth.algorithms[1]",
        "\"HS256\" is not accepted",
    );
    has(&errs, "routes[0].mcp_peek", "over the 64k");
    has(&errs, "routes[0].mcp_peek", "only on an MCP route");
    has(&errs, "routes[0].mcp_limits[0]", "either tool or method");
    has(
        &errs,
        "routes[0].mcp_limits[0].zone",
        "unknown zone \"nope\"",
    );
    has(&errs, "routes[0].allowed_origins[0]", "not an origin");
    has(&errs, "routes[0].allowed_hosts[0]", "without a port");

    // A route that needs callers, with none configured.
    let errs = errors(&MINIMAL.replace("pool = \"backend\"", "pool = \"backend\"\nauth = true"));
    has(&errs, "routes[0].auth", "[auth] names none");
}

#[test]
fn tokens_file_lines_are_checked_without_showing_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gw.toml");
    std::fs::write(
        &conf,
        format!("{MINIMAL}\n[auth]\ntokens_file = \"callers.txt\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("callers.txt"),
        "# callers\nci:tok-aaaaaaaaaaaa\n\nbad line\nci:tok-bbbbbbbbbbbb\nops:tok-aaaaaaaaaaaa\nsp ace:x\nempty:\n",
    )
    .unwrap();
    let shown = load(&conf).unwrap_err().to_string();
    for needle in [
        "auth.tokens_file: line 4: expected name:token",
        "auth.tokens_file: line 5: the name \"ci\" is given twice",
        "auth.tokens_file: line 6: the token of \"ops\" is another caller's too",
        "auth.tokens_file: line 7: the name must be",
        "auth.tokens_file: line 8: the token of \"empty\" is empty",
    ] {
        assert!(shown.contains(needle), "no {needle:?} in:\n{shown}");
    }
    assert!(!shown.contains("tok-aaaa"), "a token was shown:\n{shown}");

    std::fs::write(
        dir.path().join("callers.txt"),
        "ci:tok-aaaaaaaaaaaa\nops:tok-bbbbbbbbbbbb\n",
    )
    .unwrap();
    let c = load(&conf).unwrap();
    assert_eq!(c.auth.tokens[1].0, "ops");
    assert_eq!(c.auth.tokens[1].1 .0, "tok-bbbbbbbbbbbb");
}

#[test]
fn rollback_on_tool_errors() {
    let base = format!("{MINIMAL}\n[pools.canary]\nservers = [\"127.0.0.1:3002\"]\n[splits.s]\npools = {{ backend = 9, canary = 1 }}\n[splits.s.rollback]\npool = \"canary\"\n");
    let c = ok(&format!("{base}max_tool_error_ratio = 0.1\n"));
    let rb = c.splits["s"].rollback.as_ref().unwrap();
    assert_eq!(
        (rb.max_5xx_ratio, rb.max_tool_error_ratio),
        (None, Some(0.1))
    );
    let errs = errors(&base);
    has(
        &errs,
        "splits.s.rollback.max_5xx_ratio",
        "or max_tool_error_ratio",
    );
    let errs = errors(&format!("{base}max_tool_error_ratio = 2\n"));
    has(
        &errs,
        "splits.s.rollback.max_tool_error_ratio",
        "must be in (0, 1]",
    );
}
