//! Decoding of the top level and the process-wide sections (`[server]`, `[listeners.*]`,
//! `[headers]`, `[gzip]`, `[real_ip]`). Pools, zones, splits and routes live in their own files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::Table;

use super::defaults as d;
use super::model::*;
use super::reader::{header_table, Ctx, Section};
use super::{files, routes, units, upstreams};

const TOP_KEYS: &[&str] = &[
    "server",
    "listeners",
    "headers",
    "gzip",
    "real_ip",
    "limits",
    "pools",
    "zones",
    "splits",
    "auth",
    "tracing",
    "routes",
];

/// Decodes the whole document. Returns None only when errors were recorded.
pub fn config(ctx: &mut Ctx, root: &Table, file: PathBuf) -> Option<Config> {
    let top = Section::from_table(&mut ctx.errs, String::new(), root, TOP_KEYS);
    let empty = toml::Value::Table(Table::new());

    let server = server(ctx, top.get("server").unwrap_or(&empty));
    let listeners = listeners(ctx, &top);
    let headers = headers(ctx, top.get("headers").unwrap_or(&empty));
    let gzip = gzip(ctx, top.get("gzip").unwrap_or(&empty));
    let real_ip = real_ip(ctx, top.get("real_ip").unwrap_or(&empty));
    let limits = limits(ctx, top.get("limits").unwrap_or(&empty));
    let pools = upstreams::pools(ctx, &top);
    let zones = routes::zones(ctx, &top);
    let splits = routes::splits(ctx, &top);
    let auth = super::auth::auth(ctx, top.get("auth"));
    let tracing = tracing(ctx, top.get("tracing").unwrap_or(&empty));
    let routes = routes::routes(ctx, &top, &headers);
    if let Some(a) = auth
        .as_ref()
        .filter(|a| a.tokens_file.is_none() && a.oauth.is_none())
    {
        for (i, r) in routes.iter().enumerate().filter(|(_, r)| r.auth) {
            ctx.errs.add(
                format!("routes[{i}].auth"),
                format!(
                    "route {:?} requires a caller, but [auth] names none: set auth.tokens_file or [auth.oauth]",
                    r.name
                ),
            );
        }
        if !a.grants.is_empty() {
            ctx.errs.add(
                "auth.grants",
                "grants without callers: set auth.tokens_file or [auth.oauth]",
            );
        }
    }

    if !ctx.errs.list.is_empty() {
        return None;
    }
    Some(Config {
        file,
        server: server?,
        listeners: listeners?,
        headers: headers?,
        gzip: gzip?,
        real_ip: real_ip?,
        limits: limits?,
        pools,
        zones,
        splits,
        auth: auth?,
        tracing: tracing?,
        routes,
    })
}

/// `[tracing]`: the OTLP export of the gateway's spans.
fn tracing(ctx: &mut Ctx, v: &toml::Value) -> Option<Tracing> {
    let allowed = ["otlp_traces_endpoint", "service_name", "export_timeout"];
    let s = Section::new(&mut ctx.errs, "tracing".into(), v, &allowed)?;
    let e = &mut ctx.errs;
    let otlp_traces_endpoint = match s.str(e, "otlp_traces_endpoint") {
        None => None,
        Some(url) => match otlp::Endpoint::parse(url) {
            Ok(ep) => Some(ep),
            Err(why) => {
                e.add(s.key("otlp_traces_endpoint"), why);
                None
            }
        },
    };
    let service_name = s.str_or(e, "service_name", "gateway");
    if service_name.trim().is_empty() {
        e.add(s.key("service_name"), "empty");
    }
    let export_timeout = s.duration_or(e, "export_timeout", otlp::export::DEFAULT_TIMEOUT);
    if export_timeout < Duration::from_millis(100) {
        e.add(
            s.key("export_timeout"),
            format!("{export_timeout:?} is too short (100ms at least)"),
        );
    }
    Some(Tracing {
        otlp_traces_endpoint,
        service_name,
        export_timeout,
    })
}

