//! Header policy: what the gateway adds to requests going upstream (forwarding headers, request
//! id, Host) and to every response (security headers, HSTS on HTTPS only, a version-less Server,
//! the request id). Header names and values are parsed once per state build.

use std::io::Write;
use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, HOST, SERVER, STRICT_TRANSPORT_SECURITY};
use pingora::http::{RequestHeader, ResponseHeader};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Response headers of one route (or the global set for gateway-made responses outside routes).
#[derive(Debug, Clone, Default)]
pub struct ResponseHeaders {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
    hsts: Option<HeaderValue>,
    server: Option<HeaderValue>,
}

impl ResponseHeaders {
    /// `pairs` as the config gives them (a `""` value removes the header); names and values were
    /// validated by the config model, anything unparsable is reported here with its name.
    pub fn build(
        pairs: &[(String, String)],
        hsts: Option<&str>,
        server: Option<&str>,
    ) -> Result<ResponseHeaders, String> {
        let mut out = ResponseHeaders::default();
        for (name, value) in pairs {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header name {name:?}: {e}"))?;
            if value.is_empty() {
                out.remove.push(n);
            } else {
                let v = HeaderValue::from_str(value)
                    .map_err(|e| format!("header {name}: value {value:?}: {e}"))?;
                out.set.push((n, v));
            }
        }
        out.hsts = hsts
            .map(|h| HeaderValue::from_str(h).map_err(|e| format!("hsts {h:?}: {e}")))
            .transpose()?;
        out.server = server
            .map(|s| HeaderValue::from_str(s).map_err(|e| format!("server {s:?}: {e}")))
            .transpose()?;
        Ok(out)
    }

    pub fn apply(&self, resp: &mut ResponseHeader, tls: bool, request_id: &str) {
        for n in &self.remove {
            resp.remove_header(n);
        }
        for (n, v) in &self.set {
            let _ = resp.insert_header(n.clone(), v.clone());
        }
        match (&self.hsts, tls) {
            (Some(h), true) => {
                let _ = resp.insert_header(STRICT_TRANSPORT_SECURITY, h.clone());
            }
            // Never let an upstream's HSTS leak onto plain HTTP.
            _ => {
                resp.remove_header(&STRICT_TRANSPORT_SECURITY);
            }
        }
        match &self.server {
            Some(s) => {
                let _ = resp.insert_header(SERVER, s.clone());
            }
            None => {
                resp.remove_header(&SERVER);
            }
        }
        let _ = resp.insert_header(X_REQUEST_ID.clone(), request_id);
    }
}

/// A client-supplied X-Request-ID is kept when it is short and plain (it ends up in logs and
/// upstream headers), else the gateway makes one.
pub fn request_id(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        {
            // ASCII checked just above.
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    // Encoded straight into its buffer (Display would go through the formatter).
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// Longest text form of an IP address: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
pub const IP_TEXT_MAX: usize = 45;

/// `ip` as text in `buf`, without allocating: IPv4 digit by digit (the formatter costs about
/// ten times as much, and this runs twice per request), IPv6 through `Display`.
pub fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &str {
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            // Cannot overflow: IP_TEXT_MAX is the longest form Display writes.
            let _ = write!(cur, "{ip}");
            cur.position() as usize
        }
    };
    // Digits, dots, hex and colons only.
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// The forwarding headers of the nginx it replaces: X-Forwarded-For appended, X-Real-IP,
/// X-Forwarded-Proto, and Host kept (taken from the URI authority for HTTP/2 clients, which send
/// `:authority` instead of Host).
///
/// `client` is the client after `[real_ip]` (the TCP peer unless that peer is a trusted proxy)
/// and goes out as X-Real-IP. `peer` is the TCP peer: X-Forwarded-For gets the incoming chain
/// (every line, never trusted here) plus the peer, so it records each hop honestly. nginx with
/// realip differs: `$proxy_add_x_forwarded_for` appends `$remote_addr`, which realip has already
/// replaced by the client, so nginx sends "client, client" and drops the proxy hop (the peer
/// survives only in `$realip_remote_addr`). Without a peer address (not an inet socket), the
/// client text is appended, as before.
pub fn forward(
    req: &mut RequestHeader,
    client: &str,
    peer: Option<IpAddr>,
    tls: bool,
    request_id: &str,
) {
    let mut buf = [0u8; IP_TEXT_MAX];
    let hop: &[u8] = match peer {
        Some(ip) => ip_text(ip, &mut buf).as_bytes(),
        None => client.as_bytes(),
    };
    let mut incoming = req
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty());
    let xff = match incoming.next() {
        Some(first) => {
            let mut v = Vec::with_capacity(first.len() + 2 + hop.len());
            v.extend_from_slice(first);
            // Several header lines are one list (RFC 9110 §5.3), in order.
            for more in incoming {
                v.extend_from_slice(b", ");
                v.extend_from_slice(more);
            }
            v.extend_from_slice(b", ");
            v.extend_from_slice(hop);
            // Hands the buffer over without a copy.
            HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
        }
        None => HeaderValue::from_bytes(hop).ok(),
    };
    if let Some(xff) = xff {
        let _ = req.insert_header(X_FORWARDED_FOR.clone(), xff);
    }
    let _ = req.insert_header(X_REAL_IP.clone(), client);
    let _ = req.insert_header(
        X_FORWARDED_PROTO.clone(),
        if tls { "https" } else { "http" },
    );
    let _ = req.insert_header(X_REQUEST_ID.clone(), request_id);
    if req.headers.get(HOST).is_none() {
        if let Some(auth) = req.uri.authority().map(|a| a.as_str().to_owned()) {
            let _ = req.insert_header(HOST, auth);
        }
    }
}

