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
        help: "address to bind (IPv4 or IPv6 literal)",
    },
    VarDoc {
        name: "WORKING_DIRECTORY",
        default: ".",
        help: "project root holding openspec/ (or the openspec/ folder itself)",
    },
    VarDoc {
        name: "AUTH_TOKENS",
        default: "(empty: auth off)",
        help: "comma-separated bearer tokens; health and metrics stay open",
    },
    VarDoc {
        name: "ALLOWED_ORIGINS",
        default: "(empty)",
        help: "comma-separated browser origins (scheme://host[:port]) for CORS and the Origin \
               check; * allows any; CORS_ORIGINS is read when unset",
    },
    VarDoc {
        name: "RATE_LIMIT",
        default: "0 (off)",
        help: "requests per minute per token (per client IP when auth is off)",
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
        help: "time limit of a writing tool call (change.archive, task.update): TIMEOUT after it",
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
];

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub working_directory: PathBuf,
    /// Empty = auth disabled.
    pub auth_tokens: Vec<String>,
    /// Normalised origins (lowercase, no trailing slash); `*` = any.
    pub allowed_origins: Vec<String>,
    /// Requests per minute per key; 0 = off.
    pub rate_limit: u32,
    pub heartbeat: Duration,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_level: log::LevelFilter,
    pub access_log: bool,
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
            Some(v) => v.parse().map_err(|_| ConfigError {
                var: "HOST",
                reason: format!("{v:?} is not an IP address (e.g. 0.0.0.0 or 127.0.0.1)"),
            })?,
        };
        let port = parse_num::<u16>(&var("PORT"), "PORT", 3000, 1, u16::MAX as u64)?;
        let working_directory = working_directory_from(&get);
        let auth_tokens = list(&var("AUTH_TOKENS"));
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
        let rate_limit = parse_num::<u32>(&var("RATE_LIMIT"), "RATE_LIMIT", 0, 0, 1_000_000_000)?;
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
        Ok(Config {
            host,
            port,
            working_directory,
            auth_tokens,
            allowed_origins,
            rate_limit,
            heartbeat: Duration::from_millis(heartbeat_ms),
            max_request_bytes: max_req_kb * 1024,
            max_response_bytes: max_resp_kb * 1024,
            request_timeout: Duration::from_millis(timeout_ms),
            shutdown_grace: Duration::from_millis(grace_ms),
            log_level,
            access_log,
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
}
