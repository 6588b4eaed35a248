//! Decoding of traffic policy: `[zones.NAME]`, `[splits.NAME]` and `[[routes]]`, including the
//! cross-references between them and the pools.

use std::collections::BTreeMap;

use toml::Value;

use super::defaults as d;
use super::model::*;
use super::reader::{header_table, type_name, Ctx, Section};
use super::units;
use super::upstreams::{check_name, is_cookie_name};

/// Names declared in the file under a top-level table (`pools`, `zones`, `splits`), whether or
/// not they decoded cleanly: a reference to a declared but broken pool is not "unknown" (the
/// pool's own errors are reported).
pub struct Declared(Vec<String>);

impl Declared {
    pub fn of(top: &Section, table: &str) -> Self {
        Declared(
            top.get(table)
                .and_then(Value::as_table)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default(),
        )
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|n| n == name)
    }

    /// "known: a, b" for error messages.
    fn known(&self) -> String {
        if self.0.is_empty() {
            "none defined".to_string()
        } else {
            format!("known: {}", self.0.join(", "))
        }
    }
}

pub fn zones(ctx: &mut Ctx, top: &Section) -> BTreeMap<String, Zone> {
    let mut out = BTreeMap::new();
    for (name, v) in top.named_tables(&mut ctx.errs, "zones") {
        let path = super::reader::join("zones", name);
        if !check_name(ctx, &path, name) {
            continue;
        }
        let Some(s) = Section::new(&mut ctx.errs, path, v, &["key", "rate", "size", "status"])
        else {
            continue;
        };
        let e = &mut ctx.errs;
        let key_text = s.str(e, "key").unwrap_or("client_ip");
        let key = match key_text {
            "client_ip" => Some(LimitKey::ClientIp),
            "bearer" => Some(LimitKey::Bearer),
            "caller" => Some(LimitKey::Caller),
            other => match other.strip_prefix("header:") {
                Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                    Some(LimitKey::Header(h.to_string()))
                }
                _ => {
                    e.add(
                        s.key("key"),
                        format!("{other:?} is not one of client_ip, bearer, caller, header:<Name>"),
                    );
                    None
                }
            },
        };
        let rate = s.required_str(e, "rate").and_then(|r| {
            units::parse_rate(r)
                .map_err(|reason| e.add(s.key("rate"), reason))
                .ok()
        });
        let size = s.size_or(e, "size", d::ZONE_SIZE);
        if size < d::ZONE_MIN_SIZE {
            e.add(
                s.key("size"),
                format!("{size} bytes is too small (at least 32k, like nginx)"),
            );
        }
        let status = s.int_or(e, "status", d::ZONE_STATUS, 400, 599) as u16;
        if let (Some(key), Some(rate)) = (key, rate) {
            out.insert(
                name.to_string(),
                Zone {
                    name: name.to_string(),
                    key,
                    rate,
                    size,
                    status,
                },
            );
        }
    }
    out
}

const SPLIT_KEYS: &[&str] = &["pools", "sticky", "cookie", "force_header", "rollback"];

pub fn splits(ctx: &mut Ctx, top: &Section) -> BTreeMap<String, Split> {
    let pools = Declared::of(top, "pools");
    let mut out = BTreeMap::new();
    for (name, v) in top.named_tables(&mut ctx.errs, "splits") {
        let path = super::reader::join("splits", name);
        if !check_name(ctx, &path, name) {
            continue;
        }
        if pools.has(name) {
            // A route names either `pool` or `split`, so one name for both is only confusing.
            ctx.errs
                .add(path.clone(), "a pool has the same name; use distinct names");
        }
        let Some(s) = Section::new(&mut ctx.errs, path, v, SPLIT_KEYS) else {
            continue;
        };
        if let Some(split) = split(ctx, name, &s, &pools) {
            out.insert(name.to_string(), split);
        }
    }
    out
}

