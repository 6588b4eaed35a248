//! HTTP/1.1 strictness like nginx, on what Pingora lets through to the request phase.
//!
//! Pingora's reader (`pingora-core` `protocols/http/v1/server.rs`, `HttpSession::read_request`)
//! already answers a plain 400 and closes, before any hook, for: httparse errors (bad tokens,
//! control characters in header values, over 256 headers), a header section over 1 MiB
//! (`MAX_HEADER_SIZE`, a constant), differing or non-numeric `Content-Length` values, a
//! `Transfer-Encoding` on HTTP/1.0 or without a final `chunked`, and an ambiguous authority. It
//! lets through, and this module refuses:
//! * `Content-Length` with `Transfer-Encoding`: Pingora drops the `Content-Length` and forwards
//!   chunked; RFC 9112 section 6.1 lets a server reject it, and nginx does (400). Seen in the raw
//!   header bytes, since the parsed header no longer has it.
//! * repeated `Content-Length` (even equal), `Transfer-Encoding` or `Host` lines: nginx's
//!   "client sent duplicate header line" (400).
//! * a `Transfer-Encoding` other than exactly `chunked` (nginx: 501).
//! * HTTP/1.1 without `Host` (RFC 9112 section 3.2: 400), or with an empty or malformed one.
//! * a method with other than `A-Z`, `_`, `-` (nginx's request-line parser: 400).
//! * header lines over the line limit and a header section over the total
//!   (`large_client_header_buffers 4 8k`: 414 for the request line, 431 for a header line).
//! * a raw space, `"`, `<`, `>` or control character in the request line: Pingora rewrites them
//!   into their `%XX` escape before any hook (`escape_illegal_request_line`), so the raw target
//!   is gone; with `strict_request_target` those escapes are refused (nginx 1.21.1+ refuses the
//!   raw characters).

use std::borrow::Cow;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession as HttpSession;

use crate::config::Limits;
use crate::edge::errors::GatewayError;
use crate::edge::path;

fn bad(message: &str) -> GatewayError {
    GatewayError {
        status: 400,
        code: "BAD_REQUEST",
        message: message.to_string(),
        hint: "",
    }
}

fn too_large(status: u16, message: &str) -> GatewayError {
    GatewayError {
        status,
        code: if status == 414 {
            "URI_TOO_LONG"
        } else {
            "HEADER_TOO_LARGE"
        },
        message: message.to_string(),
        hint: "send shorter header lines or fewer headers",
    }
}

/// What the raw header lines say that the parsed header no longer does.
#[derive(Default, Debug)]
struct RawCounts {
    content_length: usize,
    transfer_encoding: usize,
    host: usize,
}

/// Line and total limits, and the repeated framing headers, on the raw HTTP/1 header section
/// (request line included, as nginx counts it).
fn check_raw(raw: &[u8], limits: &Limits) -> Result<RawCounts, GatewayError> {
    if raw.len() > limits.header_total_size {
        return Err(too_large(431, "the request header section is too large"));
    }
    let mut counts = RawCounts::default();
    // memchr finds the line ends and colons a machine word at a time: this runs on every
    // request's whole header section.
    let mut start = 0;
    let mut first = true;
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |n| start + n);
        let line = &raw[start..end];
        start = end + 1;
        if line.len() > limits.header_line_size {
            return Err(if first {
                too_large(414, "the request line is too long")
            } else {
                too_large(431, "a request header line is too long")
            });
        }
        if std::mem::take(&mut first) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        // Only three names are counted: their lengths rule out every other header at once.
        let name = &line[..colon];
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => counts.content_length += 1,
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => counts.transfer_encoding += 1,
            4 if name.eq_ignore_ascii_case(b"host") => counts.host += 1,
            _ => {}
        }
    }
    Ok(counts)
}

