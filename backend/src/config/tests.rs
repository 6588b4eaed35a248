use super::*;

#[test]
fn oauth_metadata_location_follows_the_resource() {
    let o = oauth_from(
        Some("https://mcp.example.com/mcp/".into()),
        vec!["https://auth.example.com".into()],
        vec![],
    )
    .unwrap()
    .unwrap();
    assert_eq!(o.metadata_path, "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(
        o.metadata_url,
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    let o = oauth_from(
        Some("http://localhost:8080".into()),
        vec!["http://127.0.0.1:9000".into()],
        vec![],
    )
    .unwrap()
    .unwrap();
    assert_eq!(o.metadata_path, OAUTH_METADATA_PATH);
    assert_eq!(
        o.metadata_url,
        "http://localhost:8080/.well-known/oauth-protected-resource"
    );
    assert!(matches!(oauth_from(None, vec![], vec![]), Ok(None)));
    let e = oauth_from(
        Some("https://x/mcp#f".into()),
        vec!["https://a".into()],
        vec![],
    )
    .unwrap_err();
    assert_eq!(e.var, "OAUTH_RESOURCE");
    let e = oauth_from(Some("https://x/mcp".into()), vec!["ftp://a".into()], vec![]).unwrap_err();
    assert_eq!(e.var, "OAUTH_AUTHORIZATION_SERVERS");
}
use std::collections::HashMap;

fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_follow_the_seed() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.port, 3000);
    assert_eq!(c.heartbeat, Duration::from_millis(25_000));
    assert!(c.auth_tokens.is_empty());
    assert_eq!(c.rate_limit, 0);
}

#[test]
fn bad_values_name_the_variable() {
    let e = cfg(&[("PORT", "eighty")]).unwrap_err();
    assert_eq!(e.var, "PORT");
    let e = cfg(&[("HEARTBEAT_MS", "5")]).unwrap_err();
    assert_eq!(e.var, "HEARTBEAT_MS");
    let e = cfg(&[("ALLOWED_ORIGINS", "example.com")]).unwrap_err();
    assert_eq!(e.var, "ALLOWED_ORIGINS");
}

#[test]
fn lists_are_trimmed_and_origins_normalised() {
    let c = cfg(&[
        ("AUTH_TOKENS", " a, b ,,"),
        ("CORS_ORIGINS", "https://App.example.com/"),
    ])
    .unwrap();
    assert_eq!(c.auth_tokens, vec!["a", "b"]);
    assert_eq!(c.allowed_origins, vec!["https://app.example.com"]);
}

#[test]
fn tool_families_named_tokens_and_database() {
    use crate::tools::Family;
    let c = cfg(&[]).unwrap();
    assert_eq!(c.tool_families, vec![Family::Openspec]);
    assert!(c.database_path.ends_with(".mcp/store.sqlite3"));
    let c = cfg(&[
        ("TOOLS", "todo, openspec,todo"),
        ("AUTH_TOKENS", "alice:t1,t2"),
        ("DATABASE_PATH", "/tmp/x.db"),
    ])
    .unwrap();
    assert_eq!(c.tool_families, vec![Family::Todo, Family::Openspec]);
    assert_eq!(c.auth_tokens, vec!["t1", "t2"]);
    assert_eq!(&*c.auth_names[0], "alice");
    assert!(c.auth_names[1].starts_with("token-"));
    assert_eq!(c.database_path, std::path::PathBuf::from("/tmp/x.db"));
    let e = cfg(&[("TOOLS", "todo,memroy")]).unwrap_err();
    assert_eq!(e.var, "TOOLS");
    assert!(e.reason.contains("memroy"), "{}", e.reason);
    assert_eq!(c.trusted_caller_header, None);
    let c = cfg(&[("TRUSTED_CALLER_HEADER", "X-Gateway-Caller")]).unwrap();
    assert_eq!(
        c.trusted_caller_header.as_ref().map(|h| h.as_str()),
        Some("x-gateway-caller")
    );
    let e = cfg(&[("TRUSTED_CALLER_HEADER", "bad header")]).unwrap_err();
    assert_eq!(e.var, "TRUSTED_CALLER_HEADER");
}

