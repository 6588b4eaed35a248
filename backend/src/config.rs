//! Start-up configuration from the environment, with the names the user's Node server used
//! (the existing Task MCP server and its compose files), so existing `.env` files keep working.
//!
//! Every value is checked once here; a bad one stops start-up with a message naming the
//! variable and the reason (exit code 2, see `main.rs`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One documented variable: name, default (as shown by `--help`), meaning.
pub struct VarDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "PORT",
        default: "3000",
        help: "TCP port to listen on",
    },
    VarDoc {
        name: "HOST",
        default: "0.0.0.0",
        help: "address to bind (IPv4 or IPv6 literal, or localhost)",
    },
    VarDoc {
        name: "WORKING_DIRECTORY",
        default: ".",
        help: "project root holding openspec/ (or the openspec/ folder itself)",
    },
    VarDoc {
        name: "AUTH_TOKENS",
        default: "(empty: auth off)",
        help: "comma-separated bearer tokens, each `name:token` (the caller is name) or a bare \
               token (the caller is token-<8 hex of its SHA-256>); the todo tools keep each \
               caller's tasks apart; health and metrics stay open",
    },
    VarDoc {
        name: "ALLOWED_ORIGINS",
        default: "(empty: loopback only)",
        help: "comma-separated browser origins (scheme://host[:port]) for CORS and the Origin \
               check; * allows any; empty: loopback origins only (http(s)://localhost, \
               127.0.0.1, [::1], any port); CORS_ORIGINS is read when unset",
    },
    VarDoc {
        name: "ALLOWED_HOSTS",
        default: "(empty: follows HOST)",
        help: "comma-separated Host header values (host or host:port; no port: any port) \
               served, against DNS rebinding; * allows any; empty: loopback names only when \
               HOST is a loopback address, any Host otherwise",
    },
    VarDoc {
        name: "RATE_LIMIT",
        default: "0 (off)",
        help: "requests per minute per token (per client IP when auth is off)",
    },
    VarDoc {
        name: "REDIS_URL",
        default: "(empty: each replica counts alone)",
        help: "redis://[[user]:password@]host[:port][/db]: RATE_LIMIT counted once across all \
               replicas sharing this Redis (one atomic script per check, on Redis's clock)",
    },
    VarDoc {
        name: "ENABLE_DISTRIBUTED_RATE_LIMIT",
        default: "(empty: true when REDIS_URL is set)",
        help: "true/false; true requires REDIS_URL; false keeps per-replica counting even with \
               REDIS_URL set",
    },
    VarDoc {
        name: "REDIS_TIMEOUT_MS",
        default: "200",
        help: "longest wait for Redis per rate-limit check (connect included), then \
               RATE_LIMIT_REDIS_FAILURE applies",
    },
    VarDoc {
        name: "RATE_LIMIT_REDIS_FAILURE",
        default: "open",
        help: "when Redis is down or slow: open lets calls through, closed refuses them \
               (503 UNAVAILABLE, Retry-After: 1); counted in rate_limit_redis_errors_total",
    },
    VarDoc {
        name: "HEARTBEAT_MS",
        default: "25000",
        help: "SSE keep-alive comment interval in milliseconds",
    },
    VarDoc {
        name: "MAX_REQUEST_SIZE_KB",
        default: "1024",
        help: "largest accepted request body (larger: 413 PAYLOAD_TOO_LARGE)",
    },
    VarDoc {
        name: "MAX_RESPONSE_SIZE_KB",
        default: "1024",
        help: "largest tool result (larger: RESPONSE_TOO_LARGE error instead of the result)",
    },
    VarDoc {
        name: "REQUEST_TIMEOUT_MS",
        default: "30000",
        help: "time limit of a writing tool call (change.archive, task.update) and of every \
               todo call: TIMEOUT after it",
    },
    VarDoc {
        name: "SHUTDOWN_GRACE_MS",
        default: "10000",
        help: "on SIGTERM/SIGINT, how long calls and open streams may run before being closed",
    },
    VarDoc {
        name: "LOG_LEVEL",
        default: "info",
        help: "error, warn, info, debug or trace (program log on stderr)",
    },
    VarDoc {
        name: "ACCESS_LOG",
        default: "on",
        help: "on/off: one JSON line per request on stdout",
    },
    VarDoc {
        name: "OAUTH_RESOURCE",
        default: "(empty: no OAuth metadata)",
        help: "this MCP endpoint's URL as clients reach it (https://host/mcp): serves RFC 9728 \
               protected resource metadata and names it in 401 challenges",
    },
    VarDoc {
        name: "OAUTH_AUTHORIZATION_SERVERS",
        default: "(required with OAUTH_RESOURCE)",
        help: "comma-separated issuer URLs of the authorization servers for OAUTH_RESOURCE",
    },
    VarDoc {
        name: "OAUTH_SCOPES",
        default: "(empty)",
        help: "comma-separated scopes listed in the metadata (scopes_supported)",
    },
    VarDoc {
        name: "TOOLS",
        default: "openspec",
        help: "comma-separated tool families to serve: openspec (change.*, task.*, spec.*), \
               todo (list_tasks, create_task, mark_task_completed, update_task, delete_task: \
               per-caller tasks in a database); only these appear in tools/list and /tools",
    },
    VarDoc {
        name: "DATABASE_PATH",
        default: "<WORKING_DIRECTORY>/.mcp/store.sqlite3",
        help: "the todo family's SQLite file (WAL mode; shared by replicas on one volume; \
               migrated at start-up)",
    },
    VarDoc {
        name: "DATABASE_BUSY_TIMEOUT_MS",
        default: "5000",
        help: "how long a todo call waits for another writer's lock on the database, then \
               answers UNAVAILABLE",
    },
    VarDoc {
        name: "TRUSTED_CALLER_HEADER",
        default: "(none)",
        help: "a request header naming the caller, believed from loopback and private \
               addresses only (the gateway's [auth] caller_header) and only on a request whose \
               bearer token is valid: the caller the todo tools see behind the gateway",
    },
];

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub working_directory: PathBuf,
    /// Empty = auth disabled.
    pub auth_tokens: Vec<String>,
    /// Normalised origins (lowercase, no trailing slash); `*` = any; empty = loopback
    /// origins only.
    pub allowed_origins: Vec<String>,
    /// Which `Host` header values are served (DNS-rebinding protection).
    pub allowed_hosts: AllowedHosts,
    /// Requests per minute per key; 0 = off.
    pub rate_limit: u32,
    /// Where RATE_LIMIT is counted: per replica, or in Redis (REDIS_URL).
    pub rate_limit_redis: crate::redis_target::RedisChoice,
    pub heartbeat: Duration,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_level: log::LevelFilter,
    pub access_log: bool,
    /// OAuth protected resource metadata (RFC 9728), when OAUTH_RESOURCE is set.
    pub oauth: Option<OAuthResource>,
    /// The caller name of each of `auth_tokens`, index for index (`caller::split_entries`).
    pub auth_names: Vec<std::sync::Arc<str>>,
    /// TOOLS: the families served.
    pub tool_families: Vec<crate::tools::Family>,
    /// DATABASE_PATH: the todo store's SQLite file.
    pub database_path: PathBuf,
    pub database_busy_timeout: Duration,
    /// TRUSTED_CALLER_HEADER, lower case; None = callers come from tokens only.
    pub trusted_caller_header: Option<http::HeaderName>,
}

