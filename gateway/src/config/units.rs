//! Parsing of the value syntaxes the config accepts: nginx-style durations and sizes, request
//! rates, CIDR blocks and `host:port` upstream addresses. Every function returns the reason a
//! value is wrong as a plain sentence; the caller adds the key path.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Parses an nginx-style duration: `"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`, combinations such
/// as `"1h 30m"` or `"1m30s"`, and a bare number meaning seconds (`"86400"`).
/// Units: ms, s, m, h, d, w (nginx also has M and y; a gateway timeout never needs them).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{text:?} is not a duration (use e.g. \"500ms\", \"30s\", \"5m\", \"24h\" or integer seconds)")
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
            "w" => Duration::from_secs(n.checked_mul(604_800).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses an nginx-style size: `"512"`, `"1k"`, `"10m"`, `"1g"` (base 1024, either case).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size (use e.g. \"512\", \"64k\", \"10m\", \"1g\" or integer bytes)"
        )
    };
    let s = text.trim();
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)
}

/// A request rate as `limit_req_zone rate=` takes it: a whole number of requests per second or
/// per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per `per`.
    pub requests: u64,
    pub per: RatePer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePer {
    Second,
    Minute,
}

impl Rate {
    /// The rate the way nginx stores it: milli-requests per second (`10r/s` → 10000,
    /// `30r/m` → 500). nginx's leaky bucket drains `rate * elapsed_ms / 1000` milli-requests.
    pub fn milli_per_sec(&self) -> u64 {
        match self.per {
            RatePer::Second => self.requests * 1000,
            RatePer::Minute => self.requests * 1000 / 60,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per {
            RatePer::Second => "s",
            RatePer::Minute => "m",
        };
        write!(f, "{}r/{unit}", self.requests)
    }
}

/// Parses `"<n>r/s"` or `"<n>r/m"` with n ≥ 1 (nginx rejects a zero rate; a rate too small to
/// register in milli-requests per second, like `0r/m`, is refused the same way).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad = || format!("{text:?} must be <n>r/s or <n>r/m");
    let s = text.trim();
    let (num, per) = if let Some(n) = s.strip_suffix("r/s") {
        (n, RatePer::Second)
    } else if let Some(n) = s.strip_suffix("r/m") {
        (n, RatePer::Minute)
    } else {
        return Err(bad());
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let requests: u64 = num.parse().map_err(|_| bad())?;
    if requests == 0 {
        return Err(format!("{text:?}: the rate must be at least 1 request"));
    }
    // Keep rate * elapsed_ms far from overflow in the limiter (1e9 r/s is absurd anyway).
    if requests > 1_000_000_000 {
        return Err(format!("{text:?}: rate too large"));
    }
    Ok(Rate { requests, per })
}

/// An IP network, as in `set_real_ip_from 10.0.0.0/8`. A bare address means a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address with the host bits cleared.
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// True when `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, how
    /// a dual-stack socket reports IPv4 peers) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask_v4(u32::from(a), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask_v6(u128::from(a), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask_v4(a: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(a: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(prefix)))
    }
}

/// Parses `"10.0.0.0/8"`, `"127.0.0.1"`, `"fd00::/8"`. Host bits set below the prefix are an
/// error (nginx only warns; a typo like 10.1.0.0/8 usually means the operator meant /16).
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let s = text.trim();
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("{text:?}: prefix length must be 0..={max}")),
        },
    };
    let network = match ip {
        IpAddr::V4(a) => IpAddr::V4(mask_v4(u32::from(a), prefix).into()),
        IpAddr::V6(a) => IpAddr::V6(mask_v6(u128::from(a), prefix).into()),
    };
    if network != ip {
        return Err(format!(
            "{text:?} has host bits set (did you mean \"{network}/{prefix}\"?)"
        ));
    }
    Ok(Cidr { network, prefix })
}

/// Parses a listener address `ip:port` (`"0.0.0.0:443"`, `"[::]:443"`). Port 0 is refused: the
/// operator must know where the gateway listens.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not ip:port (e.g. \"0.0.0.0:443\" or \"[::]:443\")"))?;
    if addr.port() == 0 {
        return Err(format!("{text:?}: port 0 is not allowed"));
    }
    Ok(addr)
}

