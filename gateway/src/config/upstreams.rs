//! Decoding of `[pools.NAME]`: servers, balancing, passive and active health, upstream TLS.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use toml::Value;

use super::defaults as d;
use super::model::*;
use super::reader::{type_name, Ctx, Section};
use super::units;

const POOL_KEYS: &[&str] = &[
    "balance",
    "hash_key",
    "servers",
    "resolve_interval",
    "keepalive",
    "max_fails",
    "fail_timeout",
    "tls",
    "tls_verify",
    "tls_sni",
    "ca_file",
    "health_check",
];

/// A name usable in a key path and as a metrics label.
pub fn check_name(ctx: &mut Ctx, key: &str, name: &str) -> bool {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        ctx.errs.add(
            key,
            format!("name {name:?} may only use letters, digits, '_' and '-'"),
        );
    }
    ok
}

pub fn pools(ctx: &mut Ctx, top: &Section) -> BTreeMap<String, Pool> {
    let mut out = BTreeMap::new();
    if !top.has("pools") {
        ctx.errs
            .add("pools", "missing: at least one [pools.NAME] is required");
        return out;
    }
    let list = top.named_tables(&mut ctx.errs, "pools");
    for (name, v) in list {
        let path = super::reader::join("pools", name);
        if !check_name(ctx, &path, name) {
            continue;
        }
        let Some(s) = Section::new(&mut ctx.errs, path, v, POOL_KEYS) else {
            continue;
        };
        if let Some(p) = pool(ctx, name, &s) {
            out.insert(name.to_string(), p);
        }
    }
    out
}

fn pool(ctx: &mut Ctx, name: &str, s: &Section) -> Option<Pool> {
    let e = &mut ctx.errs;
    let balance_text = s.str(e, "balance").unwrap_or("least_conn");
    let hash_key_text = s.str(e, "hash_key");
    let balance = match balance_text {
        "least_conn" => Some(Balance::LeastConn),
        "round_robin" => Some(Balance::RoundRobin),
        "hash" => hash_key(ctx, s, hash_key_text.unwrap_or("client_ip")).map(Balance::Hash),
        other => {
            ctx.errs.add(
                s.key("balance"),
                format!("{other:?} is not one of least_conn, round_robin, hash"),
            );
            None
        }
    };
    if balance_text != "hash" && hash_key_text.is_some() {
        ctx.errs
            .add(s.key("hash_key"), "only used with balance = \"hash\"");
    }

    let servers = servers(ctx, s);
    let e = &mut ctx.errs;
    let resolve_interval = s.duration_or(e, "resolve_interval", d::RESOLVE_INTERVAL);
    if resolve_interval.is_zero() {
        e.add(s.key("resolve_interval"), "must be greater than 0");
    }
    let keepalive = s.int_or(e, "keepalive", d::KEEPALIVE, 0, 100_000) as usize;
    let max_fails = s.int_or(e, "max_fails", d::MAX_FAILS, 0, 1_000_000) as u32;
    let fail_timeout = s.duration_or(e, "fail_timeout", d::FAIL_TIMEOUT);
    if max_fails > 0 && fail_timeout.is_zero() {
        e.add(
            s.key("fail_timeout"),
            "must be greater than 0 when max_fails > 0",
        );
    }

    let tls_on = s.bool_or(e, "tls", false);
    let verify = s.bool_or(e, "tls_verify", true);
    let sni = s.str(e, "tls_sni").unwrap_or("");
    let ca = s.str(e, "ca_file").unwrap_or("");
    if !sni.is_empty() && !units::is_host_name(sni) {
        e.add(s.key("tls_sni"), format!("{sni:?} is not a host name"));
    }
    if !tls_on {
        for k in ["tls_verify", "tls_sni", "ca_file"] {
            if s.has(k) {
                e.add(s.key(k), "only used with tls = true");
            }
        }
    }
    let ca_file = Some(ca).filter(|c| !c.is_empty()).map(|c| ctx.path(c));
    let ca_certs = match &ca_file {
        Some(path) if ctx.check_files && tls_on => {
            super::files::load_ca_file(&mut ctx.errs, &s.key("ca_file"), path)
        }
        _ => None,
    };
    let tls = tls_on.then(|| UpstreamTls {
        verify,
        sni: Some(sni.to_string()).filter(|s| !s.is_empty()),
        ca_file,
        ca: ca_certs,
    });

    let health_check = s
        .section(
            &mut ctx.errs,
            "health_check",
            &["path", "interval", "timeout", "rise", "fall"],
        )
        .map(|h| {
            let e = &mut ctx.errs;
            let path = h.str_or(e, "path", d::HC_PATH);
            if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
                e.add(
                    h.key("path"),
                    format!("{path:?} must be a path starting with \"/\""),
                );
            }
            let interval = h.duration_or(e, "interval", d::HC_INTERVAL);
            let timeout = h.duration_or(e, "timeout", d::HC_TIMEOUT);
            for (k, v) in [("interval", interval), ("timeout", timeout)] {
                if v.is_zero() {
                    e.add(h.key(k), "must be greater than 0");
                }
            }
            HealthCheck {
                path,
                interval,
                timeout,
                rise: h.int_or(e, "rise", d::HC_RISE, 1, 1000) as u32,
                fall: h.int_or(e, "fall", d::HC_FALL, 1, 1000) as u32,
            }
        });

    Some(Pool {
        name: name.to_string(),
        balance: balance?,
        servers,
        resolve_interval,
        keepalive,
        max_fails,
        fail_timeout,
        tls,
        health_check,
    })
}