/// What the MCP authorization spec asks a protected MCP server to publish: its resource
/// identifier and the authorization servers that issue tokens for it (RFC 9728).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthResource {
    /// The resource identifier, as configured (`https://mcp.example.com/mcp`).
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes: Vec<String>,
    /// Where the metadata is published: `/.well-known/oauth-protected-resource` inserted
    /// between the resource's host and its path (RFC 9728 section 3.1).
    pub metadata_path: String,
    /// The metadata's absolute URL, for `WWW-Authenticate: Bearer resource_metadata="..."`.
    pub metadata_url: String,
}

pub const OAUTH_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// An absolute http(s) URL without fragment; http only for a loopback host (OAuth 2.1 wants
/// TLS elsewhere). Returns (scheme://authority, path).
fn oauth_url(var: &'static str, v: &str) -> Result<(String, String), ConfigError> {
    let bad = |why: &str| ConfigError {
        var,
        reason: format!("{:?} {why}", crate::bounded::bounded(v)),
    };
    let uri: http::Uri = v
        .parse()
        .map_err(|_| bad("is not a URL (write https://host[:port]/path)"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad(
            "is not an absolute URL (write https://host[:port]/path)",
        ));
    };
    if v.contains('#') {
        return Err(bad("has a fragment"));
    }
    let loopback = matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]");
    match scheme {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(bad("must be https (http only for localhost)")),
    }
    let path = uri.path().trim_end_matches('/').to_string();
    Ok((format!("{scheme}://{authority}"), path))
}