/// The escapes Pingora writes for raw characters httparse refuses in a request target (its
/// `URI_ESC_CHARSET`: controls, space, `"`, `<`, `>`).
fn has_illegal_escape(target: &[u8]) -> bool {
    target.windows(3).any(|w| {
        if w[0] != b'%' {
            return false;
        }
        let hex = |b: u8| (b as char).to_digit(16);
        match (hex(w[1]), hex(w[2])) {
            (Some(hi), Some(lo)) => {
                let c = (hi << 4 | lo) as u8;
                c < 0x21 || c == 0x7f || matches!(c, b'"' | b'<' | b'>')
            }
            _ => false,
        }
    })
}

/// RFC 9110 section 7.2 / RFC 3986 section 3.2.2: a host, optionally `:port`, without
/// whitespace, `/`, `\`, `?`, `#` or `@` (nginx's `ngx_http_validate_host` refuses those).
fn valid_host(v: &[u8]) -> bool {
    !v.is_empty()
        && !v.iter().any(|b| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || matches!(b, b'/' | b'\\' | b'?' | b'#' | b'@')
        })
        && v[0] != b'.'
}

/// Nothing, or the refusal the request gets (the connection is then closed). `raw` is the
/// HTTP/1 header section as received; None for HTTP/2.
pub fn check(req: &RequestHeader, raw: Option<&[u8]>, limits: &Limits) -> Result<(), GatewayError> {
    if let Some(raw) = raw {
        let n = check_raw(raw, limits)?;
        if n.content_length > 0 && n.transfer_encoding > 0 {
            return Err(bad(
                "the request has both Content-Length and Transfer-Encoding",
            ));
        }
        if n.content_length > 1 || n.transfer_encoding > 1 {
            return Err(bad("the request repeats a framing header"));
        }
        if n.host > 1 {
            return Err(bad("the request has more than one Host header"));
        }
    }
    // nginx's request-line parser takes only `A-Z`, `_` and `-` in a method.
    let method = req.method.as_str().bytes();
    if !method
        .clone()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Err(bad("the request method is not an upper-case token"));
    }
    let te = req.headers.get_all(TRANSFER_ENCODING);
    if te.iter().count() > 0
        && !te
            .iter()
            .all(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(GatewayError {
            status: 501,
            code: "NOT_IMPLEMENTED",
            message: "only Transfer-Encoding: chunked is supported".into(),
            hint: "",
        });
    }
    if let Some(cl) = req.headers.get(CONTENT_LENGTH) {
        let v = cl.as_bytes();
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Err(bad("the request has an invalid Content-Length"));
        }
    }
    match req.headers.get(HOST) {
        Some(h) if !valid_host(h.as_bytes()) => {
            return Err(bad("the request has an invalid Host header"))
        }
        // Even with an absolute-form target (RFC 9112 section 3.2: a client MUST send Host;
        // nginx refuses it too). An HTTP/2 request carries :authority instead.
        None if req.version == http::Version::HTTP_11 => {
            return Err(bad("an HTTP/1.1 request needs a Host header"));
        }
        _ => {}
    }
    if limits.strict_request_target && has_illegal_escape(req.raw_path()) {
        return Err(bad(
            "the request target has a space, quote, angle bracket or control character",
        ));
    }
    Ok(())
}

/// [`check`] on a session's request: the raw header section of an HTTP/1 one, as received.
pub fn check_session(session: &HttpSession, limits: &Limits) -> Result<(), GatewayError> {
    let raw = session.as_http1().map(|h1| h1.get_headers_raw_bytes());
    check(session.req_header(), raw.as_deref(), limits)
}

/// The path to route on and send upstream when it is not the request's own: normalised
/// (`edge::path`), or the path of an absolute-form target (sent upstream in origin-form, as
/// nginx does: RFC 9112 section 3.2.2). Err: the 400 the request gets.
pub fn normalized(req: &RequestHeader) -> Result<Option<String>, GatewayError> {
    match path::normalize(req.uri.path()) {
        Ok(Cow::Owned(p)) => Ok(Some(p)),
        Ok(Cow::Borrowed(p)) if !req.raw_path().starts_with(b"/") => Ok(Some(p.to_string())),
        Ok(Cow::Borrowed(_)) => Ok(None),
        Err(e) => Err(bad(e.reason())),
    }
}

