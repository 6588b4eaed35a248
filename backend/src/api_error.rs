//! The error envelope used everywhere outside JSON-RPC:
//! `{"apiVersion":"1.0.0","error":{"code","message","hint"},"requestId","timestamp"}`.
//!
//! Codes are stable strings clients may match on: UNKNOWN_TOOL, INVALID_INPUT, NOT_FOUND,
//! CONFLICT, UNAUTHORIZED, FORBIDDEN, PAYLOAD_TOO_LARGE, RESPONSE_TOO_LARGE, RATE_LIMITED,
//! TIMEOUT, BAD_REQUEST, METHOD_NOT_ALLOWED, INTERNAL_ERROR, UNAVAILABLE (503: the rate limit's
//! Redis is unreachable with RATE_LIMIT_REDIS_FAILURE=closed, or the todo tools' task store
//! cannot be opened or used).

use crate::tools::ToolError;
use axum::http::StatusCode;
use serde::Serialize;

pub const API_VERSION: &str = "1.0.0";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
    }

    pub fn unknown_tool(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_TOOL",
            format!("unknown tool {:?}", crate::bounded::bounded(name)),
        )
        .with_hint("GET /tools lists the available tools")
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }

    /// The `error` object alone (also used inside NDJSON error lines).
    pub fn error_object(&self) -> ErrorObject<'_> {
        ErrorObject {
            code: self.code,
            message: &self.message,
            hint: self.hint.as_deref(),
        }
    }

    /// The full envelope as JSON text, fields in the existing API's order.
    pub fn envelope_json(&self, request_id: &str) -> String {
        let envelope = Envelope {
            api_version: API_VERSION,
            error: self.error_object(),
            request_id,
            timestamp: timestamp(),
        };
        // Plain strings and options: serializing cannot fail.
        serde_json::to_string(&envelope).unwrap_or_default()
    }
}

#[derive(Serialize)]
pub struct ErrorObject<'a> {
    pub code: &'a str,
    pub message: &'a str,
    pub hint: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    api_version: &'static str,
    error: ErrorObject<'a>,
    request_id: &'a str,
    timestamp: String,
}

impl From<ToolError> for ApiError {
    fn from(e: ToolError) -> ApiError {
        let status =
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code: e.code.as_str(),
            message: e.message,
            hint: e.hint,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// RFC 3339 UTC with milliseconds and `Z`, as the existing API's examples show.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch (NDJSON `ts`).
pub fn epoch_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
