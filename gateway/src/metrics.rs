//! Prometheus metrics of the gateway (`gateway_*`). Labels stay low-cardinality: route, pool,
//! backend address (bounded by the replicas), status class. Handles that the hot path needs are
//! resolved once per state build (see [`RouteMetrics`]), so a request does no label lookups.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request/upstream latency buckets: 1 ms .. ~65 s, then the long tail of streams.
fn latency_buckets() -> Vec<f64> {
    // startup: constant arguments that exponential_buckets accepts.
    let mut b = exponential_buckets(0.001, 2.0, 17).unwrap_or_default();
    b.extend_from_slice(&[300.0, 1800.0, 3600.0, 86400.0]);
    b
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_connect: HistogramVec,
    pub upstream_header: HistogramVec,
    pub upstream_response: HistogramVec,
    pub backend_in_flight: IntGaugeVec,
    pub backend_up: IntGaugeVec,
    pub active_streams: IntGaugeVec,
    pub retries: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_reloads: IntCounterVec,
    pub access_log_dropped: IntCounter,
    pub audit_log_dropped: IntCounter,
    pub client_timeouts: IntCounterVec,
    pub mcp_requests: IntCounterVec,
    pub mcp_duration: HistogramVec,
    /// The gateway's own spans (`[tracing]`): exported, or dropped by reason.
    pub trace_spans_exported: IntCounter,
    pub trace_spans_dropped: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The status classes used as a label; index = first digit - 1, 0 for anything odd.
pub const STATUS_CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => (status / 100) as usize,
        _ => 0,
    }
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // startup: metric names and label sets below are constant and valid, and each is
        // registered once in a fresh registry, so none of these calls can fail.
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests by route, pool and status class",
            ),
            &["route", "pool", "status_class"],
        )
        .expect("startup: valid metric");
        let hist = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(latency_buckets()),
                labels,
            )
            .expect("startup: valid metric")
        };
        let request_duration = hist(
            "gateway_request_duration_seconds",
            "Time from the request's arrival to the end of its response",
            &["route", "pool"],
        );
        let upstream_connect = hist(
            "gateway_upstream_connect_seconds",
            "Time to get a connection to the upstream (0 when reused)",
            &["pool"],
        );
        let upstream_header = hist(
            "gateway_upstream_header_seconds",
            "Time until the upstream's response header arrived",
            &["pool"],
        );
        let upstream_response = hist(
            "gateway_upstream_response_seconds",
            "Time until the upstream's whole response arrived",
            &["pool"],
        );
        let backend_in_flight = IntGaugeVec::new(
            Opts::new(
                "gateway_backend_in_flight",
                "Requests in flight per backend",
            ),
            &["pool", "backend"],
        )
        .expect("startup: valid metric");
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "gateway_backend_up",
                "1 when the backend takes traffic (active and passive health), else 0",
            ),
            &["pool", "backend"],
        )
        .expect("startup: valid metric");
        let active_streams = IntGaugeVec::new(
            Opts::new(
                "gateway_active_streams",
                "Open SSE / NDJSON responses per route",
            ),
            &["route"],
        )
        .expect("startup: valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "gateway_retries_total",
                "Requests sent again to another backend",
            ),
            &["pool"],
        )
        .expect("startup: valid metric");
        let config_generation = IntGauge::new(
            "gateway_config_generation",
            "Generation of the routing state in use (1 at start, +1 per reload)",
        )
        .expect("startup: valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Configuration reloads by result",
            ),
            &["result"],
        )
        .expect("startup: valid metric");
        let access_log_dropped = IntCounter::new(
            "gateway_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind",
        )
        .expect("startup: valid metric");
        let audit_log_dropped = IntCounter::new(
            "gateway_audit_log_dropped_total",
            "Audit-log lines dropped because the writer fell behind",
        )
        .expect("startup: valid metric");
        let client_timeouts = IntCounterVec::new(
            Opts::new(
                "gateway_client_timeouts_total",
                "Client connections cut by a client timeout (client_header, keepalive, \
                 client_body, send)",
            ),
            &["timeout"],
        )
        .expect("startup: valid metric");
        for name in ["client_header", "keepalive", "client_body", "send"] {
            client_timeouts.with_label_values(&[name]);
        }
        let mcp_requests = IntCounterVec::new(
            Opts::new(
                "gateway_mcp_requests_total",
                "Requests on MCP routes by pool, JSON-RPC method, tool (tools/call) and outcome \
                 (ok; tool_error: a result with isError; rpc_error: a JSON-RPC error answer; \
                 denied, limited: refused by the gateway's grants or limits; refused: other \
                 4xx; failed: 5xx or no response)",
            ),
            &["route", "pool", "method", "tool", "outcome"],
        )
        .expect("startup: valid metric");
        let mcp_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_mcp_request_duration_seconds",
                "Time of requests on MCP routes by method and tool, to the end of the response",
            )
            .buckets(latency_buckets()),
            &["route", "method", "tool"],
        )
        .expect("startup: valid metric");
        let trace_spans_exported = IntCounter::new(
            "gateway_trace_spans_exported_total",
            "The gateway's spans accepted by the OTLP collector ([tracing])",
        )
        .expect("startup: valid metric");
        let trace_spans_dropped = IntCounterVec::new(
            Opts::new(
                "gateway_trace_spans_dropped_total",
                "The gateway's spans not exported: queue_full (the exporter fell behind), \
                 export_failed (the collector could not be reached in time or refused them)",
            ),
            &["reason"],
        )
        .expect("startup: valid metric");
        for reason in ["queue_full", "export_failed"] {
            trace_spans_dropped.with_label_values(&[reason]);
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_connect.clone()),
            Box::new(upstream_header.clone()),
            Box::new(upstream_response.clone()),
            Box::new(backend_in_flight.clone()),
            Box::new(backend_up.clone()),
            Box::new(active_streams.clone()),
            Box::new(retries.clone()),
            Box::new(config_generation.clone()),
            Box::new(config_reloads.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(audit_log_dropped.clone()),
            Box::new(client_timeouts.clone()),
            Box::new(mcp_requests.clone()),
            Box::new(mcp_duration.clone()),
            Box::new(trace_spans_exported.clone()),
            Box::new(trace_spans_dropped.clone()),
        ] {
            registry.register(c).expect("startup: unique metric names");
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            registry
                .register(Box::new(pc))
                .expect("startup: process collector registers once");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_connect,
            upstream_header,
            upstream_response,
            backend_in_flight,
            backend_up,
            active_streams,
            retries,
            config_generation,
            config_reloads,
            access_log_dropped,
            audit_log_dropped,
            client_timeouts,
            mcp_requests,
            mcp_duration,
            trace_spans_exported,
            trace_spans_dropped,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            log::error!("metrics: cannot encode: {e}");
        }
        buf
    }
}

