//! End of a request: count it in the metrics, hand its span to the exporter (`trace`) and write
//! its access-log line.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::access_log::{self, Entry};
use crate::context::Ctx;
use crate::metrics::METRICS;

pub fn finish(session: &Session, e: Option<&Error>, ctx: &Ctx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    let elapsed = ctx.timing.start.elapsed().as_secs_f64();

    if let Some(state) = ctx.state.as_ref() {
        match (ctx.target(), ctx.route()) {
            (Some(t), _) => {
                t.metrics.count(status);
                t.metrics.duration.observe(elapsed);
                if let Some(c) = ctx.timing.connect {
                    t.metrics.connect.observe(c);
                }
                if let Some(h) = ctx.timing.header {
                    t.metrics.header.observe(h);
                }
                if let Some(r) = ctx.timing.response {
                    t.metrics.response.observe(r);
                }
            }
            // Answered by the route before a pool was picked (413, 429).
            (None, Some(r)) => {
                r.unpooled.count(status);
                r.unpooled.duration.observe(elapsed);
            }
            (None, None) if ctx.redirected => {
                state.redirected.count(status);
                state.redirected.duration.observe(elapsed);
            }
            (None, None) => {
                state.unrouted.count(status);
                state.unrouted.duration.observe(elapsed);
            }
        }
    }

    if let (Some(m), Some(r)) = (ctx.mcp.as_ref(), ctx.route()) {
        let outcome = crate::mcp::audit::outcome_label(status, ctx);
        let pool = ctx.target().map_or("-", |t| &*t.pool.name);
        METRICS
            .mcp_requests
            .with_label_values(&[&r.name, pool, m.method, &m.tool, outcome])
            .inc();
        METRICS
            .mcp_duration
            .with_label_values(&[&r.name, m.method, &m.tool])
            .observe(elapsed);
        crate::mcp::audit::record(session, ctx, status, outcome, elapsed);
    }

    // nginx's client_body_timeout and send_timeout (the header and keep-alive ones are counted
    // where they happen, in edge::conn).
    if let Some(err) = e.filter(|err| matches!(err.esource(), ErrorSource::Downstream)) {
        let which = match err.etype() {
            ErrorType::ReadTimedout => Some("client_body"),
            ErrorType::WriteTimedout => Some("send"),
            _ => None,
        };
        if let Some(which) = which {
            METRICS.client_timeouts.with_label_values(&[which]).inc();
        }
    }

    crate::trace::finish(session.req_header(), ctx, status);

    if !access_log::ACCESS.enabled() {
        return;
    }
    if let Some(err) = e {
        log::debug!("request {} failed: {err}", ctx.request_id);
    }
    let req = session.req_header();
    let (route, pool) = match (ctx.route(), ctx.target()) {
        (Some(r), Some(t)) => (&*r.name, &*t.pool.name),
        (Some(r), None) => (&*r.name, "-"),
        _ => ("", ""),
    };
    let backend = ctx
        .attempt
        .slot
        .as_ref()
        .map(|a| &*a.stats().label)
        .unwrap_or("");
    let http_version = match req.version {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let trace_id = ctx
        .trace
        .span
        .is_set()
        .then(|| ctx.trace.span.trace_id.hex());
    access_log::ACCESS.write(&Entry {
        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        request_id: &ctx.request_id,
        trace_id: trace_id.as_ref().map(|t| t.as_str()),
        client: &ctx.conn.client,
        peer: ctx.conn.peer_ip,
        method: req.method.as_str(),
        path: req.uri.path(),
        status,
        bytes: session.body_bytes_sent(),
        route,
        pool,
        backend,
        http_version,
        tls_version: ctx.conn.tls_version.as_deref().unwrap_or(""),
        request_time: elapsed,
        upstream_connect_time: ctx.timing.connect,
        upstream_header_time: ctx.timing.header,
        upstream_response_time: ctx.timing.response,
        mcp_method: ctx.mcp.as_ref().map(|m| m.method),
        mcp_tool: ctx.mcp.as_ref().map(|m| &*m.tool),
    });
}