fn limits(ctx: &mut Ctx, v: &toml::Value) -> Option<Limits> {
    let allowed = [
        "header_line_size",
        "header_total_size",
        "strict_request_target",
        "client_header_timeout",
        "client_body_timeout",
        "send_timeout",
        "keepalive_timeout",
        "keepalive_requests",
    ];
    let s = Section::new(&mut ctx.errs, "limits".into(), v, &allowed)?;
    let e = &mut ctx.errs;
    let line = s.size_or(e, "header_line_size", d::HEADER_LINE_SIZE);
    let total = s.size_or(e, "header_total_size", d::HEADER_TOTAL_SIZE);
    for (k, n) in [("header_line_size", line), ("header_total_size", total)] {
        if !(1024..=d::HEADER_MAX_SIZE).contains(&n) {
            e.add(
                s.key(k),
                format!("{n} bytes is out of range (1k up to 1m - 1, Pingora's own limit)"),
            );
        }
    }
    if line > total {
        e.add(
            s.key("header_line_size"),
            format!("{line} bytes is more than header_total_size ({total})"),
        );
    }
    let header_timeout = s.duration_or(e, "client_header_timeout", d::CLIENT_HEADER_TIMEOUT);
    let body_timeout = s.duration_or(e, "client_body_timeout", d::CLIENT_BODY_TIMEOUT);
    let send_timeout = s.duration_or(e, "send_timeout", d::SEND_TIMEOUT);
    for (k, t) in [
        ("client_header_timeout", header_timeout),
        ("client_body_timeout", body_timeout),
        ("send_timeout", send_timeout),
    ] {
        if t < Duration::from_millis(100) {
            e.add(s.key(k), format!("{t:?} is too short (100ms at least)"));
        }
    }
    let keepalive_timeout = s.duration_or(e, "keepalive_timeout", d::KEEPALIVE_TIMEOUT);
    if !keepalive_timeout.is_zero() && keepalive_timeout < Duration::from_secs(1) {
        e.add(
            s.key("keepalive_timeout"),
            format!(
                "{keepalive_timeout:?} is too short (0 turns keep-alive off, else 1s at least)"
            ),
        );
    }
    let keepalive_requests = s.int_or(
        e,
        "keepalive_requests",
        d::KEEPALIVE_REQUESTS,
        1,
        u32::MAX as u64,
    ) as u32;
    Some(Limits {
        header_line_size: line as usize,
        header_total_size: total as usize,
        strict_request_target: s.bool_or(e, "strict_request_target", true),
        client_header_timeout: header_timeout,
        client_body_timeout: body_timeout,
        send_timeout,
        keepalive_timeout,
        keepalive_requests,
    })
}

/// A JSON-lines log's target: "stdout", "off" or a file path (its directory must exist).
fn log_target(ctx: &mut Ctx, s: &Section, k: &str, default: &str) -> AccessLog {
    match s.str(&mut ctx.errs, k).unwrap_or(default) {
        "stdout" => AccessLog::Stdout,
        "off" => AccessLog::Off,
        "" => {
            ctx.errs
                .add(s.key(k), "empty (use \"stdout\", \"off\" or a file path)");
            AccessLog::Off
        }
        path => {
            let p = ctx.path(path);
            if ctx.check_files {
                files::check_log_dir(&mut ctx.errs, &s.key(k), &p);
            }
            AccessLog::File(p)
        }
    }
}

