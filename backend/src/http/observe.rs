//! Per-request bookkeeping: the request id (a valid incoming `X-Request-ID` is kept, anything
//! else is replaced by a UUID; always returned), HTTP metrics labelled by the matched route
//! pattern, streaming metrics, the request's span (`trace`, OTEL_ENABLED), and one JSON
//! access-log line per request on stdout (with the W3C trace id when there is one).
//!
//! The line and the duration are taken when the response body is finished or dropped, so a
//! stream is logged once, with its real length, duration and whether it ran to its end.

use super::reply::{McpMethodLabel, RequestId, ToolLabel};
use super::AppState;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// 1–128 characters of `[A-Za-z0-9._-]`: safe to log and to echo in a header.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The client's address, set by `observe` for the guard and the access log.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

/// The TCP peer, unless the peer is a proxy on a loopback or private address (the gateway in
/// front of the replicas): then the address the proxy reports, from `X-Real-IP` or else the
/// last `X-Forwarded-For` entry (the one the proxy appended; earlier ones are the client's
/// own claims). A client reaching the backend directly from a public address cannot choose
/// its key this way.
pub fn client_ip(req: &Request) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !is_internal(peer) {
        return peer;
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    header("x-real-ip")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(peer)
}

pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    }
}

pub async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id: Arc<str> = match req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if valid_request_id(id) => Arc::from(id),
        _ => Arc::from(uuid::Uuid::new_v4().to_string()),
    };
    req.extensions_mut().insert(RequestId(request_id.clone()));
    // The request's span (OTEL_ENABLED), continuing the caller's traceparent; probes and
    // scrapes (every few seconds, from every prober) are not traced.
    let span = if super::guard::is_open_path(req.uri().path()) {
        None
    } else {
        crate::trace::start_request(req.headers())
    };
    let trace_id = match span {
        Some((s, _)) => Some(s.trace_id),
        None => crate::trace::incoming_trace_id(req.headers()),
    };
    if let Some((s, _)) = span {
        req.extensions_mut().insert(crate::trace::RequestSpan(s));
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| Arc::<str>::from(m.as_str()))
        .unwrap_or_else(|| Arc::from("unmatched"));
    let client_ip = client_ip(&req);
    req.extensions_mut().insert(ClientIp(client_ip));
    let client = client_ip.to_string();
    let method = req.method().clone();
    // The path is client text: only a bounded prefix reaches the log.
    let path = crate::bounded::bounded(req.uri().path()).to_string();
    state.metrics.http_active.inc();

    let mut resp = next.run(req).await;

    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let stream = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| {
            if ct.starts_with("text/event-stream") {
                Some("sse")
            } else if ct.starts_with("application/x-ndjson") {
                Some("ndjson")
            } else {
                None
            }
        });
    if let Some(kind) = stream {
        state
            .metrics
            .streaming_active
            .with_label_values(&[kind])
            .inc();
    }
    let finish = Finish {
        state,
        method,
        route,
        path,
        status: resp.status().as_u16(),
        request_id,
        tool: resp.extensions().get::<ToolLabel>().map(|t| t.0),
        mcp_method: resp.extensions().get::<McpMethodLabel>().map(|m| m.0),
        span,
        trace_id,
        client,
        started,
        stream,
        bytes: 0,
        ended: false,
    };
    resp.map(|inner| {
        let mut finish = finish;
        finish.ended = inner.is_end_stream();
        Body::new(ObservedBody { inner, finish })
    })
}

/// What the access log and metrics need once the body is done.
struct Finish {
    state: Arc<AppState>,
    method: Method,
    route: Arc<str>,
    path: String,
    status: u16,
    request_id: Arc<str>,
    tool: Option<&'static str>,
    mcp_method: Option<&'static str>,
    /// The request's span and its start (unix ns), when spans are exported.
    span: Option<(otlp::SpanContext, u64)>,
    trace_id: Option<otlp::TraceId>,
    client: String,
    started: Instant,
    stream: Option<&'static str>,
    bytes: u64,
    ended: bool,
}

impl Finish {
    fn on_data(&mut self, data: &Bytes) {
        self.bytes += data.len() as u64;
        if let Some(kind) = self.stream {
            let m = &self.state.metrics;
            m.streaming_bytes
                .with_label_values(&[kind])
                .inc_by(data.len() as u64);
            // Heartbeat comments (`: keep-alive`) are not messages.
            if !data.starts_with(b":") {
                m.streaming_messages.with_label_values(&[kind]).inc();
            }
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let m = &self.state.metrics;
        let elapsed = self.started.elapsed();
        m.http_active.dec();
        if let Some(kind) = self.stream {
            m.streaming_active.with_label_values(&[kind]).dec();
        }
        let status = self.status.to_string();
        m.http_requests
            .with_label_values(&[self.method.as_str(), &self.route, &status])
            .inc();
        m.http_duration
            .with_label_values(&[self.method.as_str(), &self.route])
            .observe(elapsed.as_secs_f64());
        if let Some((span, start)) = self.span {
            crate::trace::end_request(crate::trace::RequestDone {
                span,
                start,
                method: self.method.as_str(),
                route: &self.route,
                path: &self.path,
                status: self.status,
                mcp_method: self.mcp_method,
                tool: self.tool,
                client: &self.client,
                completed: self.ended,
            });
        }
        if !self.state.config.access_log {
            return;
        }
        let trace_id = self.trace_id.map(|t| t.hex());
        let line = AccessLine {
            ts: crate::api_error::timestamp(),
            request_id: &self.request_id,
            trace_id: trace_id.as_ref().map(|t| t.as_str()),
            method: self.method.as_str(),
            path: &self.path,
            route: &self.route,
            status: self.status,
            bytes: self.bytes,
            duration_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            tool: self.tool,
            client: &self.client,
            completed: self.ended,
        };
        let mut buf = serde_json::to_vec(&line).unwrap_or_default();
        buf.push(b'\n');
        // A closed stdout must not take the server down; the line is lost then.
        let _ = std::io::stdout().lock().write_all(&buf);
    }
}

/// One access-log line; fields in reading order (a `json!` map would sort them).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessLine<'a> {
    ts: String,
    request_id: &'a str,
    /// The W3C trace id: the caller's valid `traceparent`'s, or the trace this request's span
    /// started.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    status: u16,
    bytes: u64,
    #[serde(rename = "duration_ms")]
    duration_ms: f64,
    tool: Option<&'static str>,
    client: &'a str,
    completed: bool,
}

/// The response body, counted as it is sent.
struct ObservedBody {
    inner: Body,
    finish: Finish,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.finish.on_data(data);
                }
                // hyper stops polling a body that says it has ended.
                if this.inner.is_end_stream() {
                    this.finish.ended = true;
                }
            }
            Poll::Ready(None) => this.finish.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::valid_request_id;

    #[test]
    fn request_ids() {
        assert!(valid_request_id("abc-123_x.y"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"a".repeat(129)));
        assert!(!valid_request_id("x\u{e9}"));
    }
}
