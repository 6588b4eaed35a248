//! The one writer of the responses the gateway makes itself: the HTTP → HTTPS redirect, the
//! JSON error envelopes (404, 413, 502, 504, ...) and rate-zone refusals. Each is a [`Reply`]
//! (status, its own headers, body); [`Reply::send`] applies the header policy of the route (or
//! the global one) and writes it.

use bytes::Bytes;
use http::header::{self, HeaderName};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::edge::errors::{self, GatewayError};
use crate::edge::headers::ResponseHeaders;

pub struct Reply {
    status: u16,
    headers: Vec<(HeaderName, String)>,
    body: Option<Bytes>,
    /// False when the request body was not read: the connection cannot carry another request.
    keepalive: bool,
}

impl Reply {
    /// The error envelope; the connection is not reused (the request body may be unread).
    pub fn error(err: &GatewayError, request_id: &str) -> Reply {
        Reply::json(err.status, errors::envelope(err, request_id), false)
    }

    /// A JSON-RPC error response (a refusal on an MCP route); the body was read, so the
    /// connection stays open.
    pub fn jsonrpc_error(status: u16, body: Bytes) -> Reply {
        Reply::json(status, body, true)
    }

    /// Closes the connection after this reply: the request body was not read to its end.
    pub fn closing(mut self) -> Reply {
        self.keepalive = false;
        self
    }

    /// A JSON document the gateway serves itself (RFC 9728 metadata), 200.
    pub fn json_document(body: Bytes) -> Reply {
        let mut r = Reply::json(200, body, true);
        r.headers.retain(|(n, _)| *n != header::CACHE_CONTROL);
        r.headers
            .push((header::CACHE_CONTROL, "max-age=300".into()));
        r
    }

    fn json(status: u16, body: Bytes, keepalive: bool) -> Reply {
        Reply {
            status,
            headers: vec![
                (header::CONTENT_TYPE, "application/json".into()),
                (header::CONTENT_LENGTH, body.len().to_string()),
                (header::CACHE_CONTROL, "no-store".into()),
            ],
            body: Some(body),
            keepalive,
        }
    }

    /// A 301 with an empty body (nginx's `return 301`); the connection stays open.
    pub fn redirect(location: String) -> Reply {
        Reply {
            status: 301,
            headers: vec![
                (header::LOCATION, location),
                (header::CONTENT_LENGTH, "0".into()),
            ],
            body: None,
            keepalive: true,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub async fn send(
        self,
        session: &mut Session,
        policy: &ResponseHeaders,
        tls: bool,
        request_id: &str,
    ) -> pingora::Result<()> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 6))?;
        for (name, value) in self.headers {
            resp.insert_header(name, value)?;
        }
        policy.apply(&mut resp, tls, request_id);
        if !self.keepalive {
            session.set_keepalive(None);
        }
        match self.body {
            Some(body) => {
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(body), true).await
            }
            None => session.write_response_header(Box::new(resp), true).await,
        }
    }
}