fn pattern(host: &str, port: Option<u16>) -> HostPattern {
    HostPattern {
        host: host.to_string(),
        port,
    }
}

#[test]
fn allowed_hosts_default_follows_the_bind_address() {
    for loopback in ["127.0.0.1", "127.0.0.2", "::1", "localhost", "LocalHost"] {
        let c = cfg(&[("HOST", loopback)]).unwrap();
        assert_eq!(c.allowed_hosts, AllowedHosts::Loopback, "HOST={loopback}");
    }
    assert_eq!(
        cfg(&[("HOST", "localhost")]).unwrap().host,
        IpAddr::from([127, 0, 0, 1])
    );
    for public in ["0.0.0.0", "::", "10.1.2.3"] {
        let c = cfg(&[("HOST", public)]).unwrap();
        assert_eq!(c.allowed_hosts, AllowedHosts::Any, "HOST={public}");
    }
    // The default HOST is 0.0.0.0.
    assert_eq!(cfg(&[]).unwrap().allowed_hosts, AllowedHosts::Any);
    // Set but empty is unset.
    let c = cfg(&[("HOST", "127.0.0.1"), ("ALLOWED_HOSTS", " ")]).unwrap();
    assert_eq!(c.allowed_hosts, AllowedHosts::Loopback);
}

#[test]
fn allowed_hosts_entries_are_normalised() {
    let c = cfg(&[
        ("HOST", "127.0.0.1"),
        (
            "ALLOWED_HOSTS",
            " MCP.Example.com , api.example.com:8443,[::1]:3000,::1, 10.0.0.7, local. ",
        ),
    ])
    .unwrap();
    assert_eq!(
        c.allowed_hosts,
        AllowedHosts::List(vec![
            pattern("mcp.example.com", None),
            pattern("api.example.com", Some(8443)),
            pattern("[::1]", Some(3000)),
            pattern("[::1]", None),
            pattern("10.0.0.7", None),
            pattern("local", None),
        ])
    );
    // `*` anywhere in the list allows any Host, also on a loopback bind.
    let c = cfg(&[("HOST", "127.0.0.1"), ("ALLOWED_HOSTS", "a.example, *")]).unwrap();
    assert_eq!(c.allowed_hosts, AllowedHosts::Any);
}

#[test]
fn malformed_allowed_hosts_name_the_variable() {
    for bad in [
        "http://example.com",
        "example.com/mcp",
        "user@example.com",
        "example.com:http",
        "example.com:70000",
        "example.com:",
        "[::1",
        "[not-ip]:80",
        "two words",
        ":8080",
        "*.example.com",
    ] {
        let e = cfg(&[("ALLOWED_HOSTS", bad)]).unwrap_err();
        assert_eq!(e.var, "ALLOWED_HOSTS", "{bad}");
        assert!(e.to_string().starts_with("invalid ALLOWED_HOSTS: "), "{e}");
    }
}

#[test]
fn host_header_matching() {
    let lo = AllowedHosts::Loopback;
    for ok in [
        "localhost",
        "localhost:3000",
        "127.0.0.1:80",
        "[::1]:8080",
        "[::1]",
    ] {
        assert!(lo.allows(Some(ok)), "{ok}");
    }
    for refused in [
        "evil.example.com",
        "evil.example.com:3000",
        "localhost.evil.example.com",
        "127.0.0.1.nip.io",
        "evil@localhost",
        "",
    ] {
        assert!(!lo.allows(Some(refused)), "{refused:?}");
    }
    assert!(!lo.allows(None), "no Host at all");

    let list = AllowedHosts::List(vec![
        pattern("mcp.example.com", None),
        pattern("api.example.com", Some(8443)),
    ]);
    assert!(list.allows(Some("MCP.example.com.")));
    assert!(list.allows(Some("mcp.example.com:1234")));
    assert!(list.allows(Some("api.example.com:8443")));
    assert!(!list.allows(Some("api.example.com")));
    assert!(!list.allows(Some("api.example.com:443")));
    // A list replaces the loopback default.
    assert!(!list.allows(Some("localhost")));

    assert!(AllowedHosts::Any.allows(Some("anything.example")));
    assert!(AllowedHosts::Any.allows(None));
}

