//! Distributed tracing at the edge (W3C Trace Context, the `otlp` crate).
//!
//! Always, whatever `[tracing]` says: each request continues the client's `traceparent` when it
//! is valid, or starts a new trace when it is absent or invalid (an invalid one is never passed
//! on); the upstream request carries `traceparent: 00-<trace-id>-<the gateway's span id>-<flags>`,
//! the client's `tracestate` goes with it unchanged only when its `traceparent` was valid, and
//! the access log line has the `trace_id`.
//!
//! With `[tracing] otlp_traces_endpoint`, the gateway also exports its own span of each sampled
//! request (server kind; its parent is the client's span) from a background thread (`otlp`'s
//! exporter: bounded queue, dropped and counted in `gateway_trace_spans_dropped_total` when
//! full). The thread starts with the first span, so it lives in the serving process after `-d`.
//!
//! Cost per request: parsing the header and two random ids; upstream, one 55-byte header
//! value plus what Pingora's `insert_header` costs for any header of its own name (as for
//! X-Request-Id). Exported spans carry only `Copy` values and `Arc` clones: no allocation on
//! the request path beyond those; encoding happens on the exporter's thread.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;

use otlp::{Attributes, Kind, SpanContext, Status};

use crate::config;
use crate::context::Ctx;
use crate::metrics::METRICS;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// This request's place in its trace.
#[derive(Clone, Copy, Default)]
pub struct Trace {
    /// The gateway's span. Unset (zero trace id) until the request phase has run.
    pub span: SpanContext,
    /// The client's `traceparent` was valid: its `tracestate` goes upstream with it.
    pub continued: bool,
}

/// Continue the client's trace, or start one.
pub fn start(req: &RequestHeader) -> Trace {
    let lines = req
        .headers
        .get_all(&TRACEPARENT)
        .iter()
        .map(|v| v.as_bytes());
    let parent = otlp::parse_header_lines(lines);
    Trace {
        span: SpanContext::continue_or_start(parent),
        continued: parent.is_some(),
    }
}

/// The upstream request's `traceparent` (the gateway's span as its parent) and `tracestate`.
pub fn forward(upstream: &mut RequestHeader, trace: &Trace) {
    // Never the client's header as it came, even if the request phase did not run.
    let started;
    let trace = if trace.span.is_set() {
        trace
    } else {
        started = start(upstream);
        &started
    };
    let value = trace.span.traceparent();
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        // A static name: Pingora keeps its case without copying it.
        let _ = upstream.insert_header("traceparent", v);
    }
    if !trace.continued {
        upstream.remove_header(&TRACESTATE);
    }
}

/// The export settings `[tracing]` chose at start (None: spans are not exported).
static SETTINGS: OnceLock<Option<otlp::Settings>> = OnceLock::new();
static EXPORTER: OnceLock<Option<otlp::Exporter<EdgeSpan>>> = OnceLock::new();

/// Records what `[tracing]` asks for; the exporter's thread starts with the first span.
pub fn init(cfg: &config::Tracing) {
    let settings = cfg.otlp_traces_endpoint.as_ref().map(|ep| {
        otlp::Settings::new(
            ep.clone(),
            otlp::Resource {
                service_name: cfg.service_name.clone(),
                service_version: env!("CARGO_PKG_VERSION").to_string(),
                scope: "gateway",
            },
            cfg.export_timeout,
        )
    });
    let _ = SETTINGS.set(settings);
}

fn exporter() -> Option<&'static otlp::Exporter<EdgeSpan>> {
    EXPORTER
        .get_or_init(|| {
            let settings = SETTINGS.get()?.clone()?;
            let url = settings.endpoint.url.clone();
            let counters = otlp::Counters {
                exported: METRICS.trace_spans_exported.clone(),
                dropped: METRICS
                    .trace_spans_dropped
                    .with_label_values(&["queue_full"]),
                failed: METRICS
                    .trace_spans_dropped
                    .with_label_values(&["export_failed"]),
            };
            match otlp::Exporter::start(settings, counters) {
                Ok(e) => {
                    log::info!("exporting the gateway's spans to {url} (OTLP/HTTP JSON)");
                    Some(e)
                }
                Err(e) => {
                    log::error!("cannot start the span exporter: {e}; spans are not exported");
                    None
                }
            }
        })
        .as_ref()
}

