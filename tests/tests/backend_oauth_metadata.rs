//! OAuth 2.0 Protected Resource Metadata (RFC 9728) as the MCP authorization spec uses it: with
//! OAUTH_RESOURCE set, the backend publishes its metadata (open, like the probes) and names it
//! in every 401's `WWW-Authenticate`; without it, the well-known path is a plain 404 (never a
//! 401 a client would try to authorize against); a bad setting stops start-up naming the
//! variable.

use std::process::Command;

use e2e::{bin, curl, workspace_copy, Backend};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";

#[test]
fn metadata_is_published_and_named_in_the_401_challenge() {
    let ws = workspace_copy();
    let b = Backend::start(
        ws.path(),
        &[
            ("AUTH_TOKENS", "secret"),
            ("OAUTH_RESOURCE", RESOURCE),
            ("OAUTH_AUTHORIZATION_SERVERS", ISSUER),
            ("OAUTH_SCOPES", "tools:read, tools:write"),
        ],
    );
    // Both the path-suffixed form (RFC 9728 section 3.1) and the bare one, without a token.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let out = curl(&[&format!("{}{path}", b.url)]);
        assert_eq!(out.status, 200, "{path}: {}", out.body);
        assert!(out
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")));
        let m = out.json();
        assert_eq!(m["resource"], RESOURCE, "{m}");
        assert_eq!(m["authorization_servers"][0], ISSUER, "{m}");
        assert_eq!(m["bearer_methods_supported"][0], "header", "{m}");
        assert_eq!(m["scopes_supported"][1], "tools:write", "{m}");
    }
    let other = curl(&[&format!(
        "{}/.well-known/oauth-protected-resource/other",
        b.url
    )]);
    assert_eq!(other.status, 404, "{}", other.body);

    let metadata = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
    // No token, and a wrong one: 401 naming the metadata (RFC 9728 section 5.1).
    for extra in [vec![], vec!["-H", "Authorization: Bearer wrong"]] {
        let out = e2e::mcp_post(
            &format!("{}/mcp", b.url),
            None,
            &extra,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        );
        assert_eq!(out.status, 401, "{}", out.body);
        let challenge = out.header("www-authenticate").expect("WWW-Authenticate");
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(
            challenge.contains(&format!("resource_metadata=\"{metadata}\"")),
            "{challenge}"
        );
        assert_eq!(challenge.contains("invalid_token"), !extra.is_empty());
    }
    // The right static token still works.
    let out = curl(&[
        "-H",
        "Authorization: Bearer secret",
        &format!("{}/tools", b.url),
    ]);
    assert_eq!(out.status, 200, "{}", out.body);
}

#[test]
fn without_oauth_the_well_known_path_is_a_404_not_a_401() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("AUTH_TOKENS", "secret")]);
    let out = curl(&[&format!("{}/.well-known/oauth-protected-resource", b.url)]);
    assert_eq!(out.status, 404, "{}", out.body);
    assert_eq!(out.json()["error"]["code"], "NOT_FOUND");
    let out = curl(&[&format!("{}/tools", b.url)]);
    assert_eq!(out.status, 401);
    assert_eq!(
        out.header("www-authenticate"),
        Some("Bearer realm=\"task-mcp\"")
    );
}

#[test]
fn bad_oauth_settings_stop_start_up_naming_the_variable() {
    for (env, var) in [
        (
            vec![("OAUTH_RESOURCE", "mcp.example.com/mcp")],
            "OAUTH_RESOURCE",
        ),
        (
            vec![
                ("OAUTH_RESOURCE", "mcp.example.com/mcp"),
                ("OAUTH_AUTHORIZATION_SERVERS", ISSUER),
            ],
            "OAUTH_RESOURCE",
        ),
        (
            vec![
                ("OAUTH_RESOURCE", "http://mcp.example.com/mcp"),
                ("OAUTH_AUTHORIZATION_SERVERS", ISSUER),
            ],
            "OAUTH_RESOURCE",
        ),
        (
            vec![("OAUTH_RESOURCE", RESOURCE)],
            "OAUTH_AUTHORIZATION_SERVERS",
        ),
        (
            vec![("OAUTH_AUTHORIZATION_SERVERS", ISSUER)],
            "OAUTH_AUTHORIZATION_SERVERS",
        ),
    ] {
        let ws = workspace_copy();
        let mut cmd = Command::new(bin("backend"));
        cmd.env_clear()
            .env("PORT", e2e::free_port().to_string())
            .env("HOST", "127.0.0.1")
            .env("WORKING_DIRECTORY", ws.path());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("backend");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {var}")),
            "{env:?}: {stderr}"
        );
    }
}