fn server(ctx: &mut Ctx, v: &toml::Value) -> Option<Server> {
    let allowed = [
        "threads",
        "grace_period",
        "pid_file",
        "upgrade_sock",
        "access_log",
        "audit_log",
        "error_log",
        "error_log_level",
        "worker_rlimit_nofile",
    ];
    let s = Section::new(&mut ctx.errs, "server".into(), v, &allowed)?;
    let e = &mut ctx.errs;
    let threads = s.int_or(e, "threads", d::THREADS, 1, 1024) as usize;
    let worker_rlimit_nofile = s
        .has("worker_rlimit_nofile")
        .then(|| s.int_or(e, "worker_rlimit_nofile", 0, 64, 16 * 1024 * 1024));
    let grace_period = s.duration_or(e, "grace_period", d::GRACE_PERIOD);
    let pid_file = s.str_or(e, "pid_file", d::PID_FILE);
    let upgrade_sock = s.str_or(e, "upgrade_sock", d::UPGRADE_SOCK);
    let access_log = log_target(ctx, &s, "access_log", "stdout");
    let audit_log = log_target(ctx, &s, "audit_log", "off");
    let error_log = match s.str(&mut ctx.errs, "error_log") {
        None => None,
        Some("") => {
            ctx.errs.add(
                s.key("error_log"),
                "empty (omit it for stderr, or give a file path)",
            );
            None
        }
        Some(path) => {
            let p = ctx.path(path);
            if ctx.check_files {
                files::check_log_dir(&mut ctx.errs, &s.key("error_log"), &p);
            }
            Some(p)
        }
    };
    let e = &mut ctx.errs;
    let level = s.str(e, "error_log_level").unwrap_or("info");
    let error_log_level = match level.to_ascii_lowercase().as_str() {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => {
            e.add(
                s.key("error_log_level"),
                format!("{level:?} is not one of off, error, warn, info, debug, trace"),
            );
            log::LevelFilter::Info
        }
    };
    for (k, p) in [("pid_file", &pid_file), ("upgrade_sock", &upgrade_sock)] {
        if p.is_empty() {
            ctx.errs.add(s.key(k), "empty path");
        }
    }
    Some(Server {
        threads,
        grace_period,
        pid_file: ctx.path(&pid_file),
        upgrade_sock: ctx.path(&upgrade_sock),
        access_log,
        audit_log,
        error_log,
        error_log_level,
        worker_rlimit_nofile,
    })
}

fn listen_addr(ctx: &mut Ctx, s: &Section) -> Option<std::net::SocketAddr> {
    let text = s.required_str(&mut ctx.errs, "address")?;
    units::parse_listen_addr(text)
        .map_err(|e| ctx.errs.add(s.key("address"), e))
        .ok()
}