fn split(ctx: &mut Ctx, name: &str, s: &Section, pools: &Declared) -> Option<Split> {
    let mut weights: Vec<(String, u32)> = Vec::new();
    let pkey = s.key("pools");
    match s.get("pools") {
        None => ctx
            .errs
            .add(pkey.clone(), "missing (required): pool name -> weight"),
        Some(Value::Table(t)) => {
            for (pool, w) in t {
                let key = super::reader::join(&pkey, pool);
                if !pools.has(pool) {
                    ctx.errs.add(
                        key.clone(),
                        format!("unknown pool {pool:?} ({})", pools.known()),
                    );
                }
                match w {
                    Value::Integer(i) if (0..=1_000_000).contains(i) => {
                        weights.push((pool.clone(), *i as u32))
                    }
                    Value::Integer(i) => ctx
                        .errs
                        .add(key, format!("weight {i} is out of range (0..=1000000)")),
                    other => ctx.errs.add(
                        key,
                        format!("expected an integer weight, found {}", type_name(other)),
                    ),
                }
            }
            if t.is_empty() {
                ctx.errs.add(pkey.clone(), "empty: name at least one pool");
            } else if weights.len() == t.len() && weights.iter().all(|(_, w)| *w == 0) {
                ctx.errs
                    .add(pkey.clone(), "weights sum to 0: at least one must be > 0");
            }
        }
        Some(other) => ctx.errs.add(
            pkey.clone(),
            format!(
                "expected a table like {{ stable = 90, canary = 10 }}, found {}",
                type_name(other)
            ),
        ),
    }

    let e = &mut ctx.errs;
    let sticky_text = s.str(e, "sticky").unwrap_or("cookie");
    let sticky = match sticky_text {
        "cookie" => Some(Sticky::Cookie),
        "bearer" => Some(Sticky::Bearer),
        "client_ip" => Some(Sticky::ClientIp),
        "none" => Some(Sticky::None),
        other => {
            match other.strip_prefix("header:") {
                Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                    Some(Sticky::Header(h.to_string()))
                }
                _ => {
                    e.add(
                    s.key("sticky"),
                    format!("{other:?} is not one of cookie, bearer, client_ip, header:<Name>, none"),
                );
                    None
                }
            }
        }
    };
    let cookie = s.str_or(e, "cookie", d::SPLIT_COOKIE);
    if !is_cookie_name(&cookie) {
        e.add(
            s.key("cookie"),
            format!("{cookie:?} is not a valid cookie name"),
        );
    }
    let force = s.str_or(e, "force_header", d::SPLIT_FORCE_HEADER);
    if !force.is_empty() && http::HeaderName::from_bytes(force.as_bytes()).is_err() {
        e.add(
            s.key("force_header"),
            format!("{force:?} is not a valid header name"),
        );
    }

    let rollback = s
        .section(
            &mut ctx.errs,
            "rollback",
            &[
                "pool",
                "max_5xx_ratio",
                "max_tool_error_ratio",
                "window",
                "min_requests",
            ],
        )
        .and_then(|r| {
            let e = &mut ctx.errs;
            let pool = r.required_str(e, "pool");
            if let Some(p) = pool {
                if !weights.iter().any(|(n, _)| n == p) {
                    e.add(
                        r.key("pool"),
                        format!("{p:?} is not one of this split's pools"),
                    );
                }
            }
            let mut ratio = |k: &str| {
                let x = r.float(e, k)?;
                if !(x > 0.0 && x <= 1.0) {
                    e.add(r.key(k), format!("{x} must be in (0, 1]"));
                }
                Some(x)
            };
            let max_5xx_ratio = ratio("max_5xx_ratio");
            let max_tool_error_ratio = ratio("max_tool_error_ratio");
            if !r.has("max_5xx_ratio") && !r.has("max_tool_error_ratio") {
                e.add(
                    r.key("max_5xx_ratio"),
                    "missing (required): a ratio in (0, 1], or max_tool_error_ratio",
                );
            }
            let window = r.duration_or(e, "window", d::ROLLBACK_WINDOW);
            if window.is_zero() {
                e.add(r.key("window"), "must be greater than 0");
            }
            let min_requests = r.int_or(
                e,
                "min_requests",
                d::ROLLBACK_MIN_REQUESTS,
                1,
                u32::MAX.into(),
            );
            Some(Rollback {
                pool: pool?.to_string(),
                max_5xx_ratio,
                max_tool_error_ratio,
                window,
                min_requests,
            })
        });

    Some(Split {
        name: name.to_string(),
        pools: weights,
        sticky: sticky?,
        cookie,
        force_header: Some(force).filter(|f| !f.is_empty()),
        rollback,
    })
}

