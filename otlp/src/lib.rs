//! Distributed tracing shared by the gateway and the backend: W3C Trace Context
//! (`traceparent`, [`context`]), spans encoded as OTLP/HTTP JSON ([`json`]), and a
//! non-blocking exporter that sends them in batches from a background thread ([`export`]).
//!
//! A hand-written exporter instead of the OpenTelemetry SDK: the two binaries need one span
//! shape each and one transport, and the SDK's stack (tonic or reqwest, its runtime glue) would
//! cost more to build and carry than the ~500 lines here. The encoding follows the OTLP
//! specification's JSON mapping exactly, so an OpenTelemetry Collector (or anything speaking
//! OTLP/HTTP JSON) accepts it.

pub mod context;
pub mod export;
pub mod json;
pub mod semconv;

pub use context::{parse_header_lines, parse_traceparent, Parent, SpanContext, SpanId, TraceId};
pub use export::{Counters, Endpoint, Exporter, Settings};
pub use json::{Attributes, Kind, Resource, Span, Status};

/// Nanoseconds since the Unix epoch, now.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
