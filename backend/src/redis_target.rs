//! The Redis settings of the distributed rate limit, read by `config`: REDIS_URL
//! (`redis://[[user]:password@]host[:port][/db]`), ENABLE_DISTRIBUTED_RATE_LIMIT,
//! REDIS_TIMEOUT_MS and RATE_LIMIT_REDIS_FAILURE. Errors are (variable, reason) pairs that
//! `config` turns into its `ConfigError`.

use std::time::Duration;

/// Where Redis is. The password never appears in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)?;
        if self.password.is_some() {
            write!(f, " (with password)")?;
        }
        Ok(())
    }
}

/// The distributed rate limit's settings, when it is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisRateLimit {
    pub target: RedisTarget,
    /// Longest wait for one check (connect included) before the failure mode applies.
    pub timeout: Duration,
    /// RATE_LIMIT_REDIS_FAILURE=open (true, the default) lets calls through while Redis is
    /// unreachable; closed refuses them with 503 UNAVAILABLE.
    pub fail_open: bool,
}

/// What the variables ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisChoice {
    /// No REDIS_URL: per-replica counting.
    Local,
    /// REDIS_URL set but ENABLE_DISTRIBUTED_RATE_LIMIT=false: per-replica counting, logged.
    Ignored,
    Redis(RedisRateLimit),
}

type VarError = (&'static str, String);

pub fn choice_from(get: impl Fn(&str) -> Option<String>) -> Result<RedisChoice, VarError> {
    let enabled = match get("ENABLE_DISTRIBUTED_RATE_LIMIT")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None => None,
        Some("true" | "1" | "yes" | "on") => Some(true),
        Some("false" | "0" | "no" | "off") => Some(false),
        Some(other) => {
            return Err((
                "ENABLE_DISTRIBUTED_RATE_LIMIT",
                format!("{:?} is not true or false", crate::bounded::bounded(other)),
            ))
        }
    };
    let timeout_ms = match get("REDIS_TIMEOUT_MS") {
        None => 200,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=60_000).contains(&n) => n,
            _ => {
                return Err((
                    "REDIS_TIMEOUT_MS",
                    format!(
                        "{:?} is not a whole number in 1..=60000",
                        crate::bounded::bounded(&v)
                    ),
                ))
            }
        },
    };
    let fail_open = match get("RATE_LIMIT_REDIS_FAILURE")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("open") => true,
        Some("closed") => false,
        Some(other) => {
            return Err((
                "RATE_LIMIT_REDIS_FAILURE",
                format!("{:?} is not open or closed", crate::bounded::bounded(other)),
            ))
        }
    };
    let url = get("REDIS_URL");
    match (url, enabled) {
        (None, Some(true)) => Err((
            "ENABLE_DISTRIBUTED_RATE_LIMIT",
            "is true but REDIS_URL is not set: set REDIS_URL=redis://host:port or \
             ENABLE_DISTRIBUTED_RATE_LIMIT=false"
                .into(),
        )),
        (None, _) => Ok(RedisChoice::Local),
        (Some(_), Some(false)) => Ok(RedisChoice::Ignored),
        (Some(url), _) => Ok(RedisChoice::Redis(RedisRateLimit {
            target: parse_url(&url).map_err(|reason| ("REDIS_URL", reason))?,
            timeout: Duration::from_millis(timeout_ms),
            fail_open,
        })),
    }
}

/// `redis://[[user]:password@]host[:port][/db]`; user and password percent-decoded.
pub fn parse_url(url: &str) -> Result<RedisTarget, String> {
    // The password stays out of error messages.
    let redacted = match url.rsplit_once('@') {
        Some((_, host)) => format!("redis://***@{host}"),
        None => url.to_string(),
    };
    let shown = || format!("{:?}", crate::bounded::bounded(&redacted));
    if url.starts_with("rediss://") {
        return Err(format!("{}: TLS (rediss://) is not supported", shown()));
    }
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("{} does not start with redis://", shown()))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = u.split_once(':').unwrap_or(("", u));
            let user = percent_decode(user).ok_or_else(|| format!("{}: bad %-escape", shown()))?;
            let pass = percent_decode(pass).ok_or_else(|| format!("{}: bad %-escape", shown()))?;
            (
                Some(user).filter(|u| !u.is_empty()),
                Some(pass).filter(|p| !p.is_empty()),
            )
        }
    };
    let (host, port) =
        host_port(hostport).ok_or_else(|| format!("{} has no valid host[:port]", shown()))?;
    let db = match path.split(['?', '#']).next().unwrap_or("") {
        "" => 0,
        d => d
            .parse::<u32>()
            .map_err(|_| format!("{}: the database {d:?} is not a number", shown()))?,
    };
    Ok(RedisTarget {
        host,
        port: port.unwrap_or(6379),
        db,
        username,
        password,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<std::net::Ipv6Addr>().ok()?;
            match after {
                "" => (ip, None),
                p => (ip, Some(p.strip_prefix(':')?)),
            }
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':');
    if host.is_empty() || !host.chars().all(ok_char) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p > 0)?),
    };
    Some((host.to_string(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn choice(pairs: &[(&str, &str)]) -> Result<RedisChoice, VarError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        choice_from(|k| m.get(k).cloned())
    }

    #[test]
    fn urls() {
        let t = parse_url("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("127.0.0.1", 6380, 2));
        assert_eq!(t.password, None);
        let t = parse_url("redis://:p%40ss@redis").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("redis", 6379, 0));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert!(!format!("{t:?}").contains("p@ss"), "no password in Debug");
        let t = parse_url("redis://user:pw@[::1]:7000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.username.as_deref()),
            ("::1", Some("user"))
        );
        assert!(parse_url("rediss://x").is_err());
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://x/db").is_err());
    }

    #[test]
    fn choices() {
        assert_eq!(choice(&[]), Ok(RedisChoice::Local));
        let err = choice(&[("ENABLE_DISTRIBUTED_RATE_LIMIT", "true")]).unwrap_err();
        assert_eq!(err.0, "ENABLE_DISTRIBUTED_RATE_LIMIT");
        assert!(err.1.contains("REDIS_URL"), "names both: {}", err.1);
        assert_eq!(
            choice(&[
                ("ENABLE_DISTRIBUTED_RATE_LIMIT", "false"),
                ("REDIS_URL", "redis://r")
            ]),
            Ok(RedisChoice::Ignored)
        );
        let RedisChoice::Redis(r) = choice(&[("REDIS_URL", "redis://r")]).unwrap() else {
            panic!("redis")
        };
        assert!(r.fail_open);
        assert_eq!(r.timeout, Duration::from_millis(200));
        let RedisChoice::Redis(r) = choice(&[
            ("REDIS_URL", "redis://r"),
            ("RATE_LIMIT_REDIS_FAILURE", "closed"),
            ("REDIS_TIMEOUT_MS", "50"),
        ])
        .unwrap() else {
            panic!("redis")
        };
        assert!(!r.fail_open);
        assert_eq!(r.timeout, Duration::from_millis(50));
        assert_eq!(
            choice(&[("RATE_LIMIT_REDIS_FAILURE", "maybe")])
                .unwrap_err()
                .0,
            "RATE_LIMIT_REDIS_FAILURE"
        );
    }
}