const ROUTE_KEYS: &[&str] = &[
    "name",
    "path",
    "host",
    "pool",
    "split",
    "stream",
    "mcp",
    "mcp_peek",
    "mcp_limits",
    "auth",
    "allowed_origins",
    "allowed_hosts",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "idle_timeout",
    "max_body_size",
    "retries",
    "limit",
    "headers",
];

pub fn routes(ctx: &mut Ctx, top: &Section, headers: &Option<Headers>) -> Vec<Route> {
    let refs = Refs {
        pools: Declared::of(top, "pools"),
        zones: Declared::of(top, "zones"),
        splits: Declared::of(top, "splits"),
    };
    let mut out: Vec<Route> = Vec::new();
    let list = match top.get("routes") {
        None => {
            ctx.errs
                .add("routes", "missing: at least one [[routes]] is required");
            return out;
        }
        Some(Value::Array(a)) => a,
        Some(other) => {
            ctx.errs.add(
                "routes",
                format!(
                    "expected an array of tables ([[routes]]), found {}",
                    type_name(other)
                ),
            );
            return out;
        }
    };
    if list.is_empty() {
        ctx.errs
            .add("routes", "empty: at least one route is required");
    }
    let global_headers = headers.as_ref().map(|h| h.set.clone()).unwrap_or_default();
    for (i, v) in list.iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(s) = Section::new(&mut ctx.errs, path, v, ROUTE_KEYS) else {
            continue;
        };
        let Some(r) = route(ctx, &s, &refs, &global_headers) else {
            continue;
        };
        if let Some(j) = out.iter().position(|o| o.name == r.name) {
            ctx.errs.add(
                s.key("name"),
                format!(
                    "duplicate route name {:?} (also {})",
                    r.name,
                    route_index(&out, j, list)
                ),
            );
        }
        if let Some(j) = out
            .iter()
            .position(|o| o.path == r.path && o.host == r.host)
        {
            ctx.errs.add(
                s.key("path"),
                format!(
                    "duplicate route for path {:?}{} (also {})",
                    r.path,
                    r.host
                        .as_ref()
                        .map(|h| format!(" on host {h:?}"))
                        .unwrap_or_default(),
                    route_index(&out, j, list)
                ),
            );
        }
        out.push(r);
    }
    out
}

/// "routes[j]" for an earlier decoded route. Decoded routes may skip failed ones, so find its
/// index in the file by name and path.
fn route_index(out: &[Route], j: usize, list: &[Value]) -> String {
    let r = &out[j];
    let idx = list.iter().position(|v| {
        v.get("path").and_then(Value::as_str) == Some(r.path.as_str())
            && v.get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| n == r.name)
    });
    match idx {
        Some(i) => format!("routes[{i}]"),
        None => "an earlier route".to_string(),
    }
}

/// What a route may refer to.
struct Refs {
    pools: Declared,
    zones: Declared,
    splits: Declared,
}