/// The request body's declared length (`Content-Length`, already checked by `edge::strict`).
pub fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// `Expect: 100-continue` (RFC 9110 section 10.1.1): the client holds the body back until a
/// 100 Continue, so the gateway must not wait to read it.
pub fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The request's host without port, lower-cased only when needed (routing and redirects).
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    let raw = match req.headers.get(HOST) {
        Some(h) => h.to_str().ok()?,
        None => req.uri.authority()?.as_str(),
    };
    Some(strip_port(raw))
}

fn strip_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        // [v6]:port
        return match rest.find(']') {
            Some(end) => &hostport[..end + 2],
            None => hostport,
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers() {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        req.insert_header("x-forwarded-for", "203.0.113.9").unwrap();
        req.insert_header("host", "example.com:8443").unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        forward(&mut req, "127.0.0.1", Some(peer), true, "abc");
        let h = |n: &str| req.headers.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(h("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
        assert_eq!(h("x-real-ip"), "127.0.0.1");
        assert_eq!(h("x-forwarded-proto"), "https");
        assert_eq!(h("x-request-id"), "abc");
        assert_eq!(h("host"), "example.com:8443");
    }

    #[test]
    fn resolved_client_is_x_real_ip_and_the_peer_ends_the_chain() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-forwarded-for", "198.51.100.1")
            .unwrap();
        req.append_header("x-forwarded-for", "203.0.113.7").unwrap();
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        forward(&mut req, "203.0.113.7", Some(peer), false, "abc");
        let h = |n: &str| req.headers.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(h("x-forwarded-for"), "198.51.100.1, 203.0.113.7, 10.1.2.3");
        assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h("x-real-ip"), "203.0.113.7");

        // No incoming chain; the longest IPv6 text fits the stack buffer.
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        forward(&mut req, "x", Some(v6), false, "abc");
        let xff = req
            .headers
            .get("x-forwarded-for")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(xff.parse::<IpAddr>().unwrap(), v6);
    }

    #[test]
    fn ip_text_is_display() {
        let mut buf = [0u8; IP_TEXT_MAX];
        let mut ips: Vec<IpAddr> = ["::1", "2001:db8::7", "::ffff:192.0.2.1", "255.255.255.255"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        // Every octet value in every place: 0..=255 with one, two and three digits.
        ips.extend((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, o.wrapping_mul(7)])));
        for ip in ips {
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }

    #[test]
    fn request_ids() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "client-id_1.2:3")
            .unwrap();
        assert_eq!(request_id(&req), "client-id_1.2:3");
        req.insert_header("x-request-id", "bad id with spaces")
            .unwrap();
        let made = request_id(&req);
        assert_eq!(made.len(), 36);
        let parsed = uuid::Uuid::parse_str(&made).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(made, parsed.hyphenated().to_string());
        assert_ne!(made, request_id(&req));
    }

    #[test]
    fn hosts() {
        assert_eq!(strip_port("example.com:8443"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8443"), "[::1]");
    }

    #[test]
    fn response_headers() {
        let rh = ResponseHeaders::build(
            &[
                ("X-Frame-Options".into(), "DENY".into()),
                ("X-Powered-By".into(), "".into()),
            ],
            Some("max-age=1"),
            Some("gateway"),
        )
        .unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("server", "nginx/1.25").unwrap();
        resp.insert_header("x-powered-by", "express").unwrap();
        rh.apply(&mut resp, false, "r1");
        assert!(resp.headers.get("strict-transport-security").is_none());
        assert!(resp.headers.get("x-powered-by").is_none());
        assert_eq!(resp.headers.get("server").unwrap(), "gateway");
        rh.apply(&mut resp, true, "r1");
        assert_eq!(
            resp.headers.get("strict-transport-security").unwrap(),
            "max-age=1"
        );
        assert_eq!(resp.headers.get("x-frame-options").unwrap(), "DENY");
    }
}