/// At the end of a request: the gateway's span, when spans are exported and the trace sampled.
pub fn finish(req: &RequestHeader, ctx: &Ctx, status: u16) {
    let span = ctx.trace.span;
    if !span.is_set() || !span.sampled() || SETTINGS.get().is_none_or(Option::is_none) {
        return;
    }
    let Some(exporter) = exporter() else {
        return;
    };
    let end = otlp::unix_nanos();
    let elapsed = ctx.timing.start.elapsed().as_nanos() as u64;
    exporter.submit(EdgeSpan {
        context: span,
        start: end.saturating_sub(elapsed),
        end,
        method: req.method.clone(),
        status,
        version: match req.version {
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_10 => "1.0",
            _ => "1.1",
        },
        tls: ctx.conn.tls,
        client: ctx.conn.client_ip,
        route: ctx.route().map(|r| r.name.clone()),
        pool: ctx.target().map(|t| t.pool.name.clone()),
        upstream: ctx.attempt.backend,
        mcp_method: ctx.mcp.as_ref().map(|m| m.method),
        mcp_tool: ctx
            .mcp
            .as_ref()
            .filter(|m| &*m.tool != "-")
            .map(|m| m.tool.clone()),
    });
}

/// One request as the gateway saw it, encoded on the exporter's thread.
pub struct EdgeSpan {
    context: SpanContext,
    start: u64,
    end: u64,
    method: Method,
    status: u16,
    version: &'static str,
    tls: bool,
    client: Option<IpAddr>,
    route: Option<Arc<str>>,
    pool: Option<Arc<str>>,
    upstream: Option<SocketAddr>,
    mcp_method: Option<&'static str>,
    mcp_tool: Option<Arc<str>>,
}

impl otlp::Span for EdgeSpan {
    fn context(&self) -> &SpanContext {
        &self.context
    }

    /// `{method} {route}` (HTTP semantic conventions, the route's name as `http.route`).
    fn name(&self, out: &mut String) {
        out.push_str(self.method.as_str());
        if let Some(r) = &self.route {
            out.push(' ');
            out.push_str(r);
        }
    }

    fn kind(&self) -> Kind {
        Kind::Server
    }

    fn times(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    fn attributes(&self, a: &mut Attributes<'_>) {
        a.str("http.request.method", self.method.as_str());
        if self.status != 0 {
            a.int("http.response.status_code", i64::from(self.status));
        }
        if self.status >= 500 {
            a.display("error.type", self.status);
        }
        a.str("url.scheme", if self.tls { "https" } else { "http" });
        a.str("network.protocol.version", self.version);
        if let Some(ip) = self.client {
            a.display("client.address", ip);
        }
        if let Some(r) = &self.route {
            a.str("http.route", r);
        }
        if let Some(p) = &self.pool {
            a.str("gateway.pool", p);
        }
        if let Some(u) = self.upstream {
            a.display("gateway.upstream.address", u);
        }
        if let Some(m) = self.mcp_method {
            a.str("mcp.method.name", m);
        }
        if let Some(t) = &self.mcp_tool {
            a.str("gen_ai.tool.name", t);
        }
    }

    fn status(&self) -> Status<'_> {
        if self.status >= 500 {
            Status::Error("")
        } else {
            Status::Unset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/mcp", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn header<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn continues_a_valid_traceparent_with_its_tracestate() {
        let req = request(&[("traceparent", CLIENT), ("tracestate", "a=1,b=2")]);
        let t = start(&req);
        assert!(t.continued);
        assert_eq!(
            t.span.trace_id.hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut up = req.clone();
        forward(&mut up, &t);
        let sent = header(&up, "traceparent");
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0],
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                t.span.span_id.hex()
            )
        );
        assert_eq!(header(&up, "tracestate"), ["a=1,b=2"]);
    }

    #[test]
    fn replaces_an_invalid_or_missing_traceparent_and_drops_tracestate() {
        for headers in [
            vec![("traceparent", "00-zzzz"), ("tracestate", "a=1")],
            vec![("traceparent", CLIENT), ("traceparent", CLIENT)],
            vec![("tracestate", "a=1")],
            vec![],
        ] {
            let req = request(&headers);
            let t = start(&req);
            assert!(!t.continued, "{headers:?}");
            assert!(t.span.is_set() && t.span.parent.is_none() && t.span.sampled());
            let mut up = req.clone();
            forward(&mut up, &t);
            let sent = header(&up, "traceparent");
            assert_eq!(sent.len(), 1, "{headers:?}");
            let p = otlp::parse_traceparent(sent[0].as_bytes()).expect("valid");
            assert_eq!(p.trace_id, t.span.trace_id);
            assert_eq!(p.span_id, t.span.span_id);
            assert!(header(&up, "tracestate").is_empty(), "{headers:?}");
        }
    }

    #[test]
    fn the_client_header_is_never_sent_as_it_came() {
        let mut up = request(&[("traceparent", CLIENT)]);
        forward(&mut up, &Trace::default());
        let sent = header(&up, "traceparent");
        assert_eq!(sent.len(), 1);
        assert_ne!(sent[0], CLIENT);
        assert!(sent[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }
}
