//! gzip of responses, like the replaced nginx.conf's `gzip on; gzip_types ...; gzip_min_length 1024;
//! gzip_vary on`. Done here rather than with Pingora's ResponseCompression module because that
//! module decides by its own MIME list and minimum size (20 bytes), ignores Accept-Encoding
//! q-values and prefers the first listed algorithm, so it cannot be held to the configured
//! types. Streams (SSE, NDJSON, `stream = true` routes) are never compressed: a gzip stream
//! would hold events back until a block fills.

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, TRANSFER_ENCODING, VARY,
};
use pingora::http::{RequestHeader, ResponseHeader};
use std::io::Write;

use crate::config;

#[derive(Debug, Clone)]
pub struct GzipPolicy {
    level: u32,
    min_length: u64,
    types: Vec<String>,
    vary: bool,
}

impl GzipPolicy {
    /// None when gzip is off.
    pub fn from_config(cfg: &config::Gzip) -> Option<GzipPolicy> {
        cfg.enabled.then(|| GzipPolicy {
            level: cfg.level.clamp(1, 9),
            min_length: cfg.min_length,
            types: cfg.types.iter().map(|t| t.to_ascii_lowercase()).collect(),
            vary: cfg.vary,
        })
    }

    /// Decide for one response; adjusts the header (Vary, and when compressing Content-Encoding,
    /// no Content-Length, chunked framing) and returns the compressor to run on the body.
    pub fn start(
        &self,
        client_accepts: bool,
        head_request: bool,
        resp: &mut ResponseHeader,
    ) -> Option<Gzipper> {
        let status = resp.status.as_u16();
        if head_request || matches!(status, 100..=199 | 204 | 206 | 304) {
            return None;
        }
        if resp.headers.contains_key(CONTENT_ENCODING) {
            return None;
        }
        let media = media_type(resp);
        if media.is_empty() || is_stream_type(media) || !self.types.iter().any(|t| t == media) {
            return None;
        }
        if let Some(len) = content_length(resp) {
            if len < self.min_length {
                return None;
            }
        }
        if self.vary {
            add_vary(resp);
        }
        if !client_accepts {
            return None;
        }
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ACCEPT_RANGES);
        let _ = resp.insert_header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        // HTTP/1.1 needs explicit framing once the length is unknown; Pingora drops this header
        // itself on HTTP/2.
        let _ = resp.insert_header(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        if let Some(etag) = resp.headers.get(ETAG).map(|e| e.as_bytes().to_vec()) {
            if etag.starts_with(b"\"") {
                if let Ok(weak) = HeaderValue::from_bytes(&[b"W/".as_slice(), &etag].concat()) {
                    let _ = resp.insert_header(ETAG, weak);
                }
            }
        }
        Some(Gzipper {
            enc: GzEncoder::new(Vec::with_capacity(4096), Compression::new(self.level)),
        })
    }
}

/// `text/event-stream` and NDJSON are streams whatever the route says.
pub fn is_stream_type(media: &str) -> bool {
    media.eq_ignore_ascii_case("text/event-stream")
        || media.eq_ignore_ascii_case("application/x-ndjson")
        || media.eq_ignore_ascii_case("application/ndjson")
}

/// The media type without parameters, as written (compare case-insensitively).
pub fn media_type(resp: &ResponseHeader) -> &str {
    resp.headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

fn content_length(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn add_vary(resp: &mut ResponseHeader) {
    let present = resp.headers.get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .map(|t| t.trim_ascii())
            .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding"))
    });
    if !present {
        let _ = resp.append_header(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Does the client take gzip? `gzip` or `*` listed with a non-zero q.
pub fn accepts_gzip(req: &RequestHeader) -> bool {
    let mut star = false;
    for h in req.headers.get_all(ACCEPT_ENCODING) {
        let Ok(s) = h.to_str() else { continue };
        for item in s.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if coding.eq_ignore_ascii_case("gzip") {
                return !q_zero;
            }
            if coding == "*" {
                star = !q_zero;
            }
        }
    }
    star
}

/// Streaming gzip of one response body.
pub struct Gzipper {
    enc: GzEncoder<Vec<u8>>,
}

impl Gzipper {
    /// Replace `body` with its compressed form (possibly empty until enough input arrived).
    pub fn filter(&mut self, body: &mut Option<Bytes>, end: bool) {
        if let Some(data) = body.as_ref() {
            // Writing into a Vec cannot fail.
            let _ = self.enc.write_all(data);
        }
        if end {
            let _ = self.enc.try_finish();
        }
        let out = std::mem::take(self.enc.get_mut());
        *body = if out.is_empty() && !end {
            None
        } else {
            Some(Bytes::from(out))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn policy() -> GzipPolicy {
        GzipPolicy {
            level: 6,
            min_length: 1024,
            types: vec!["application/json".into(), "text/plain".into()],
            vary: true,
        }
    }

    fn resp(ct: &str, len: Option<usize>) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("content-type", ct).unwrap();
        if let Some(l) = len {
            r.insert_header("content-length", l.to_string()).unwrap();
        }
        r
    }

    #[test]
    fn decisions() {
        let p = policy();
        let mut r = resp("application/json; charset=utf-8", Some(5000));
        assert!(p.start(true, false, &mut r).is_some());
        assert_eq!(r.headers.get("content-encoding").unwrap(), "gzip");
        assert!(r.headers.get("content-length").is_none());
        assert_eq!(r.headers.get("vary").unwrap(), "Accept-Encoding");

        let mut small = resp("application/json", Some(100));
        assert!(p.start(true, false, &mut small).is_none());
        let mut sse = resp("text/event-stream", None);
        assert!(p.start(true, false, &mut sse).is_none());
        let mut png = resp("image/png", Some(5000));
        assert!(p.start(true, false, &mut png).is_none());
        let mut no_ae = resp("text/plain", Some(5000));
        assert!(p.start(false, false, &mut no_ae).is_none());
        assert_eq!(no_ae.headers.get("vary").unwrap(), "Accept-Encoding");
        assert_eq!(no_ae.headers.get("content-length").unwrap(), "5000");
    }

    #[test]
    fn accept_encoding() {
        let req = |v: &str| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            r.insert_header("accept-encoding", v).unwrap();
            r
        };
        assert!(accepts_gzip(&req("gzip")));
        assert!(accepts_gzip(&req("br, gzip;q=0.5")));
        assert!(!accepts_gzip(&req("gzip;q=0")));
        assert!(!accepts_gzip(&req("br")));
        assert!(accepts_gzip(&req("*")));
        assert!(!accepts_gzip(
            &RequestHeader::build("GET", b"/", None).unwrap()
        ));
    }

    #[test]
    fn round_trip() {
        let p = policy();
        let mut r = resp("text/plain", None);
        let mut gz = p.start(true, false, &mut r).unwrap();
        let mut out = Vec::new();
        for chunk in ["hello ", "world ", "again"] {
            let mut b = Some(Bytes::from(chunk));
            gz.filter(&mut b, false);
            if let Some(b) = b {
                out.extend_from_slice(&b);
            }
        }
        let mut b = None;
        gz.filter(&mut b, true);
        out.extend_from_slice(&b.unwrap());
        let mut text = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello world again");
    }
}