/// Pre-resolved handles for one (route, pool) pair.
pub struct RouteMetrics {
    requests: [IntCounter; 6],
    pub duration: Histogram,
    pub connect: Histogram,
    pub header: Histogram,
    pub response: Histogram,
    pub retries: IntCounter,
}

impl RouteMetrics {
    pub fn new(route: &str, pool: &str) -> RouteMetrics {
        let m = &*METRICS;
        RouteMetrics {
            requests: STATUS_CLASSES.map(|c| m.requests.with_label_values(&[route, pool, c])),
            duration: m.request_duration.with_label_values(&[route, pool]),
            connect: m.upstream_connect.with_label_values(&[pool]),
            header: m.upstream_header.with_label_values(&[pool]),
            response: m.upstream_response.with_label_values(&[pool]),
            retries: m.retries.with_label_values(&[pool]),
        }
    }

    pub fn count(&self, status: u16) {
        self.requests[status_class_index(status)].inc();
    }
}

/// Counters for requests that matched no route (404) or were redirected.
pub struct UnroutedMetrics {
    requests: [IntCounter; 6],
    pub duration: Histogram,
}

impl UnroutedMetrics {
    pub fn new(route: &str) -> UnroutedMetrics {
        let m = &*METRICS;
        UnroutedMetrics {
            requests: STATUS_CLASSES.map(|c| m.requests.with_label_values(&[route, "", c])),
            duration: m.request_duration.with_label_values(&[route, ""]),
        }
    }

    pub fn count(&self, status: u16) {
        self.requests[status_class_index(status)].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class_index(204)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class_index(502)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class_index(0)], "other");
    }

    #[test]
    fn render_names_gateway_metrics() {
        let rm = RouteMetrics::new("mcp", "backend");
        rm.count(200);
        let text = String::from_utf8(METRICS.render()).unwrap();
        assert!(text.contains(
            "gateway_requests_total{pool=\"backend\",route=\"mcp\",status_class=\"2xx\"} 1"
        ));
    }
}
