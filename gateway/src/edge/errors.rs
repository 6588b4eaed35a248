//! Responses the gateway makes itself (404 no route, 413, 429, 502, 504, ...), in the backend's
//! JSON error envelope: {"apiVersion","error":{"code","message","hint"},"requestId","timestamp"}.

use bytes::Bytes;
use pingora::{Error, ErrorSource, ErrorType};
use serde::Serialize;

/// Marks "the pool has no backend to try" so it maps to 502 NO_HEALTHY_BACKEND.
pub const NO_HEALTHY_BACKEND: ErrorType = ErrorType::Custom("NoHealthyBackend");

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub hint: &'static str,
}

impl GatewayError {
    pub fn not_found(path: &str) -> GatewayError {
        GatewayError {
            status: 404,
            code: "NOT_FOUND",
            message: format!("no route for {path}"),
            hint: "check the URL path",
        }
    }

    pub fn too_large(limit: u64) -> GatewayError {
        GatewayError {
            status: 413,
            code: "PAYLOAD_TOO_LARGE",
            message: format!("request body exceeds {limit} bytes"),
            hint: "send a smaller request body",
        }
    }

    /// No credential, or one the edge does not accept (`auth = true` routes).
    pub fn unauthorized(message: String) -> GatewayError {
        GatewayError {
            status: 401,
            code: "UNAUTHORIZED",
            message,
            hint: "send Authorization: Bearer <token>",
        }
    }

    /// A refused Origin or Host (DNS-rebinding protection), or a caller outside its grants.
    pub fn forbidden(message: String, hint: &'static str) -> GatewayError {
        GatewayError {
            status: 403,
            code: "FORBIDDEN",
            message,
            hint,
        }
    }

    /// What a proxying error becomes for the client; None when the client is gone anyway.
    pub fn from_proxy_error(e: &Error, body_limit: u64) -> Option<GatewayError> {
        let upstream = matches!(e.esource(), ErrorSource::Upstream);
        let err = match e.etype() {
            ErrorType::HTTPStatus(413) => GatewayError::too_large(body_limit),
            ErrorType::HTTPStatus(code) => GatewayError {
                status: *code,
                code: code_for(*code),
                message: format!("request failed with status {code}"),
                hint: "",
            },
            t if *t == NO_HEALTHY_BACKEND => GatewayError {
                status: 502,
                code: "NO_HEALTHY_BACKEND",
                message: "no healthy backend is available for this route".into(),
                hint: "retry later; the gateway's /status shows backend health",
            },
            ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout
                if upstream =>
            {
                GatewayError {
                    status: 504,
                    code: "GATEWAY_TIMEOUT",
                    message: "the backend did not answer in time".into(),
                    hint: "retry later",
                }
            }
            _ if upstream => GatewayError {
                status: 502,
                code: "BAD_GATEWAY",
                message: "the backend could not be reached or broke the response".into(),
                hint: "retry later",
            },
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
                if matches!(e.esource(), ErrorSource::Downstream) =>
            {
                return None
            }
            // nginx's client_body_timeout: 408, and the connection closes.
            ErrorType::ReadTimedout if matches!(e.esource(), ErrorSource::Downstream) => {
                GatewayError {
                    status: 408,
                    code: "REQUEST_TIMEOUT",
                    message: "the client sent no request body data in time".into(),
                    hint: "send the body without pausing longer than the gateway's client_body_timeout",
                }
            }
            // send_timeout: the client stopped reading; nothing can reach it.
            ErrorType::WriteTimedout if matches!(e.esource(), ErrorSource::Downstream) => {
                return None
            }
            _ if matches!(e.esource(), ErrorSource::Downstream) => GatewayError {
                status: 400,
                code: "BAD_REQUEST",
                message: "the request could not be read".into(),
                hint: "",
            },
            _ => GatewayError {
                status: 500,
                code: "INTERNAL_ERROR",
                message: "the gateway failed to handle the request".into(),
                hint: "",
            },
        };
        Some(err)
    }
}

fn code_for(status: u16) -> &'static str {
    match status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        408 => "REQUEST_TIMEOUT",
        404 => "NOT_FOUND",
        413 => "PAYLOAD_TOO_LARGE",
        429 => "RATE_LIMITED",
        502 => "BAD_GATEWAY",
        503 => "SERVICE_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        s if s >= 500 => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    error: Body<'a>,
    #[serde(rename = "requestId")]
    request_id: &'a str,
    timestamp: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    hint: &'a str,
}

pub fn envelope(err: &GatewayError, request_id: &str) -> Bytes {
    let env = Envelope {
        api_version: "1.0.0",
        error: Body {
            code: err.code,
            message: &err.message,
            hint: err.hint,
        },
        request_id,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    serde_json::to_vec(&env).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let b = envelope(&GatewayError::not_found("/nope"), "rid-1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["apiVersion"], "1.0.0");
        assert_eq!(v["error"]["code"], "NOT_FOUND");
        assert_eq!(v["requestId"], "rid-1");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn proxy_error_mapping() {
        let e = Error::explain(NO_HEALTHY_BACKEND, "none");
        assert_eq!(GatewayError::from_proxy_error(&e, 0).unwrap().status, 502);
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.esource = ErrorSource::Upstream;
        assert_eq!(GatewayError::from_proxy_error(&e, 0).unwrap().status, 504);
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.esource = ErrorSource::Downstream;
        assert_eq!(GatewayError::from_proxy_error(&e, 0).unwrap().status, 408);
        let mut e = Error::new(ErrorType::WriteTimedout);
        e.esource = ErrorSource::Downstream;
        assert!(GatewayError::from_proxy_error(&e, 0).is_none());
        let mut e = Error::new(ErrorType::ConnectRefused);
        e.esource = ErrorSource::Upstream;
        assert_eq!(
            GatewayError::from_proxy_error(&e, 0).unwrap().code,
            "BAD_GATEWAY"
        );
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.esource = ErrorSource::Downstream;
        assert!(GatewayError::from_proxy_error(&e, 0).is_none());
    }
}