fn oauth_from(
    resource: Option<String>,
    servers: Vec<String>,
    scopes: Vec<String>,
) -> Result<Option<OAuthResource>, ConfigError> {
    let Some(resource) = resource else {
        if !servers.is_empty() {
            return Err(ConfigError {
                var: "OAUTH_AUTHORIZATION_SERVERS",
                reason: "is set without OAUTH_RESOURCE (the URL of this MCP endpoint)".into(),
            });
        }
        return Ok(None);
    };
    let (origin, path) = oauth_url("OAUTH_RESOURCE", &resource)?;
    if servers.is_empty() {
        return Err(ConfigError {
            var: "OAUTH_AUTHORIZATION_SERVERS",
            reason: "is required with OAUTH_RESOURCE: the issuer URL(s) of the authorization \
                     server(s)"
                .into(),
        });
    }
    for s in &servers {
        oauth_url("OAUTH_AUTHORIZATION_SERVERS", s)?;
    }
    let metadata_path = format!("{OAUTH_METADATA_PATH}{path}");
    Ok(Some(OAuthResource {
        metadata_url: format!("{origin}{metadata_path}"),
        metadata_path,
        resource,
        authorization_servers: servers,
        scopes,
    }))
}

/// Which `Host` header values the backend serves. The MCP spec (Streamable HTTP, "Security
/// Warning") asks servers to guard against DNS rebinding: a page on an attacker's name that
/// resolves to 127.0.0.1 reaches a local server with its own name in `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any Host: `ALLOWED_HOSTS=*`, or unset on a non-loopback bind (a container behind the
    /// gateway, which forwards the public name).
    Any,
    /// `localhost` and loopback IP literals, any port: unset on a loopback bind.
    Loopback,
    /// Exactly these (`ALLOWED_HOSTS`); loopback names are not added implicitly.
    List(Vec<HostPattern>),
}

/// One `ALLOWED_HOSTS` entry, normalised like [`parse_authority`]; no port matches any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: String,
    pub port: Option<u16>,
}

impl AllowedHosts {
    /// Whether a request's `Host` (or HTTP/2 `:authority`) value is served; a missing or
    /// malformed one is served only under [`AllowedHosts::Any`].
    pub fn allows(&self, value: Option<&str>) -> bool {
        if *self == AllowedHosts::Any {
            return true;
        }
        let Some((host, port)) = value.and_then(parse_authority) else {
            return false;
        };
        match self {
            AllowedHosts::Any => true,
            AllowedHosts::Loopback => is_loopback_host(&host),
            AllowedHosts::List(patterns) => patterns
                .iter()
                .any(|p| p.host == host && p.port.is_none_or(|want| port == Some(want))),
        }
    }
}

