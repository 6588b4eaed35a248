//! Prometheus metrics with the existing Task MCP server's names in Prometheus form (`_total`, `_seconds`).
//! Labels stay low-cardinality: the matched route pattern (never the raw path), the method,
//! the status code, the tool name (a fixed set) and the outcome.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_active: IntGauge,
    pub tool_executions: IntCounterVec,
    pub tool_duration: HistogramVec,
    pub tool_active: IntGauge,
    pub streaming_active: IntGaugeVec,
    pub streaming_messages: IntCounterVec,
    pub streaming_bytes: IntCounterVec,
}

/// Latency buckets from 0.5 ms (a cached read) to 30 s (the default call timeout).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Registration fails only on duplicate or malformed names, which are constants here.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("http_server_requests_total", "HTTP requests served"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "HTTP request duration until the last body byte (streams included)",
            )
            .buckets(BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let http_active =
            IntGauge::new("http_server_active_requests", "HTTP requests in progress")?;
        let tool_executions = IntCounterVec::new(
            Opts::new(
                "tool_executions_total",
                "Tool executions by outcome (ok or the error code)",
            ),
            &["tool", "outcome"],
        )?;
        let tool_duration = HistogramVec::new(
            HistogramOpts::new("tool_execution_duration_seconds", "Tool execution duration")
                .buckets(BUCKETS.to_vec()),
            &["tool"],
        )?;
        let tool_active = IntGauge::new("tool_active_executions", "Tool executions in progress")?;
        let streaming_active = IntGaugeVec::new(
            Opts::new(
                "streaming_active_connections",
                "Open streaming responses (SSE, NDJSON)",
            ),
            &["transport"],
        )?;
        let streaming_messages = IntCounterVec::new(
            Opts::new(
                "streaming_messages_total",
                "Messages (events, lines) written to streams",
            ),
            &["transport"],
        )?;
        let streaming_bytes = IntCounterVec::new(
            Opts::new(
                "streaming_bytes_transferred_total",
                "Bytes written to streams",
            ),
            &["transport"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(http_active.clone()))?;
        registry.register(Box::new(tool_executions.clone()))?;
        registry.register(Box::new(tool_duration.clone()))?;
        registry.register(Box::new(tool_active.clone()))?;
        registry.register(Box::new(streaming_active.clone()))?;
        registry.register(Box::new(streaming_messages.clone()))?;
        registry.register(Box::new(streaming_bytes.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            http_active,
            tool_executions,
            tool_duration,
            tool_active,
            streaming_active,
            streaming_messages,
            streaming_bytes,
        })
    }

    /// Adds a collector owned elsewhere (e.g. the Redis rate limit's error counter).
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}