fn hash_key(ctx: &mut Ctx, s: &Section, text: &str) -> Option<HashKey> {
    let key = s.key("hash_key");
    if text == "client_ip" {
        return Some(HashKey::ClientIp);
    }
    if let Some(h) = text.strip_prefix("header:") {
        if http::HeaderName::from_bytes(h.as_bytes()).is_ok() {
            return Some(HashKey::Header(h.to_string()));
        }
        ctx.errs
            .add(key, format!("{h:?} is not a valid header name"));
        return None;
    }
    if let Some(c) = text.strip_prefix("cookie:") {
        if is_cookie_name(c) {
            return Some(HashKey::Cookie(c.to_string()));
        }
        ctx.errs
            .add(key, format!("{c:?} is not a valid cookie name"));
        return None;
    }
    ctx.errs.add(
        key,
        format!("{text:?} is not one of client_ip, header:<Name>, cookie:<name>"),
    );
    None
}

/// An RFC 6265 cookie name (an HTTP token).
pub fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `servers = ["host:port", { address = "host:port", weight = 2 }, ...]`.
fn servers(ctx: &mut Ctx, s: &Section) -> Vec<UpstreamServer> {
    let mut out: Vec<UpstreamServer> = Vec::new();
    let skey = s.key("servers");
    let Some(list) = s.array(&mut ctx.errs, "servers") else {
        if !s.has("servers") {
            ctx.errs
                .add(skey, "missing (required): at least one server");
        }
        return out;
    };
    if list.is_empty() {
        ctx.errs
            .add(skey.clone(), "empty: at least one server is required");
    }
    for (i, v) in list.iter().enumerate() {
        let path = format!("{skey}[{i}]");
        let (address, weight, addr_key) = match v {
            Value::String(a) => (a.as_str(), 1, path.clone()),
            Value::Table(_) => {
                let Some(t) = Section::new(&mut ctx.errs, path.clone(), v, &["address", "weight"])
                else {
                    continue;
                };
                let w = t.int_or(&mut ctx.errs, "weight", 1, 1, 1000) as u32;
                let Some(a) = t.required_str(&mut ctx.errs, "address") else {
                    continue;
                };
                (a, w, t.key("address"))
            }
            other => {
                ctx.errs.add(
                    path,
                    format!(
                        "expected \"host:port\" or {{ address = \"host:port\", weight = N }}, found {}",
                        type_name(other)
                    ),
                );
                continue;
            }
        };
        let (host, port) = match units::parse_host_port(address) {
            Ok(hp) => hp,
            Err(reason) => {
                ctx.errs.add(addr_key, reason);
                continue;
            }
        };
        if out
            .iter()
            .any(|o| o.host.eq_ignore_ascii_case(&host) && o.port == port)
        {
            ctx.errs
                .add(addr_key, format!("duplicate server {address:?}"));
            continue;
        }
        let socket_addr = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        out.push(UpstreamServer {
            address: address.to_string(),
            host,
            port,
            weight,
            socket_addr,
        });
    }
    out
}