fn route(
    ctx: &mut Ctx,
    s: &Section,
    refs: &Refs,
    global_headers: &[(String, String)],
) -> Option<Route> {
    let e = &mut ctx.errs;
    let path = s.required_str(e, "path");
    if let Some(p) = path {
        if let Err(reason) = units::check_route_path(units::split_exact(p).1) {
            e.add(s.key("path"), reason);
        }
    }
    let name = s.str(e, "name").or(path).unwrap_or("").to_string();
    if s.has("name") && name.trim().is_empty() {
        e.add(s.key("name"), "empty name");
    }
    let host = match s.str(e, "host") {
        None | Some("") => None,
        Some(h) => {
            if h.contains(':') {
                e.add(
                    s.key("host"),
                    format!("{h:?}: give the host without a port"),
                );
            } else if !units::is_host_name(h) {
                e.add(s.key("host"), format!("{h:?} is not a host name"));
            }
            Some(h.to_ascii_lowercase())
        }
    };

    let target = match (s.str(e, "pool"), s.str(e, "split")) {
        (Some(_), Some(_)) => {
            e.add(s.path.clone(), "set either pool or split, not both");
            None
        }
        (None, None) => {
            e.add(s.key("pool"), "missing (required): set pool or split");
            None
        }
        (Some(p), None) => {
            if !refs.pools.has(p) {
                e.add(
                    s.key("pool"),
                    format!("unknown pool {p:?} ({})", refs.pools.known()),
                );
            }
            Some(RouteTarget::Pool(p.to_string()))
        }
        (None, Some(sp)) => {
            if !refs.splits.has(sp) {
                e.add(
                    s.key("split"),
                    format!("unknown split {sp:?} ({})", refs.splits.known()),
                );
            }
            Some(RouteTarget::Split(sp.to_string()))
        }
    };

    let stream = s.bool_or(e, "stream", false);
    let mcp = s.bool_or(e, "mcp", false);
    let mcp_peek = s.size_or(e, "mcp_peek", d::MCP_PEEK);
    if mcp_peek > d::MCP_PEEK {
        e.add(
            s.key("mcp_peek"),
            format!("{mcp_peek} is over the 64k the request body can be replayed from"),
        );
    }
    let auth = s.bool_or(e, "auth", false);
    let allowed_origins = super::auth::origins(e, s, "allowed_origins");
    let allowed_hosts = super::auth::hosts(e, s, "allowed_hosts");
    for k in ["mcp_peek", "mcp_limits"] {
        if s.has(k) && !mcp {
            e.add(s.key(k), "only on an MCP route (mcp = true)");
        }
    }
    let read_default = if stream {
        d::STREAM_READ_TIMEOUT
    } else {
        d::READ_TIMEOUT
    };
    let connect_timeout = s.duration_or(e, "connect_timeout", d::CONNECT_TIMEOUT);
    let read_timeout = s.duration_or(e, "read_timeout", read_default);
    let write_timeout = s.duration_or(e, "write_timeout", d::WRITE_TIMEOUT);
    let idle_timeout = s.duration_or(e, "idle_timeout", d::IDLE_TIMEOUT);
    for (k, v) in [
        ("connect_timeout", connect_timeout),
        ("read_timeout", read_timeout),
        ("write_timeout", write_timeout),
    ] {
        if v.is_zero() {
            e.add(s.key(k), "must be greater than 0");
        }
    }
    let max_body_size = s.size_or(e, "max_body_size", d::MAX_BODY_SIZE);
    let retries = s.int_or(e, "retries", d::RETRIES, 0, 10) as u32;

    let limit = match s.get("limit") {
        None => None,
        Some(v) => route_limit(ctx, &s.key("limit"), v, &refs.zones),
    };
    let mcp_limits = mcp_limits(ctx, s, &refs.zones);

    let response_headers = merge_headers(global_headers, &route_header_overrides(ctx, s));

    Some(Route {
        name,
        path: path?.to_string(),
        host,
        target: target?,
        stream,
        mcp,
        mcp_peek,
        mcp_limits,
        auth,
        allowed_origins,
        allowed_hosts,
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        max_body_size,
        retries,
        limit,
        response_headers,
    })
}