fn listeners(ctx: &mut Ctx, top: &Section) -> Option<Listeners> {
    let Some(l) = top.section(&mut ctx.errs, "listeners", &["http", "https", "admin"]) else {
        if !top.has("listeners") {
            ctx.errs.add(
                "listeners",
                "missing: at least one of [listeners.http] or [listeners.https] is required",
            );
        }
        return None;
    };
    if !l.has("http") && !l.has("https") {
        ctx.errs.add(
            "listeners",
            "at least one of [listeners.http] or [listeners.https] is required",
        );
    }

    let https = l
        .section(
            &mut ctx.errs,
            "https",
            &[
                "address",
                "cert",
                "key",
                "http2",
                "min_tls",
                "ciphers",
                "session_timeout",
                "stapling_file",
            ],
        )
        .map(|s| https(ctx, &s));
    let https_port = https
        .as_ref()
        .and_then(|h| h.as_ref())
        .map_or(443, |h| h.address.port());

    let http = l
        .section(
            &mut ctx.errs,
            "http",
            &["address", "redirect_https", "https_port", "redirect_exempt"],
        )
        .map(|s| {
            let address = listen_addr(ctx, &s);
            let e = &mut ctx.errs;
            let redirect_https = s.bool_or(e, "redirect_https", true);
            let https_port = s.int_or(e, "https_port", u64::from(https_port), 1, 65535) as u16;
            let redirect_exempt = match s.str_array(e, "redirect_exempt") {
                None => d::REDIRECT_EXEMPT.iter().map(|p| p.to_string()).collect(),
                Some(list) => list
                    .into_iter()
                    .filter_map(|(key, p)| {
                        if p.starts_with('/') {
                            Some(p.to_string())
                        } else {
                            e.add(key, format!("{p:?} must start with \"/\""));
                            None
                        }
                    })
                    .collect(),
            };
            Some(HttpListener {
                address: address?,
                redirect_https,
                https_port,
                redirect_exempt,
            })
        });

    let admin = l
        .section(&mut ctx.errs, "admin", &["address"])
        .map(|s| listen_addr(ctx, &s).map(|address| AdminListener { address }));

    // Two listeners on one socket would fail at bind time with a less helpful message.
    let mut seen: Vec<(&str, std::net::SocketAddr)> = Vec::new();
    let addrs = [
        (
            "http",
            http.as_ref().and_then(|h| h.as_ref()).map(|h| h.address),
        ),
        (
            "https",
            https.as_ref().and_then(|h| h.as_ref()).map(|h| h.address),
        ),
        (
            "admin",
            admin.as_ref().and_then(|h| h.as_ref()).map(|h| h.address),
        ),
    ];
    for (name, addr) in addrs {
        let Some(addr) = addr else { continue };
        if let Some((other, _)) = seen
            .iter()
            .find(|(_, a)| a.port() == addr.port() && overlaps(*a, addr))
        {
            ctx.errs.add(
                format!("listeners.{name}.address"),
                format!("{addr} is also used by listeners.{other}"),
            );
        }
        seen.push((name, addr));
    }

    Some(Listeners {
        http: match http {
            Some(h) => Some(h?),
            None => None,
        },
        https: match https {
            Some(h) => Some(h?),
            None => None,
        },
        admin: match admin {
            Some(a) => Some(a?),
            None => None,
        },
    })
}