/// Splits an upstream address `host:port` (`"127.0.0.1:3001"`, `"backend:3000"`,
/// `"[::1]:3000"`) and checks both halves.
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let s = text.trim();
    let not = |why: &str| format!("{text:?} is not host:port ({why})");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| not("IPv6 addresses go in brackets: [::1]:3000"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(not("bad IPv6 address"));
        }
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(|| not("missing port"))?
    };
    if host.is_empty() {
        return Err(not("missing host"));
    }
    if !s.starts_with('[') && !is_host_name(host) && host.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(not("bad host name"));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not("port must be a number"));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok((host.to_string(), p as u16)),
        _ => Err(not("port out of range")),
    }
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_` (compose service
/// names use underscores), none empty or longer than 63, 253 in all.
/// A route's `path`: a prefix, or `= /exact` (nginx's `location =`, the space optional).
pub fn split_exact(path: &str) -> (bool, &str) {
    match path.strip_prefix('=') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, path),
    }
}

/// Checks the path part of a route's `path`. Requests are matched after normalisation (dot
/// segments resolved, `//` merged, escapes decoded: RFC 3986 section 6.2.2), so a route path
/// that is not in that form could never match.
pub fn check_route_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} must start with \"/\" (or \"= /\" for an exact match)"
        ));
    }
    if p.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
    {
        return Err(format!("{p:?} is not a path (no spaces, '?' or '#')"));
    }
    if p.contains('%') {
        return Err(format!(
            "{p:?}: write characters as themselves, not %-escaped (requests are matched decoded)"
        ));
    }
    if p.contains("//") || p[1..].split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "{p:?} is not a normalised path (no \"//\", \".\" or \"..\" segments: requests are matched normalised)"
        ));
    }
    Ok(())
}

pub fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_nginx_style() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("86400"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "s", "10x", "-5s", "1.5s", "ten", "5 m s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_base_1024() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("10m"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        for bad in ["", "k", "1kb", "-1", "1.5m", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rates_per_second_and_minute() {
        let r = parse_rate("10r/s").unwrap();
        assert_eq!(r.milli_per_sec(), 10_000);
        assert_eq!(r.to_string(), "10r/s");
        assert_eq!(parse_rate("30r/m").unwrap().milli_per_sec(), 500);
        // nginx truncates: 1r/m is 16 milli-requests per second.
        assert_eq!(parse_rate("1r/m").unwrap().milli_per_sec(), 16);
        for bad in ["10r/h", "10", "r/s", "0r/s", "1.5r/s", "10 r/s", "-1r/s"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_rate("10r/h").unwrap_err(),
            "\"10r/h\" must be <n>r/s or <n>r/m"
        );
    }

    #[test]
    fn cidrs_match_and_reject_host_bits() {
        let c = parse_cidr("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        let one = parse_cidr("127.0.0.1").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = parse_cidr("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(parse_cidr("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(parse_cidr("10.1.0.0/8").unwrap_err().contains("10.0.0.0/8"));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "10.0.0.0/", "::/129"] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_port_addresses() {
        assert_eq!(
            parse_host_port("127.0.0.1:3001"),
            Ok(("127.0.0.1".into(), 3001))
        );
        assert_eq!(
            parse_host_port("backend:3000"),
            Ok(("backend".into(), 3000))
        );
        assert_eq!(parse_host_port("[::1]:3000"), Ok(("::1".into(), 3000)));
        assert_eq!(
            parse_host_port("task_mcp-1.internal:8443"),
            Ok(("task_mcp-1.internal".into(), 8443))
        );
        assert_eq!(
            parse_host_port("x:99999").unwrap_err(),
            "\"x:99999\" is not host:port (port out of range)"
        );
        for bad in [
            "backend", ":3000", "host:", "host:0", "ho st:1", "::1:3000", "[zz]:1",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_listen_addr("0.0.0.0:443").is_ok());
        assert!(parse_listen_addr("[::]:443").is_ok());
        assert!(parse_listen_addr("localhost:443").is_err());
        assert!(parse_listen_addr("127.0.0.1:0").is_err());
    }
}
