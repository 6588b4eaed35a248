//! ALLOWED_HOSTS and ALLOWED_ORIGINS: which Host and Origin values the backend serves.

use super::ConfigError;
use std::net::IpAddr;

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

/// ALLOWED_HOSTS entries, or the default for the bind address when there are none.
pub(super) fn allowed_hosts_from(
    entries: &[String],
    bind: IpAddr,
) -> Result<AllowedHosts, ConfigError> {
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