/// A rejected variable: which one and why.
#[derive(Debug)]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {}: {}", self.var, self.reason)
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // Unset and empty mean the same: compose files often pass `VAR=` through.
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let host = match var("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) if v.eq_ignore_ascii_case("localhost") => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v.parse().map_err(|_| ConfigError {
                var: "HOST",
                reason: format!("{v:?} is not an IP address (e.g. 0.0.0.0 or 127.0.0.1)"),
            })?,
        };
        let port = parse_num::<u16>(&var("PORT"), "PORT", 3000, 1, u16::MAX as u64)?;
        let working_directory = working_directory_from(&get);
        let (auth_tokens, auth_names) = crate::caller::split_entries(list(&var("AUTH_TOKENS")));
        let tool_families = families_from(var("TOOLS"))?;
        let trusted_caller_header = match var("TRUSTED_CALLER_HEADER") {
            None => None,
            Some(h) => Some(
                http::HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| ConfigError {
                    var: "TRUSTED_CALLER_HEADER",
                    reason: format!("{h:?} is not a header name"),
                })?,
            ),
        };
        let database_path = var("DATABASE_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| working_directory.join(".mcp").join("store.sqlite3"));
        let busy_ms = parse_num::<u64>(
            &var("DATABASE_BUSY_TIMEOUT_MS"),
            "DATABASE_BUSY_TIMEOUT_MS",
            5_000,
            0,
            600_000,
        )?;
        let allowed_origins = list(&var("ALLOWED_ORIGINS").or_else(|| var("CORS_ORIGINS")))
            .into_iter()
            .map(|o| normalize_origin(&o))
            .collect::<Vec<_>>();
        for origin in &allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError {
                    var: "ALLOWED_ORIGINS",
                    reason: format!("{origin:?} is not an origin: write scheme://host[:port] or *"),
                });
            }
        }
        let allowed_hosts = allowed_hosts_from(&list(&var("ALLOWED_HOSTS")), host)?;
        let rate_limit = parse_num::<u32>(&var("RATE_LIMIT"), "RATE_LIMIT", 0, 0, 1_000_000_000)?;
        let rate_limit_redis = crate::redis_target::choice_from(var)
            .map_err(|(var, reason)| ConfigError { var, reason })?;
        let heartbeat_ms =
            parse_num::<u64>(&var("HEARTBEAT_MS"), "HEARTBEAT_MS", 25_000, 100, 3_600_000)?;
        let max_req_kb = parse_num::<usize>(
            &var("MAX_REQUEST_SIZE_KB"),
            "MAX_REQUEST_SIZE_KB",
            1024,
            1,
            1024 * 1024,
        )?;
        let max_resp_kb = parse_num::<usize>(
            &var("MAX_RESPONSE_SIZE_KB"),
            "MAX_RESPONSE_SIZE_KB",
            1024,
            1,
            1024 * 1024,
        )?;
        let timeout_ms = parse_num::<u64>(
            &var("REQUEST_TIMEOUT_MS"),
            "REQUEST_TIMEOUT_MS",
            30_000,
            1,
            24 * 3_600_000,
        )?;
        let grace_ms = parse_num::<u64>(
            &var("SHUTDOWN_GRACE_MS"),
            "SHUTDOWN_GRACE_MS",
            10_000,
            0,
            3_600_000,
        )?;
        let log_level = match var("LOG_LEVEL") {
            None => log::LevelFilter::Info,
            Some(v) => v.parse().map_err(|_| ConfigError {
                var: "LOG_LEVEL",
                reason: format!("{v:?} is not one of off, error, warn, info, debug, trace"),
            })?,
        };
        let access_log = match var("ACCESS_LOG")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("on" | "true" | "1" | "yes") => true,
            Some("off" | "false" | "0" | "no") => false,
            Some(other) => {
                return Err(ConfigError {
                    var: "ACCESS_LOG",
                    reason: format!("{other:?} is not on or off"),
                })
            }
        };
        let oauth = oauth_from(
            var("OAUTH_RESOURCE"),
            list(&var("OAUTH_AUTHORIZATION_SERVERS")),
            list(&var("OAUTH_SCOPES")),
        )?;
        Ok(Config {
            host,
            port,
            working_directory,
            auth_tokens,
            allowed_origins,
            allowed_hosts,
            rate_limit,
            rate_limit_redis,
            heartbeat: Duration::from_millis(heartbeat_ms),
            max_request_bytes: max_req_kb * 1024,
            max_response_bytes: max_resp_kb * 1024,
            request_timeout: Duration::from_millis(timeout_ms),
            shutdown_grace: Duration::from_millis(grace_ms),
            log_level,
            access_log,
            oauth,
            auth_names,
            tool_families,
            database_path,
            database_busy_timeout: Duration::from_millis(busy_ms),
            trusted_caller_header,
        })
    }
}

/// WORKING_DIRECTORY exactly as the server reads it (unset or empty: `.`), for the
/// subcommands (`backup`, `restore`) that need nothing else from the environment.
pub fn working_directory_from(get: impl Fn(&str) -> Option<String>) -> PathBuf {
    let value = get("WORKING_DIRECTORY")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    PathBuf::from(value.unwrap_or_else(|| ".".into()))
}

fn parse_num<T>(
    value: &Option<String>,
    var: &'static str,
    default: T,
    min: u64,
    max: u64,
) -> Result<T, ConfigError>
where
    T: TryFrom<u64>,
{
    let Some(raw) = value else { return Ok(default) };
    let n: u64 = raw.parse().map_err(|_| ConfigError {
        var,
        reason: format!("{raw:?} is not a whole number"),
    })?;
    if n < min || n > max {
        return Err(ConfigError {
            var,
            reason: format!("{n} is outside {min}..={max}"),
        });
    }
    T::try_from(n).map_err(|_| ConfigError {
        var,
        reason: format!("{n} is too large"),
    })
}