/// Same port and either the same IP or one of them the wildcard of the same family.
fn overlaps(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.ip() == b.ip()
        || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

fn https(ctx: &mut Ctx, s: &Section) -> Option<HttpsListener> {
    let address = listen_addr(ctx, s);
    let e = &mut ctx.errs;
    let cert = s.required_str(e, "cert");
    let key = s.required_str(e, "key");
    let http2 = s.bool_or(e, "http2", true);
    let min_tls = match s.str(e, "min_tls").unwrap_or("1.2") {
        "1.2" => TlsVersion::Tls12,
        "1.3" => TlsVersion::Tls13,
        other => {
            e.add(
                s.key("min_tls"),
                format!("{other:?} is not supported (use \"1.2\" or \"1.3\"; older versions are insecure)"),
            );
            TlsVersion::Tls12
        }
    };
    let ciphers = s.str_or(e, "ciphers", d::MOZILLA_INTERMEDIATE_CIPHERS);
    if ciphers.trim().is_empty() {
        e.add(
            s.key("ciphers"),
            "empty cipher list (omit the key for Mozilla intermediate)",
        );
    }
    let session_timeout = s.duration_or(e, "session_timeout", d::TLS_SESSION_TIMEOUT);
    if !ciphers.trim().is_empty() {
        files::check_ciphers(e, &s.key("ciphers"), &ciphers);
    }
    for (k, v) in [("cert", cert), ("key", key)] {
        if v == Some("") {
            e.add(s.key(k), "empty path");
        }
    }
    let stapling = s.str(e, "stapling_file");
    if stapling == Some("") {
        e.add(
            s.key("stapling_file"),
            "empty path (omit the key for no stapling)",
        );
    }
    let cert = cert.filter(|c| !c.is_empty()).map(|c| ctx.path(c));
    let key = key.filter(|k| !k.is_empty()).map(|k| ctx.path(k));
    let stapling_file = stapling.filter(|p| !p.is_empty()).map(|p| ctx.path(p));
    let material = match (&cert, &key) {
        (Some(c), Some(k)) if ctx.check_files => {
            files::load_cert_key(&mut ctx.errs, &s.key("cert"), c, &s.key("key"), k).and_then(
                |mut ck| {
                    if let Some(f) = &stapling_file {
                        let k = s.key("stapling_file");
                        ck.ocsp = Some(files::load_ocsp(&mut ctx.errs, &k, f, &ck.chain)?);
                    }
                    Some(Arc::new(ck))
                },
            )
        }
        _ => None,
    };
    Some(HttpsListener {
        address: address?,
        cert: cert?,
        key: key?,
        http2,
        min_tls,
        ciphers,
        session_timeout,
        stapling_file,
        material,
    })
}

/// `[headers]`; returns None only when it was not a table.
fn headers(ctx: &mut Ctx, v: &toml::Value) -> Option<Headers> {
    let s = Section::new(
        &mut ctx.errs,
        "headers".into(),
        v,
        &["hsts", "server", "set"],
    )?;
    let e = &mut ctx.errs;
    let hsts = s.str_or(e, "hsts", d::HSTS);
    let server = s.str_or(e, "server", d::SERVER_HEADER);
    for (k, val) in [("hsts", &hsts), ("server", &server)] {
        if http::HeaderValue::from_str(val).is_err() {
            e.add(
                s.key(k),
                "not a valid header value (printable ASCII, no line breaks)",
            );
        }
    }
    let set = match s.get("set") {
        None => d::SECURITY_HEADERS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        Some(_) => header_table(e, &s, "set")
            .into_iter()
            // In the global list "" just means "not sent".
            .filter(|(_, v)| !v.is_empty())
            .collect(),
    };
    Some(Headers {
        hsts: Some(hsts).filter(|h| !h.is_empty()),
        server: Some(server).filter(|h| !h.is_empty()),
        set,
    })
}

fn gzip(ctx: &mut Ctx, v: &toml::Value) -> Option<Gzip> {
    let allowed = ["enabled", "min_length", "level", "types", "vary"];
    let s = Section::new(&mut ctx.errs, "gzip".into(), v, &allowed)?;
    let e = &mut ctx.errs;
    let types = match s.str_array(e, "types") {
        None => d::GZIP_TYPES.iter().map(|t| t.to_string()).collect(),
        Some(list) => {
            let mut out = Vec::new();
            for (key, t) in list {
                let t = t.trim().to_ascii_lowercase();
                let valid = t.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && t.bytes()
                            .all(|c| c.is_ascii_graphic() && c != b';' && c != b',')
                });
                if valid {
                    out.push(t);
                } else {
                    e.add(
                        key,
                        format!("{t:?} is not a media type like \"application/json\""),
                    );
                }
            }
            out
        }
    };
    Some(Gzip {
        enabled: s.bool_or(e, "enabled", true),
        min_length: s.size_or(e, "min_length", d::GZIP_MIN_LENGTH),
        level: s.int_or(e, "level", u64::from(d::GZIP_LEVEL), 1, 9) as u32,
        types,
        vary: s.bool_or(e, "vary", true),
    })
}

fn real_ip(ctx: &mut Ctx, v: &toml::Value) -> Option<RealIp> {
    let s = Section::new(
        &mut ctx.errs,
        "real_ip".into(),
        v,
        &["trusted_proxies", "header"],
    )?;
    let e = &mut ctx.errs;
    let mut trusted_proxies = Vec::new();
    for (key, text) in s.str_array(e, "trusted_proxies").unwrap_or_default() {
        match units::parse_cidr(text) {
            Ok(c) => trusted_proxies.push(c),
            Err(reason) => e.add(key, reason),
        }
    }
    let header = s.str_or(e, "header", "X-Forwarded-For");
    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        e.add(
            s.key("header"),
            format!("{header:?} is not a valid header name"),
        );
    }
    Some(RealIp {
        trusted_proxies,
        header,
    })
}