/// The upstream target: `path` with the query as the client sent it.
pub fn with_query(path: &str, query: Option<&str>) -> Result<http::Uri, http::uri::InvalidUri> {
    match query {
        Some(q) => format!("{path}?{q}").parse(),
        None => path.parse(),
    }
}

/// A client string cut for a log line (about 200 bytes, on a character boundary).
pub fn bounded(s: &str) -> &str {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_line_size: 64,
            header_total_size: 256,
            strict_request_target: true,
            client_header_timeout: std::time::Duration::from_secs(60),
            client_body_timeout: std::time::Duration::from_secs(60),
            send_timeout: std::time::Duration::from_secs(60),
            keepalive_timeout: std::time::Duration::from_secs(75),
            keepalive_requests: 1000,
        }
    }

    fn req(version: http::Version, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        r.set_version(version);
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn status(raw: &str, r: &RequestHeader) -> u16 {
        match check(r, Some(raw.as_bytes()), &limits()) {
            Ok(()) => 200,
            Err(e) => e.status,
        }
    }

    #[test]
    fn host_rules() {
        let v11 = http::Version::HTTP_11;
        let ok = req(v11, "/", &[("Host", "a.example:8080")]);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ok), 200);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n", &req(v11, "/", &[])), 400);
        let v10 = req(http::Version::HTTP_10, "/", &[]);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n", &v10), 200);
        let abs = req(v11, "http://a.example/x", &[]);
        assert_eq!(status("GET http://a.example/x HTTP/1.1\r\n\r\n", &abs), 400);
        let two = "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n";
        assert_eq!(status(two, &ok), 400);
        for h in ["", "a b", "a/b", "a@b"] {
            assert_eq!(
                status("GET / HTTP/1.1\r\n\r\n", &req(v11, "/", &[("Host", h)])),
                400,
                "{h:?}"
            );
        }
    }

    #[test]
    fn framing_rules() {
        let v11 = http::Version::HTTP_11;
        let te = req(v11, "/", &[("Host", "a"), ("Transfer-Encoding", "chunked")]);
        let both =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(both, &te), 400);
        let raw_te = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(raw_te, &te), 200);
        let gz = req(
            v11,
            "/",
            &[("Host", "a"), ("Transfer-Encoding", "gzip, chunked")],
        );
        assert_eq!(status(raw_te, &gz), 501);
        let cl = req(v11, "/", &[("Host", "a"), ("Content-Length", "3")]);
        let dup = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(status(dup, &cl), 400);
        // Names in any case, on the last line without its line end, and names of the same
        // length as a counted one are told apart.
        let host = req(v11, "/", &[("Host", "a")]);
        assert_eq!(status("GET / HTTP/1.1\r\nHOST: a\r\nhost: b", &host), 400);
        let te_upper =
            "POST / HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(status(te_upper, &te), 400);
        let lookalikes = "GET / HTTP/1.1\r\nHost: a\r\nHose: b\r\nContent-Lengtx: 1\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(status(lookalikes, &cl), 200);
        let plus = req(v11, "/", &[("Host", "a"), ("Content-Length", "+3")]);
        assert_eq!(status("POST / HTTP/1.1\r\n\r\n", &plus), 400);
    }

    #[test]
    fn limits_and_targets() {
        let v11 = http::Version::HTTP_11;
        let ok = req(v11, "/", &[("Host", "a")]);
        let long_line = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70));
        assert_eq!(status(&long_line, &ok), 431);
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70));
        assert_eq!(status(&long_target, &ok), 414);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 0123456789\r\n".repeat(20));
        assert_eq!(status(&many, &ok), 431);
        for t in ["/a%20b", "/a%00", "/a?x=%3c", "/%7F"] {
            assert_eq!(
                status("GET / HTTP/1.1\r\n\r\n", &req(v11, t, &[("Host", "a")])),
                400,
                "{t}"
            );
        }
        let fine = req(v11, "/a%C3%A9?q=%2B", &[("Host", "a")]);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n", &fine), 200);
    }

    #[test]
    fn bounded_cuts_on_a_char_boundary() {
        let s = "é".repeat(150);
        assert!(bounded(&s).len() <= 200);
        assert_eq!(bounded("short"), "short");
    }
}
