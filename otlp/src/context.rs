//! W3C Trace Context (https://www.w3.org/TR/trace-context/, Level 1): the `traceparent`
//! header, parsed strictly, and the span context of one hop.
//!
//! `traceparent: 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, lower-case hex only.
//! Invalid: a version `ff`, upper-case or non-hex digits, an all-zero trace-id or parent-id, a
//! wrong length or separator. A version above `00` is read as the spec asks (its first four
//! fields, what follows them after a `-` ignored); what goes out is always version `00`.
//! An invalid header is never forwarded: the hop starts a new trace instead, and its
//! `tracestate` is dropped with it (section 3.3: "vendors MUST NOT attempt to parse
//! tracestate" then).

/// Trace flag bit 0: the caller may have recorded (and the receiver should record) the trace.
pub const SAMPLED: u8 = 0x01;

/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// Ids as lower-case hex, on the stack (the access log and OTLP JSON write them).
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0x0f) as usize];
    }
}

/// A lower-case hex digit's value (upper case is invalid in trace context).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

impl TraceId {
    /// A random, non-zero trace id.
    pub fn random() -> TraceId {
        loop {
            let v: u128 = rand::random();
            if v != 0 {
                return TraceId(v.to_be_bytes());
            }
        }
    }

    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }

    pub fn hex(&self) -> Hex<32> {
        let mut out = [0u8; 32];
        hex_into(&self.0, &mut out);
        Hex(out)
    }
}

impl SpanId {
    /// A random, non-zero span id.
    pub fn random() -> SpanId {
        loop {
            let v: u64 = rand::random();
            if v != 0 {
                return SpanId(v.to_be_bytes());
            }
        }
    }

    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }

    pub fn hex(&self) -> Hex<16> {
        let mut out = [0u8; 16];
        hex_into(&self.0, &mut out);
        Hex(out)
    }
}

/// A valid incoming `traceparent`: the caller's trace, its span (our parent) and its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
}

/// Parses one `traceparent` value strictly; None when it is invalid. Surrounding optional
/// whitespace (RFC 9110 OWS) is ignored.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let v = value.trim_ascii();
    if v.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = unhex::<1>(&v[0..2])?[0];
    match version {
        0xff => return None,
        0x00 if v.len() != TRACEPARENT_LEN => return None,
        // A later version may append fields, after a `-`.
        _ if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = TraceId(unhex::<16>(&v[3..35])?);
    let span_id = SpanId(unhex::<8>(&v[36..52])?);
    let flags = unhex::<1>(&v[53..55])?[0];
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        flags,
    })
}

/// Parses the `traceparent` header from all its lines: exactly one valid line, else None
/// (two lines would combine into a list no version-00 value can be).
pub fn parse_header_lines<'a>(mut lines: impl Iterator<Item = &'a [u8]>) -> Option<Parent> {
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    parse_traceparent(first)
}

/// One span's place in a trace: its trace, its own id, its parent's (None for a root span),
/// and the trace flags it carries on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// The parent is another process's span (it came in a `traceparent`).
    pub parent_remote: bool,
    pub flags: u8,
}

impl SpanContext {
    /// A new span continuing `parent` (a valid incoming `traceparent`), or the root span of a
    /// new, sampled trace when there is none. Only the flag bits Level 1 defines are kept.
    pub fn continue_or_start(parent: Option<Parent>) -> SpanContext {
        match parent {
            Some(p) => SpanContext {
                trace_id: p.trace_id,
                span_id: SpanId::random(),
                parent: Some(p.span_id),
                parent_remote: true,
                flags: p.flags & SAMPLED,
            },
            None => SpanContext {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent: None,
                parent_remote: false,
                flags: SAMPLED,
            },
        }
    }

    /// A child span of this one in the same process.
    pub fn child(&self) -> SpanContext {
        SpanContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            parent: Some(self.span_id),
            parent_remote: false,
            flags: self.flags,
        }
    }

    /// Set at all (a default context has a zero trace id).
    pub fn is_set(&self) -> bool {
        self.trace_id.is_valid()
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The `traceparent` value for the next hop: this span is its parent.
    pub fn traceparent(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        hex_into(&self.trace_id.0, &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id.0, &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let p = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert_eq!(
            p.trace_id.hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(p.span_id.hex().as_str(), "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        // Optional whitespace around the value.
        assert!(parse_traceparent(format!(" {GOOD}\t").as_bytes()).is_some());
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "00",
            "garbage",
            // upper-case hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero trace id, all-zero parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff, version 00 with more, short fields, bad separators
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // a later version glued to more text without a separator
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_fields() {
        let p =
            parse_traceparent(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-else")
                .unwrap();
        assert_eq!(p.flags, 9);
        let p = parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(p.is_some());
    }

    #[test]
    fn two_header_lines_are_invalid() {
        let one = [GOOD.as_bytes()];
        assert!(parse_header_lines(one.iter().copied()).is_some());
        let two = [GOOD.as_bytes(), GOOD.as_bytes()];
        assert!(parse_header_lines(two.iter().copied()).is_none());
        assert!(parse_header_lines(std::iter::empty()).is_none());
    }

    #[test]
    fn continues_or_starts_and_formats() {
        let p = parse_traceparent(GOOD.as_bytes()).unwrap();
        let c = SpanContext::continue_or_start(Some(p));
        assert_eq!(c.trace_id, p.trace_id);
        assert_eq!(c.parent, Some(p.span_id));
        assert!(c.parent_remote && c.sampled());
        assert_ne!(c.span_id, p.span_id);
        let tp = c.traceparent();
        let text = std::str::from_utf8(&tp).unwrap();
        assert!(text.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(text.ends_with("-01"));
        assert_eq!(parse_traceparent(&tp).unwrap().span_id, c.span_id);

        // Unknown flag bits are not passed on; unsampled stays unsampled.
        let p =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe").unwrap();
        let c = SpanContext::continue_or_start(Some(p));
        assert_eq!(c.flags, 0);
        assert!(std::str::from_utf8(&c.traceparent())
            .unwrap()
            .ends_with("-00"));

        let root = SpanContext::continue_or_start(None);
        assert!(root.is_set() && root.sampled() && root.parent.is_none());
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent, Some(root.span_id));
        assert!(!child.parent_remote);
        assert!(!SpanContext::default().is_set());
    }
}