/// TOOLS: known family names, at least one; unset: `openspec`.
fn families_from(value: Option<String>) -> Result<Vec<crate::tools::Family>, ConfigError> {
    use crate::tools::Family;
    let Some(value) = value else {
        return Ok(vec![Family::Openspec]);
    };
    let mut out = Vec::new();
    for name in list(&Some(value)) {
        let Some(f) = Family::parse(&name) else {
            let known: Vec<&str> = Family::ALL.iter().map(Family::as_str).collect();
            return Err(ConfigError {
                var: "TOOLS",
                reason: format!(
                    "unknown tool family {:?}: the families are {}",
                    crate::bounded::bounded(&name),
                    known.join(", ")
                ),
            });
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(ConfigError {
            var: "TOOLS",
            reason: "names no tool family".into(),
        });
    }
    Ok(out)
}

fn list(value: &Option<String>) -> Vec<String> {
    value
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// ALLOWED_HOSTS entries, or the default for the bind address when there are none.
fn allowed_hosts_from(entries: &[String], bind: IpAddr) -> Result<AllowedHosts, ConfigError> {
    if entries.is_empty() {
        return Ok(if bind.to_canonical().is_loopback() {
            AllowedHosts::Loopback
        } else {
            AllowedHosts::Any
        });
    }
    if entries.iter().any(|e| e == "*") {
        return Ok(AllowedHosts::Any);
    }
    let mut patterns = Vec::with_capacity(entries.len());
    for entry in entries {
        // A bare IPv6 literal (`::1`) cannot carry a port, so it is read whole.
        let parsed = match entry.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Some((format!("[{ip}]"), None)),
            Err(_) => parse_authority(entry),
        };
        let Some((host, port)) = parsed else {
            return Err(ConfigError {
                var: "ALLOWED_HOSTS",
                reason: format!(
                    "{entry:?} is not a host name: write host or host:port ([::1] for IPv6), or *"
                ),
            });
        };
        patterns.push(HostPattern { host, port });
    }
    Ok(AllowedHosts::List(patterns))
}

/// A `Host` header value, `host[:port]` (RFC 9110 section 7.2, the authority of RFC 3986
/// without userinfo), as (host, port): the host lowercase without a trailing dot, an IPv6
/// literal in brackets in its canonical form. `None` when malformed.
pub fn parse_authority(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim();
    let port_of = |p: &str| -> Option<u16> {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(port_of(p.strip_prefix(':')?)?),
        };
        return Some((format!("[{ip}]"), port));
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) => (h, Some(port_of(p)?)),
        None => (value, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if host.is_empty() || host.starts_with('.') || !host.chars().all(name_char) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// `localhost` or a loopback IP literal (127.0.0.0/8, `[::1]`), as [`parse_authority`]
/// writes hosts.
pub fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    literal
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Lowercase and without a trailing slash, so `https://App.example.com/` matches the browser's
/// `Origin: https://app.example.com`.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The text of `backend --help`.
pub fn help_text() -> String {
    let mut out = format!(
        "backend {} — MCP tool server over an OpenSpec workspace\n\n\
         Usage: backend [--help] [--version]\n\
         \x20      backend backup [--wait SECS] [FILE|-]\n\
         \x20      backend restore [--wait SECS] FILE|-\n\n\
         Serves MCP Streamable HTTP on /mcp, the 2024-11-05 HTTP+SSE transport on GET /sse and\n\
         POST /messages, the Task MCP API (POST /sse, POST /mcp NDJSON, GET /tools,\n\
         POST /tools/execute), health probes and /metrics.\n\n\
         backup   writes a gzip'd tar of the workspace (WORKING_DIRECTORY's openspec/ tree) with\n\
         \x20        a SHA-256 manifest to FILE (atomically) or stdout (-, the default), holding the\n\
         \x20        workspace lock so no archive or task write is half in it.\n\
         restore  verifies a backup from FILE or stdin (-) completely, then swaps it in for the\n\
         \x20        workspace under the lock; a refused archive leaves the workspace unchanged.\n\
         \x20        Both read only WORKING_DIRECTORY, wait up to --wait (default 30) seconds for\n\
         \x20        the lock, print a summary line on stderr and exit 0 done, 1 failed, 2 bad\n\
         \x20        arguments; `backend backup --help` says more.\n\n\
         Configuration (environment variables):\n",
        env!("CARGO_PKG_VERSION")
    );
    for v in VARS {
        out.push_str(&format!(
            "  {:<22} {}\n  {:<22} default: {}\n",
            v.name, v.help, "", v.default
        ));
    }
    out.push_str(
        "\nA bad value stops start-up with exit code 2 and a message naming the variable.\n",
    );
    out
}

#[cfg(test)]
mod tests {
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
        let e =
            oauth_from(Some("https://x/mcp".into()), vec!["ftp://a".into()], vec![]).unwrap_err();
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
}
