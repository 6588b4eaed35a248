//! The key a `hash` pool hashes on: the client address, a header or a cookie. A request without
//! the header/cookie falls back to its client address, so it still lands on a stable replica
//! (the 2024-11-05 SSE transport needs GET /sse and POST /messages of one client on one replica).

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::config::HashKey;

/// Writes the key into `buf` (reused per request) and returns it.
pub fn key<'a>(
    how: &HashKey,
    req: &RequestHeader,
    client: IpAddr,
    buf: &'a mut Vec<u8>,
) -> &'a [u8] {
    buf.clear();
    match how {
        HashKey::ClientIp => {}
        HashKey::Header(name) => {
            if let Some(v) = req.headers.get(name.as_str()) {
                buf.extend_from_slice(v.as_bytes());
                return buf;
            }
        }
        HashKey::Cookie(name) => {
            if let Some(v) = cookie(req, name) {
                buf.extend_from_slice(v);
                return buf;
            }
        }
    }
    use std::io::Write;
    let _ = write!(buf, "{client}");
    buf
}

/// The value of cookie `name` in any `Cookie` header.
pub fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    for h in req.headers.get_all(http::header::COOKIE) {
        for pair in h.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    return Some(value);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let mut req = RequestHeader::build("GET", b"/sse", None).unwrap();
        req.insert_header("cookie", "a=1; sid=abc; b=2").unwrap();
        req.insert_header("x-client", "c42").unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut buf = Vec::new();
        assert_eq!(key(&HashKey::ClientIp, &req, ip, &mut buf), b"192.0.2.1");
        assert_eq!(
            key(&HashKey::Header("X-Client".into()), &req, ip, &mut buf),
            b"c42"
        );
        assert_eq!(
            key(&HashKey::Cookie("sid".into()), &req, ip, &mut buf),
            b"abc"
        );
        assert_eq!(
            key(&HashKey::Cookie("nope".into()), &req, ip, &mut buf),
            b"192.0.2.1"
        );
    }
}
