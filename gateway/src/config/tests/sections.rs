//! `[listeners]`, `[server]`, `[headers]`, `[gzip]`, `[real_ip]`.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

#[test]
fn listeners_are_checked() {
    let errs = errors(
        r#"
[listeners.admin]
address = "127.0.0.1:8080"
[pools.backend]
servers = ["127.0.0.1:3001"]
[[routes]]
path = "/"
pool = "backend"
"#,
    );
    has(
        &errs,
        "listeners",
        "at least one of [listeners.http] or [listeners.https]",
    );

    let errs = errors(&format!(
        "{MINIMAL}\n[listeners.admin]\naddress = \"0.0.0.0:8080\"\n"
    ));
    has(
        &errs,
        "listeners.admin.address",
        "also used by listeners.http",
    );

    let errs = errors(&format!(
        "{MINIMAL}\n[listeners.https]\naddress = \"localhost:8443\"\ncert = \"c\"\nkey = \"k\"\nmin_tls = \"1.1\"\nciphers = \"NOT-A-CIPHER\"\n"
    ));
    has(&errs, "listeners.https.address", "is not ip:port");
    has(&errs, "listeners.https.min_tls", "\"1.1\" is not supported");
    has(&errs, "listeners.https.ciphers", "OpenSSL accepts none");

    let errs = errors(&MINIMAL.replace(
        "[listeners.http]",
        "[listeners.http]\nredirect_exempt = [\"acme\", 3]",
    ));
    has(
        &errs,
        "listeners.http.redirect_exempt[0]",
        "must start with \"/\"",
    );
    has(
        &errs,
        "listeners.http.redirect_exempt[1]",
        "expected a string",
    );
}

#[test]
fn server_section_values() {
    let c = ok(&format!(
        "{MINIMAL}\n[server]\nthreads = 4\naccess_log = \"../log/access.json\"\nerror_log_level = \"WARN\"\npid_file = \"gw.pid\"\n"
    ));
    assert_eq!(c.server.threads, 4);
    assert_eq!(
        c.server.access_log,
        AccessLog::File(PathBuf::from("/etc/log/access.json"))
    );
    assert_eq!(c.server.error_log_level, log::LevelFilter::Warn);
    assert_eq!(c.server.pid_file, PathBuf::from("/etc/gw/gw.pid"));
    assert_eq!(
        ok(&format!("{MINIMAL}\n[server]\naccess_log = \"off\"\n"))
            .server
            .access_log,
        AccessLog::Off
    );
    let errs = errors(&format!(
        "{MINIMAL}\n[server]\nthreads = 0\nerror_log_level = \"loud\"\n"
    ));
    has(&errs, "server.threads", "out of range");
    has(&errs, "server.error_log_level", "\"loud\" is not one of");
}

#[test]
fn headers_merge_per_route_and_are_validated() {
    let text = format!(
        "{MINIMAL}\n[headers]\nhsts = \"\"\nserver = \"\"\n[headers.set]\n\"X-Frame-Options\" = \"SAMEORIGIN\"\n\"X-Global\" = \"1\"\n"
    )
    .replace(
        "pool = \"backend\"",
        "pool = \"backend\"\n[routes.headers]\n\"x-frame-options\" = \"DENY\"\n\"X-Global\" = \"\"\n\"Cache-Control\" = \"no-store\"",
    );
    let c = ok(&text);
    assert_eq!(c.headers.hsts, None);
    assert_eq!(c.headers.server, None);
    assert_eq!(c.headers.set.len(), 2);
    let mut got = c.routes[0].response_headers.clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("Cache-Control".to_string(), "no-store".to_string()),
            ("x-frame-options".to_string(), "DENY".to_string()),
        ]
    );

    let errs = errors(&format!(
        "{MINIMAL}\n[headers.set]\n\"Bad Name\" = \"x\"\n\"X-Ok\" = \"line\\nbreak\"\n\"X-Num\" = 5\n"
    ));
    has(&errs, "headers.set.\"Bad Name\"", "not a valid header name");
    has(&errs, "headers.set.X-Ok", "not a valid header value");
    has(
        &errs,
        "headers.set.X-Num",
        "expected a string, found an integer",
    );
}

#[test]
fn gzip_settings() {
    let c = ok(&format!(
        "{MINIMAL}\n[gzip]\nenabled = false\nmin_length = \"2k\"\ntypes = [\"Application/JSON\"]\n"
    ));
    assert!(!c.gzip.enabled);
    assert_eq!(c.gzip.min_length, 2048);
    assert_eq!(c.gzip.types, ["application/json"]);
    let errs = errors(&format!(
        "{MINIMAL}\n[gzip]\nlevel = 10\ntypes = [\"json\"]\n"
    ));
    has(&errs, "gzip.level", "out of range (1..=9)");
    has(&errs, "gzip.types[0]", "is not a media type");
}

