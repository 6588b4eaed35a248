//! Spans (OTEL_ENABLED=true): one per HTTP request, server kind, continuing the caller's W3C
//! `traceparent` (behind the gateway, the gateway's span is its parent), and one per tool call
//! under it, exported over OTLP/HTTP JSON by the `otlp` crate's background thread.
//!
//! `http::observe` starts the request span and puts it in the request's extensions
//! ([`RequestSpan`]); every transport hands it to `exec::Executor::call`, whose tool-call
//! span is its child. Tool calls of the 2024-11-05 SSE transport run in the session, away
//! from the POST that carried them: their spans start a trace of their own. A caller's trace
//! that is not sampled (flags `00`) is not recorded.

use crate::config::Otel;
use crate::metrics::Metrics;
use otlp::{Attributes, Kind, SpanContext, Status};
use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

static EXPORTER: OnceLock<otlp::Exporter<BackendSpan>> = OnceLock::new();

/// Starts the exporter when OTEL_ENABLED is on.
pub fn init(otel: Option<&Otel>, metrics: &Metrics) -> Result<(), String> {
    let Some(o) = otel else {
        return Ok(());
    };
    let settings = otlp::Settings::new(
        o.endpoint.clone(),
        otlp::Resource {
            service_name: o.service_name.clone(),
            service_version: env!("CARGO_PKG_VERSION").to_string(),
            scope: "backend",
        },
        o.timeout,
    );
    let counters = counters(metrics).map_err(|e| format!("span metrics: {e}"))?;
    let exporter = otlp::Exporter::start(settings, counters)
        .map_err(|e| format!("cannot start the span exporter: {e}"))?;
    log::info!(
        "exporting spans to {} as service {:?} (OTLP/HTTP JSON)",
        exporter.endpoint(),
        o.service_name
    );
    let _ = EXPORTER.set(exporter);
    Ok(())
}

/// `trace_spans_exported_total` and `trace_spans_dropped_total{reason}`, registered with the
/// other metrics (only when spans are exported).
fn counters(metrics: &Metrics) -> Result<otlp::Counters, prometheus::Error> {
    let exported = prometheus::IntCounter::new(
        "trace_spans_exported_total",
        "Spans accepted by the OTLP collector (OTEL_ENABLED)",
    )?;
    let dropped = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "trace_spans_dropped_total",
            "Spans not exported: queue_full (the exporter fell behind), export_failed (the \
             collector could not be reached in time or refused them)",
        ),
        &["reason"],
    )?;
    metrics.register(Box::new(exported.clone()))?;
    metrics.register(Box::new(dropped.clone()))?;
    Ok(otlp::Counters {
        exported,
        dropped: dropped.with_label_values(&["queue_full"]),
        failed: dropped.with_label_values(&["export_failed"]),
    })
}

/// Sends the spans still queued (at shutdown), waiting at most `wait`.
pub fn flush(wait: Duration) {
    if let Some(e) = EXPORTER.get() {
        if !e.flush(wait) {
            log::warn!("spans still queued at exit were not all exported");
        }
    }
}

/// The request's span, in its extensions: the parent of the tool calls it makes.
#[derive(Clone, Copy, Debug)]
pub struct RequestSpan(pub SpanContext);

/// The trace id of the caller's valid `traceparent`, for the access log when no span is made.
pub fn incoming_trace_id(headers: &http::HeaderMap) -> Option<otlp::TraceId> {
    parent(headers).map(|p| p.trace_id)
}

fn parent(headers: &http::HeaderMap) -> Option<otlp::Parent> {
    otlp::parse_header_lines(headers.get_all("traceparent").iter().map(|v| v.as_bytes()))
}

/// A request's span context (and its start), when spans are exported and the trace sampled.
pub fn start_request(headers: &http::HeaderMap) -> Option<(SpanContext, u64)> {
    EXPORTER.get()?;
    let span = SpanContext::continue_or_start(parent(headers));
    span.sampled().then(|| (span, otlp::unix_nanos()))
}

