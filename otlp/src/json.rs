//! OTLP/HTTP JSON encoding of spans: an `ExportTraceServiceRequest` as the OTLP specification
//! maps it to JSON (opentelemetry-proto, "JSON Protobuf Encoding"): lowerCamelCase field
//! names, trace and span ids as hex strings (not base64), enums as integers, 64-bit integers
//! (times, `intValue`) as decimal strings, fields at their zero value left out.

use std::io::Write;

use crate::context::SpanContext;

/// `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// `Status`: unset (left out), or an error with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<'a> {
    Unset,
    Error(&'a str),
}

/// `SpanFlags`: the trace flags in bits 0-7, and whether the parent is remote (bits 8, 9).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// One finished span, encoded by the exporter's thread (never on a request path).
pub trait Span: Send + 'static {
    fn context(&self) -> &SpanContext;
    /// Appends the span's name to `out`.
    fn name(&self, out: &mut String);
    fn kind(&self) -> Kind;
    /// Start and end, in nanoseconds since the Unix epoch.
    fn times(&self) -> (u64, u64);
    fn attributes(&self, out: &mut Attributes<'_>);
    fn status(&self) -> Status<'_>;
}

/// Writes the entries of an `attributes` array.
pub struct Attributes<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl Attributes<'_> {
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(b"{\"key\":");
        json_str(self.out, key);
        self.out.extend_from_slice(b",\"value\":{");
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.extend_from_slice(b"\"stringValue\":");
        json_str(self.out, value);
        self.out.extend_from_slice(b"}}");
    }

    /// Written with `Display`, as a string value (an address, a number kept as text).
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        self.str(key, &value.to_string());
    }

    pub fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        let _ = write!(self.out, "\"intValue\":\"{value}\"}}}}");
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        let _ = write!(self.out, "\"boolValue\":{value}}}}}");
    }
}

/// What every span of one exporter shares: the resource and the instrumentation scope.
#[derive(Clone, Debug)]
pub struct Resource {
    /// `service.name`.
    pub service_name: String,
    /// `service.version`.
    pub service_version: String,
    /// The instrumentation scope's name (the program).
    pub scope: &'static str,
}

/// The request body for `spans`.
pub fn encode<S: Span>(resource: &Resource, spans: &[S]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + spans.len() * 512);
    out.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    {
        let mut a = Attributes {
            out: &mut out,
            first: true,
        };
        a.str("service.name", &resource.service_name);
        a.str("service.version", &resource.service_version);
        a.str("telemetry.sdk.language", "rust");
    }
    out.extend_from_slice(b"]},\"scopeSpans\":[{\"scope\":{\"name\":");
    json_str(&mut out, resource.scope);
    out.extend_from_slice(b",\"version\":");
    json_str(&mut out, &resource.service_version);
    out.extend_from_slice(b"},\"spans\":[");
    let mut name = String::new();
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        name.clear();
        s.name(&mut name);
        span(&mut out, s, &name);
    }
    out.extend_from_slice(b"]}]}]}");
    out
}

fn span<S: Span>(out: &mut Vec<u8>, s: &S, name: &str) {
    let c = s.context();
    let (start, end) = s.times();
    let mut flags = u32::from(c.flags) | HAS_IS_REMOTE;
    if c.parent_remote {
        flags |= IS_REMOTE;
    }
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"spanId\":\"{}\"",
        c.trace_id.hex(),
        c.span_id.hex()
    );
    if let Some(p) = c.parent {
        let _ = write!(out, ",\"parentSpanId\":\"{}\"", p.hex());
    }
    let _ = write!(out, ",\"flags\":{flags},\"name\":");
    json_str(out, name);
    let _ = write!(
        out,
        ",\"kind\":{},\"startTimeUnixNano\":\"{start}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        s.kind() as u8,
        end.max(start)
    );
    s.attributes(&mut Attributes {
        out: &mut *out,
        first: true,
    });
    out.push(b']');
    if let Status::Error(message) = s.status() {
        out.extend_from_slice(b",\"status\":{\"code\":2");
        if !message.is_empty() {
            out.extend_from_slice(b",\"message\":");
            json_str(out, message);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{parse_traceparent, SpanContext};

    struct Test(SpanContext, Status<'static>);

    impl Span for Test {
        fn context(&self) -> &SpanContext {
            &self.0
        }
        fn name(&self, out: &mut String) {
            out.push_str("POST /mcp \"x\"");
        }
        fn kind(&self) -> Kind {
            Kind::Server
        }
        fn times(&self) -> (u64, u64) {
            (1_700_000_000_000_000_000, 1_700_000_000_000_500_000)
        }
        fn attributes(&self, a: &mut Attributes<'_>) {
            a.str("http.request.method", "POST");
            a.int("http.response.status_code", 200);
            a.bool("error", false);
            a.display("client.address", std::net::Ipv4Addr::LOCALHOST);
        }
        fn status(&self) -> Status<'_> {
            self.1
        }
    }

    #[test]
    fn encodes_the_otlp_json_mapping() {
        let p = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let c = SpanContext::continue_or_start(p);
        let root = SpanContext::continue_or_start(None);
        let r = Resource {
            service_name: "svc".into(),
            service_version: "1.2.3".into(),
            scope: "test",
        };
        let body = encode(
            &r,
            &[Test(c, Status::Unset), Test(root, Status::Error("boom"))],
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "svc"}})
        );
        let ss = &rs["scopeSpans"][0];
        assert_eq!(ss["scope"]["name"], "test");
        let s = &ss["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(s["spanId"], c.span_id.hex().as_str());
        assert_eq!(s["flags"], 0x301);
        assert_eq!(s["name"], "POST /mcp \"x\"");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000000500000");
        assert_eq!(
            s["attributes"][1],
            serde_json::json!({"key": "http.response.status_code", "value": {"intValue": "200"}})
        );
        assert_eq!(s["attributes"][2]["value"]["boolValue"], false);
        assert_eq!(s["attributes"][3]["value"]["stringValue"], "127.0.0.1");
        assert!(s.get("status").is_none());
        let root_span = &ss["spans"][1];
        assert!(root_span.get("parentSpanId").is_none());
        assert_eq!(root_span["flags"], 0x101);
        assert_eq!(
            root_span["status"],
            serde_json::json!({"code": 2, "message": "boom"})
        );
    }
}