#[test]
fn real_ip_trusts_only_configured_proxies() {
    let c = ok(&format!(
        "{MINIMAL}\n[real_ip]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n"
    ));
    let r = &c.real_ip;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    // Untrusted peer: the header is ignored, whatever it says.
    assert_eq!(
        r.client_ip(ip("203.0.113.9"), Some("1.2.3.4")),
        ip("203.0.113.9")
    );
    // Trusted peer: right-most untrusted address.
    assert_eq!(
        r.client_ip(ip("10.1.1.1"), Some("6.6.6.6, 198.51.100.7, 10.2.2.2")),
        ip("198.51.100.7")
    );
    assert_eq!(r.client_ip(ip("127.0.0.1"), None), ip("127.0.0.1"));
    // Garbage stops the walk at the last good hop.
    assert_eq!(
        r.client_ip(ip("10.1.1.1"), Some("198.51.100.7, junk")),
        ip("10.1.1.1")
    );
    let errs = errors(&format!(
        "{MINIMAL}\n[real_ip]\ntrusted_proxies = [\"10.0.0.0/33\", \"10.1.0.0/8\"]\nheader = \"bad header\"\n"
    ));
    has(&errs, "real_ip.trusted_proxies[0]", "prefix length");
    has(&errs, "real_ip.trusted_proxies[1]", "host bits set");
    has(&errs, "real_ip.header", "not a valid header name");
}

#[test]
fn error_log_is_a_path_relative_to_the_file_and_never_empty() {
    let c = ok(&format!(
        "[server]\nerror_log = \"logs/error.log\"\n{MINIMAL}"
    ));
    assert_eq!(
        c.server.error_log.as_deref(),
        Some(file().parent().unwrap().join("logs/error.log").as_path())
    );
    assert_eq!(ok(MINIMAL).server.error_log, None);
    let errs = errors(&format!("[server]\nerror_log = \"\"\n{MINIMAL}"));
    assert!(
        errs.iter().any(|e| e.contains("server.error_log: empty")),
        "{errs:?}"
    );
}

#[test]
fn limits_default_to_nginx_buffers_and_are_checked() {
    let c = ok(MINIMAL);
    assert_eq!(c.limits.header_line_size, 8 << 10);
    assert_eq!(c.limits.header_total_size, 32 << 10);
    assert!(c.limits.strict_request_target);
    assert_eq!(c.limits.client_header_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.client_body_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.send_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(c.limits.keepalive_requests, 1000);
    let c = ok(&format!(
        "{MINIMAL}\n[limits]\nclient_header_timeout = \"10s\"\nkeepalive_timeout = 0\n\
         keepalive_requests = 100\nsend_timeout = \"500ms\"\n"
    ));
    assert_eq!(c.limits.client_header_timeout, Duration::from_secs(10));
    assert!(c.limits.keepalive_timeout.is_zero());
    assert_eq!(c.limits.keepalive_requests, 100);
    assert_eq!(c.limits.send_timeout, Duration::from_millis(500));
    let errs = errors(&format!(
        "{MINIMAL}\n[limits]\nclient_body_timeout = \"10ms\"\nkeepalive_timeout = \"200ms\"\n\
         keepalive_requests = 0\nclient_header_timeout = \"soon\"\n"
    ));
    has(&errs, "limits.client_body_timeout", "too short");
    has(&errs, "limits.keepalive_timeout", "0 turns keep-alive off");
    has(&errs, "limits.keepalive_requests", "out of range");
    has(&errs, "limits.client_header_timeout", "");
    let c = ok(&format!(
        "{MINIMAL}\n[limits]\nheader_line_size = \"16k\"\nheader_total_size = \"64k\"\nstrict_request_target = false\n"
    ));
    assert_eq!(c.limits.header_line_size, 16 << 10);
    assert!(!c.limits.strict_request_target);
    let errs = errors(&format!(
        "{MINIMAL}\n[limits]\nheader_line_size = \"64k\"\nheader_total_size = \"2m\"\nbuffers = 4\n"
    ));
    has(&errs, "limits.header_total_size", "out of range");
    has(&errs, "limits.buffers", "");
    let errs = errors(&format!(
        "{MINIMAL}\n[limits]\nheader_line_size = \"64k\"\nheader_total_size = \"32k\"\n"
    ));
    has(
        &errs,
        "limits.header_line_size",
        "more than header_total_size",
    );
}

#[test]
fn tracing_section() {
    let c = ok(MINIMAL);
    assert!(c.tracing.otlp_traces_endpoint.is_none());
    assert_eq!(c.tracing.service_name, "gateway");
    assert_eq!(c.tracing.export_timeout, Duration::from_secs(10));
    let c = ok(&format!(
        "{MINIMAL}\n[tracing]\notlp_traces_endpoint = \"http://collector:4318/v1/traces\"\n\
         service_name = \"edge\"\nexport_timeout = \"2s\"\n"
    ));
    let ep = c.tracing.otlp_traces_endpoint.expect("endpoint");
    assert_eq!(ep.url, "http://collector:4318/v1/traces");
    assert_eq!(c.tracing.service_name, "edge");
    assert_eq!(c.tracing.export_timeout, Duration::from_secs(2));
    let errs = errors(&format!(
        "{MINIMAL}\n[tracing]\notlp_traces_endpoint = \"https://collector:4318/v1/traces\"\n\
         service_name = \"\"\nexport_timeout = \"1ms\"\nsampler = \"always\"\n"
    ));
    has(
        &errs,
        "tracing.otlp_traces_endpoint",
        "https is not supported",
    );
    has(&errs, "tracing.service_name", "empty");
    has(&errs, "tracing.export_timeout", "too short");
    has(&errs, "tracing.sampler", "");
    let errs = errors(&format!(
        "{MINIMAL}\n[tracing]\notlp_traces_endpoint = \"collector:4318\"\n"
    ));
    has(&errs, "tracing.otlp_traces_endpoint", "not an http:// URL");
}