#[test]
fn database_url_and_pool_are_checked() {
    let e = cfg(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
    assert_eq!(e.var, "DATABASE_URL");
    assert!(e.reason.contains("postgres://"), "{}", e.reason);
    let e = cfg(&[("DATABASE_POOL_SIZE", "0")]).unwrap_err();
    assert_eq!(e.var, "DATABASE_POOL_SIZE");
    let e = cfg(&[("DATABASE_TIMEOUT_MS", "soon")]).unwrap_err();
    assert_eq!(e.var, "DATABASE_TIMEOUT_MS");
    let c = cfg(&[
        ("DATABASE_URL", "postgresql://u:p@db:5432/mcp"),
        ("DATABASE_POOL_SIZE", "4"),
    ])
    .unwrap();
    assert_eq!(
        c.database_url.as_deref(),
        Some("postgresql://u:p@db:5432/mcp")
    );
    assert_eq!(c.database_pool_size, 4);
    assert_eq!(c.database_timeout, Duration::from_millis(2000));
    let c = cfg(&[("TOOLS", "memory")]).unwrap();
    assert_eq!(c.tool_families, vec![crate::tools::Family::Memory]);
}

#[test]
fn otel_variables() {
    assert!(cfg(&[]).unwrap().otel.is_none());
    // Off: the others are not even read.
    let c = cfg(&[
        ("OTEL_ENABLED", "false"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "nonsense"),
    ])
    .unwrap();
    assert!(c.otel.is_none());
    let o = cfg(&[("OTEL_ENABLED", "true")]).unwrap().otel.unwrap();
    assert_eq!(o.endpoint.url, "http://localhost:4318/v1/traces");
    assert_eq!(o.service_name, crate::SERVICE_NAME);
    assert_eq!(o.timeout, Duration::from_secs(10));
    let o = cfg(&[
        ("OTEL_ENABLED", "TRUE"),
        ("OTEL_SERVICE_NAME", "task-mcp-http"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://otel-collector:4318/v1/traces",
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
    ])
    .unwrap()
    .otel
    .unwrap();
    assert_eq!(o.endpoint.url, "http://otel-collector:4318/v1/traces");
    assert_eq!(o.service_name, "task-mcp-http");
    assert_eq!(o.timeout, Duration::from_millis(2500));
    let o = cfg(&[
        ("OTEL_ENABLED", "1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
    ])
    .unwrap()
    .otel
    .unwrap();
    assert_eq!(o.endpoint.url, "http://collector:4318/v1/traces");

    let e = cfg(&[("OTEL_ENABLED", "maybe")]).unwrap_err();
    assert_eq!(e.var, "OTEL_ENABLED");
    let e = cfg(&[
        ("OTEL_ENABLED", "true"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://x/v1/traces"),
    ])
    .unwrap_err();
    assert_eq!(e.var, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    assert!(e.reason.contains("https is not supported"), "{}", e.reason);
    let e = cfg(&[
        ("OTEL_ENABLED", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "x"),
    ])
    .unwrap_err();
    assert_eq!(e.var, "OTEL_EXPORTER_OTLP_ENDPOINT");
    let e = cfg(&[
        ("OTEL_ENABLED", "true"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "5"),
    ])
    .unwrap_err();
    assert_eq!(e.var, "OTEL_EXPORTER_OTLP_TIMEOUT");
}