/// The span of the request `observe` saw end.
pub struct RequestDone<'a> {
    pub span: SpanContext,
    pub start: u64,
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub mcp_method: Option<&'static str>,
    pub tool: Option<&'static str>,
    pub client: &'a str,
    /// The response body ran to its end (a stream the client left did not).
    pub completed: bool,
}

pub fn end_request(r: RequestDone<'_>) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let mut attributes = vec![
        (
            "http.request.method",
            Value::Str(r.method.to_string().into()),
        ),
        ("url.path", Value::Str(r.path.to_string().into())),
        ("http.route", Value::Str(r.route.to_string().into())),
        ("http.response.status_code", Value::Int(i64::from(r.status))),
        ("client.address", Value::Str(r.client.to_string().into())),
        ("http.response.completed", Value::Bool(r.completed)),
    ];
    if let Some(m) = r.mcp_method {
        attributes.push(("mcp.method.name", Value::Str(m.into())));
    }
    if let Some(t) = r.tool {
        attributes.push(("gen_ai.tool.name", Value::Str(t.into())));
    }
    let error = (r.status >= 500).then(String::new);
    if error.is_some() {
        attributes.push(("error.type", Value::Str(r.status.to_string().into())));
    }
    exporter.submit(BackendSpan {
        context: r.span,
        name: format!("{} {}", r.method, r.route),
        kind: Kind::Server,
        start: r.start,
        end: otlp::unix_nanos(),
        attributes,
        error,
    });
}

/// A tool call's span under `parent` (the request's span; a root span without one).
pub fn start_tool(parent: Option<RequestSpan>) -> Option<(SpanContext, u64)> {
    EXPORTER.get()?;
    let span = match parent {
        Some(RequestSpan(p)) => p.child(),
        None => SpanContext::continue_or_start(None),
    };
    span.sampled().then(|| (span, otlp::unix_nanos()))
}

/// `outcome` is the metric's label (`ok` or the error code in lower case); `error` the
/// error's code and message when the call failed.
pub fn end_tool(
    (span, start): (SpanContext, u64),
    tool: &'static str,
    outcome: &str,
    error: Option<(&str, &str)>,
) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let mut attributes = vec![
        ("mcp.method.name", Value::Str("tools/call".into())),
        ("gen_ai.operation.name", Value::Str("execute_tool".into())),
        ("gen_ai.tool.name", Value::Str(tool.into())),
        ("tool.outcome", Value::Str(outcome.to_string().into())),
        ("error", Value::Bool(error.is_some())),
    ];
    if let Some((code, _)) = error {
        attributes.push(("error.type", Value::Str(code.to_string().into())));
    }
    exporter.submit(BackendSpan {
        context: span,
        name: format!("tools/call {tool}"),
        kind: Kind::Internal,
        start,
        end: otlp::unix_nanos(),
        attributes,
        error: error.map(|(_, message)| crate::bounded::bounded(message).to_string()),
    });
}

enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Bool(bool),
}

pub struct BackendSpan {
    context: SpanContext,
    name: String,
    kind: Kind,
    start: u64,
    end: u64,
    attributes: Vec<(&'static str, Value)>,
    /// Some: the span's status is ERROR, with this message.
    error: Option<String>,
}

impl otlp::Span for BackendSpan {
    fn context(&self) -> &SpanContext {
        &self.context
    }
    fn name(&self, out: &mut String) {
        out.push_str(&self.name);
    }
    fn kind(&self) -> Kind {
        self.kind
    }
    fn times(&self) -> (u64, u64) {
        (self.start, self.end)
    }
    fn attributes(&self, a: &mut Attributes<'_>) {
        for (k, v) in &self.attributes {
            match v {
                Value::Str(s) => a.str(k, s),
                Value::Int(n) => a.int(k, *n),
                Value::Bool(b) => a.bool(k, *b),
            }
        }
    }
    fn status(&self) -> Status<'_> {
        match &self.error {
            Some(m) => Status::Error(m),
            None => Status::Unset,
        }
    }
}
