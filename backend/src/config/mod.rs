//! Start-up configuration from the environment, with the names the user's Node server used
//! (the existing Task MCP server and its compose files), so existing `.env` files keep working.
//!
//! Every value is checked once here; a bad one stops start-up with a message naming the
//! variable and the reason (exit code 2, see `main.rs`).

mod hosts;
mod oauth;
mod otel;
mod vars;

pub use hosts::{is_loopback_host, normalize_origin, parse_authority, AllowedHosts, HostPattern};
pub use oauth::{OAuthResource, OAUTH_METADATA_PATH};
pub use otel::Otel;
pub use vars::{help_text, VarDoc, VARS};

use hosts::allowed_hosts_from;
use oauth::oauth_from;
use otel::otel_from;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// DATABASE_URL: PostgreSQL instead of SQLite (secret: never logged as is).
    pub database_url: Option<String>,
    pub database_pool_size: usize,
    pub database_timeout: Duration,
    /// TRUSTED_CALLER_HEADER, lower case; None = callers come from tokens only.
    pub trusted_caller_header: Option<http::HeaderName>,
    /// OTEL_ENABLED and the OTLP exporter's variables; None = no spans.
    pub otel: Option<Otel>,
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
        let database_path = database_path_from(&get, &working_directory);
        let busy_ms = parse_num::<u64>(
            &var("DATABASE_BUSY_TIMEOUT_MS"),
            "DATABASE_BUSY_TIMEOUT_MS",
            5_000,
            0,
            600_000,
        )?;
        let database_url = var("DATABASE_URL");
        if let Some(url) = &database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError {
                    var: "DATABASE_URL",
                    reason: "must start with postgres:// or postgresql:// (SQLite is \
                             DATABASE_PATH)"
                        .into(),
                });
            }
        }
        let database_pool_size = parse_num::<usize>(
            &var("DATABASE_POOL_SIZE"),
            "DATABASE_POOL_SIZE",
            8,
            1,
            1_000,
        )?;
        let database_timeout_ms = parse_num::<u64>(
            &var("DATABASE_TIMEOUT_MS"),
            "DATABASE_TIMEOUT_MS",
            2_000,
            1,
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
        let otel = otel_from(&var)?;
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
            database_url,
            database_pool_size,
            database_timeout: Duration::from_millis(database_timeout_ms),
            trusted_caller_header,
            otel,
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

/// DATABASE_PATH exactly as the server reads it (unset or empty:
/// `<WORKING_DIRECTORY>/.mcp/store.sqlite3`), for the server and for `backup`/`restore`.
pub fn database_path_from(
    get: impl Fn(&str) -> Option<String>,
    working_directory: &std::path::Path,
) -> PathBuf {
    get("DATABASE_PATH")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| working_directory.join(".mcp").join("store.sqlite3"))
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

#[cfg(test)]
mod tests;
