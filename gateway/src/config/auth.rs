//! Decoding of `[auth]` (named tokens, grants, `[auth.oauth]`) and of the route keys that
//! guard the edge (`allowed_origins`, `allowed_hosts`).

use toml::Value;

use super::defaults as d;
use super::files;
use super::model::*;
use super::reader::{Ctx, Errors, Section};

const AUTH_KEYS: &[&str] = &[
    "tokens_file",
    "upstream_token",
    "caller_header",
    "grants",
    "oauth",
];
const GRANT_KEYS: &[&str] = &["callers", "scopes", "methods", "tools"];
const OAUTH_KEYS: &[&str] = &[
    "resource",
    "authorization_servers",
    "issuer",
    "audiences",
    "jwks_file",
    "jwks_url",
    "jwks_refresh",
    "algorithms",
    "leeway",
    "scopes_supported",
    "scope_claim",
];

pub fn auth(ctx: &mut Ctx, v: Option<&Value>) -> Option<Auth> {
    let Some(v) = v else {
        return Some(Auth::default());
    };
    let s = Section::new(&mut ctx.errs, "auth".into(), v, AUTH_KEYS)?;
    let tokens_file = s.str(&mut ctx.errs, "tokens_file").map(|p| ctx.path(p));
    let tokens = match &tokens_file {
        Some(p) if ctx.check_files => {
            files::load_tokens(&mut ctx.errs, &s.key("tokens_file"), p).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let e = &mut ctx.errs;
    let upstream_token = match s.str(e, "upstream_token") {
        Some(t) if !is_token(t) => {
            e.add(
                s.key("upstream_token"),
                "not a bearer token (RFC 6750 token68 characters, no spaces)",
            );
            None
        }
        t => t.map(|t| Secret(t.to_string())),
    };
    let caller_header = match s.str(e, "caller_header") {
        Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_err() || h.is_empty() => {
            e.add(
                s.key("caller_header"),
                format!("{h:?} is not a header name"),
            );
            None
        }
        h => h.map(str::to_string),
    };
    let mut grants = Vec::new();
    if let Some(list) = s.array(e, "grants") {
        for (i, g) in list.iter().enumerate() {
            let key = format!("{}[{i}]", s.key("grants"));
            if let Some(g) = grant(e, key, g) {
                grants.push(g);
            }
        }
    }
    let oauth = match s.get("oauth") {
        None => None,
        Some(v) => oauth(ctx, s.key("oauth"), v),
    };
    Some(Auth {
        tokens_file,
        tokens,
        upstream_token,
        caller_header,
        grants,
        oauth,
    })
}

/// RFC 6750's `b64token`: what may follow `Bearer `.
pub fn is_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

fn strings(e: &mut Errors, s: &Section, k: &str, default: &[&str]) -> Vec<String> {
    match s.str_array(e, k) {
        Some(list) => list.into_iter().map(|(_, v)| v.to_string()).collect(),
        None => default.iter().map(|v| v.to_string()).collect(),
    }
}

fn grant(e: &mut Errors, key: String, v: &Value) -> Option<Grant> {
    let g = Section::new(e, key.clone(), v, GRANT_KEYS)?;
    let callers = strings(e, &g, "callers", &[]);
    let scopes = strings(e, &g, "scopes", &[]);
    if callers.is_empty() && scopes.is_empty() {
        e.add(
            key,
            "names nobody: set callers (token names, JWT subjects, \"*\") or scopes",
        );
    }
    let methods = strings(e, &g, "methods", &["*"]);
    for (i, m) in methods.iter().enumerate() {
        if m != "*" && !crate::mcp::is_method(m) {
            e.add(
                format!("{}[{i}]", g.key("methods")),
                format!("{m:?} is not an MCP method (or \"*\")"),
            );
        }
    }
    let tools = strings(e, &g, "tools", &["*"]);
    for (i, t) in tools.iter().enumerate() {
        let name = t.strip_suffix('*').unwrap_or(t);
        if name.contains('*') || (name.is_empty() && t != "*") {
            e.add(
                format!("{}[{i}]", g.key("tools")),
                format!("{t:?}: a tool name, a prefix ending in \"*\", or \"*\""),
            );
        }
    }
    Some(Grant {
        callers,
        scopes,
        methods,
        tools,
    })
}

/// An absolute http(s) URL without a fragment; plain http only for loopback hosts.
fn check_url(e: &mut Errors, key: &str, url: &str) -> bool {
    let parsed = url.parse::<http::Uri>();
    let ok = match &parsed {
        Ok(u) => match (u.scheme_str(), u.host()) {
            (Some("https"), Some(_)) => true,
            (Some("http"), Some(h)) => h == "localhost" || h.starts_with("127.") || h == "[::1]",
            _ => false,
        },
        Err(_) => false,
    };
    if !ok || url.contains('#') {
        e.add(
            key,
            format!("{url:?} is not an absolute https URL without a fragment"),
        );
    }
    ok
}

fn oauth(ctx: &mut Ctx, key: String, v: &Value) -> Option<OAuth> {
    let s = Section::new(&mut ctx.errs, key, v, OAUTH_KEYS)?;
    let e = &mut ctx.errs;
    let resource = s.required_str(e, "resource").map(str::to_string);
    if let Some(r) = &resource {
        check_url(e, &s.key("resource"), r);
    }
    let authorization_servers = strings(e, &s, "authorization_servers", &[]);
    if authorization_servers.is_empty() {
        e.add(
            s.key("authorization_servers"),
            "missing (required): at least one authorization server URL",
        );
    }
    for (i, a) in authorization_servers.iter().enumerate() {
        check_url(e, &format!("{}[{i}]", s.key("authorization_servers")), a);
    }
    let issuer = s
        .str(e, "issuer")
        .map(str::to_string)
        .or_else(|| authorization_servers.first().cloned())
        .unwrap_or_default();
    let audiences = match s.str_array(e, "audiences") {
        Some(list) => list.into_iter().map(|(_, v)| v.to_string()).collect(),
        None => resource.iter().cloned().collect(),
    };
    let jwks = match (s.str(e, "jwks_file"), s.str(e, "jwks_url")) {
        (Some(f), None) => Some(JwksSource::File(ctx.path(f))),
        (None, Some(u)) => {
            check_url(&mut ctx.errs, &s.key("jwks_url"), u);
            Some(JwksSource::Url(u.to_string()))
        }
        (Some(_), Some(_)) => {
            ctx.errs
                .add(s.path.clone(), "set either jwks_file or jwks_url, not both");
            None
        }
        (None, None) => {
            ctx.errs.add(
                s.key("jwks_file"),
                "missing (required): set jwks_file or jwks_url (the authorization server's keys)",
            );
            None
        }
    };
    let e = &mut ctx.errs;
    if let Some(JwksSource::File(p)) = &jwks {
        if ctx.check_files {
            files::load_jwks(e, &s.key("jwks_file"), p);
        }
    }
    let jwks_refresh = s.duration_or(e, "jwks_refresh", d::JWKS_REFRESH);
    if jwks_refresh < std::time::Duration::from_secs(10) {
        e.add(s.key("jwks_refresh"), "too short (10s at least)");
    }
    let algorithms = strings(e, &s, "algorithms", d::JWT_ALGORITHMS);
    for (i, a) in algorithms.iter().enumerate() {
        if crate::auth::jwt::Alg::parse(a).is_none() {
            e.add(
                format!("{}[{i}]", s.key("algorithms")),
                format!(
                    "{a:?} is not accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, \
                     ES384 or EdDSA (\"none\" and shared-secret HS* never are)"
                ),
            );
        }
    }
    if algorithms.is_empty() {
        e.add(s.key("algorithms"), "empty: name at least one algorithm");
    }
    let leeway = s.duration_or(e, "leeway", d::JWT_LEEWAY);
    let scopes_supported = strings(e, &s, "scopes_supported", &[]);
    let scope_claim = s.str_or(e, "scope_claim", "scope");
    let resource = resource?;
    let resource_path = resource
        .parse::<http::Uri>()
        .ok()
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    Some(OAuth {
        metadata_path: format!("{}{resource_path}", d::OAUTH_METADATA_PATH),
        resource,
        authorization_servers,
        issuer,
        audiences,
        jwks: jwks?,
        jwks_refresh,
        algorithms,
        leeway,
        scopes_supported,
        scope_claim,
    })
}

/// `allowed_origins`: `scheme://host[:port]` values, compared lower case.
pub fn origins(e: &mut Errors, s: &Section, k: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, o) in s.str_array(e, k).unwrap_or_default() {
        let lower = o.to_ascii_lowercase();
        let ok = lower.parse::<http::Uri>().ok().is_some_and(|u| {
            u.scheme().is_some() && u.host().is_some() && u.path() == "/" && !lower.ends_with('/')
        });
        if ok {
            out.push(lower);
        } else {
            e.add(
                key,
                format!("{o:?} is not an origin (scheme://host[:port], no path)"),
            );
        }
    }
    out
}

/// `allowed_hosts`: host names or IP literals without a port, compared lower case.
pub fn hosts(e: &mut Errors, s: &Section, k: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, h) in s.str_array(e, k).unwrap_or_default() {
        let lower = h.to_ascii_lowercase();
        let ip = lower.trim_start_matches('[').trim_end_matches(']');
        if super::units::is_host_name(&lower) || ip.parse::<std::net::IpAddr>().is_ok() {
            out.push(lower);
        } else {
            e.add(
                key,
                format!("{h:?} is not a host name (give it without a port)"),
            );
        }
    }
    out
}