fn route_header_overrides(ctx: &mut Ctx, s: &Section) -> Vec<(String, String)> {
    if !s.has("headers") {
        return Vec::new();
    }
    header_table(&mut ctx.errs, s, "headers")
}

/// Route overrides replace global headers of the same (case-insensitive) name in place; an
/// empty value removes the header; new names are appended.
pub fn merge_headers(
    global: &[(String, String)],
    own: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = global.to_vec();
    for (name, value) in own {
        match out.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(i) if value.is_empty() => {
                out.remove(i);
            }
            Some(i) => out[i] = (name.clone(), value.clone()),
            None if value.is_empty() => {}
            None => out.push((name.clone(), value.clone())),
        }
    }
    out
}

/// `mcp_limits = [{ tool = "change.archive", zone = "z", burst, nodelay | delay }, { method =
/// "tools/list", zone = ... }]`.
fn mcp_limits(ctx: &mut Ctx, s: &Section, zones: &Declared) -> Vec<McpLimit> {
    let Some(list) = s.array(&mut ctx.errs, "mcp_limits") else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let key = format!("{}[{i}]", s.key("mcp_limits"));
        let Some(l) = Section::new(
            &mut ctx.errs,
            key.clone(),
            v,
            &["tool", "method", "zone", "burst", "nodelay", "delay"],
        ) else {
            continue;
        };
        let e = &mut ctx.errs;
        let selector = match (l.str(e, "tool"), l.str(e, "method")) {
            (Some(t), None) if !t.is_empty() => Some(McpSelector::Tool(t.to_string())),
            (None, Some(m)) if crate::mcp::is_method(m) => Some(McpSelector::Method(m.to_string())),
            (None, Some(m)) => {
                e.add(l.key("method"), format!("{m:?} is not an MCP method"));
                None
            }
            (Some(_), Some(_)) => {
                e.add(key.clone(), "set either tool or method, not both");
                None
            }
            _ => {
                e.add(l.key("tool"), "missing (required): set tool or method");
                None
            }
        };
        let limit = route_limit_section(ctx, &l, zones);
        if let (Some(selector), Some(limit)) = (selector, limit) {
            out.push(McpLimit { selector, limit });
        }
    }
    out
}

fn route_limit(ctx: &mut Ctx, key: &str, v: &Value, zones: &Declared) -> Option<RouteLimit> {
    let l = Section::new(
        &mut ctx.errs,
        key.to_string(),
        v,
        &["zone", "burst", "nodelay", "delay"],
    )?;
    route_limit_section(ctx, &l, zones)
}

/// `zone`, `burst`, `nodelay` | `delay` of a limit table (nginx's limit_req).
fn route_limit_section(ctx: &mut Ctx, l: &Section, zones: &Declared) -> Option<RouteLimit> {
    let e = &mut ctx.errs;
    let zone = l.required_str(e, "zone");
    if let Some(z) = zone {
        if !zones.has(z) {
            e.add(
                l.key("zone"),
                format!("unknown zone {z:?} ({})", zones.known()),
            );
        }
    }
    let burst = l.int_or(e, "burst", 0, 0, 1_000_000) as u32;
    let nodelay = l.bool_or(e, "nodelay", false);
    let delay = if l.has("delay") {
        let n = l.int_or(e, "delay", 0, 0, 1_000_000) as u32;
        if nodelay {
            e.add(
                l.key("delay"),
                "set either nodelay = true or delay = N, not both",
            );
        }
        LimitDelay::AfterExcess(n)
    } else if nodelay {
        LimitDelay::NoDelay
    } else {
        LimitDelay::AfterExcess(0)
    };
    Some(RouteLimit {
        zone: zone?.to_string(),
        burst,
        delay,
    })
}
