//! JSON-RPC 2.0 checks of a message before it reaches rmcp. rmcp answers a message it cannot
//! deserialize with HTTP 415 ("unrecognized JSON-RPC message"), and a `tools/call` whose
//! params do not fit its types with -32601 (method not found). JSON-RPC 2.0 (section 5.1) and
//! MCP's Streamable HTTP transport want instead:
//! * -32700 for a body that is not JSON, -32600 for one that is not a valid JSON-RPC 2.0
//!   message (wrong `jsonrpc`, a non-string `method`, a null or non-scalar `id`), both HTTP 400
//!   with `"id": null` when the id cannot be read;
//! * -32602 for `tools/call` without a string `name` or with non-object `arguments`, an in-band
//!   error (HTTP 200, as rmcp answers its own invalid-params errors).

use axum::http::StatusCode;
use serde_json::{json, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;

/// A message refused before rmcp: the JSON-RPC error to answer and its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
    /// The request's id when it could be read, else null.
    pub id: Value,
    pub status: StatusCode,
}

impl Refusal {
    pub fn new(code: i64, message: impl Into<String>, id: Value) -> Refusal {
        let status = if code == INVALID_PARAMS {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        Refusal {
            code,
            message: message.into(),
            id,
            status,
        }
    }

    pub fn parse_error(detail: &str) -> Refusal {
        Refusal::new(
            PARSE_ERROR,
            format!("parse error: the body is not JSON ({detail})"),
            Value::Null,
        )
    }

    /// The JSON-RPC error response object.
    pub fn to_json(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": {"code": self.code, "message": self.message},
        })
    }
}

/// Checks one message (not a batch). Ok: rmcp can take it as it is.
pub fn check(v: &Value) -> Result<(), Refusal> {
    let Value::Object(o) = v else {
        return Err(Refusal::new(
            INVALID_REQUEST,
            "invalid request: a JSON-RPC message is an object",
            Value::Null,
        ));
    };
    // The id as far as it is valid (string or integer): echoed in the error.
    let id = match o.get("id") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
        _ => Value::Null,
    };
    let invalid = |why: &str| Err(Refusal::new(INVALID_REQUEST, why, id.clone()));
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("invalid request: \"jsonrpc\" must be \"2.0\"");
    }
    match o.get("id") {
        None => {}
        Some(Value::String(_)) => {}
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        Some(Value::Null) => return invalid(
            "invalid request: \"id\" must not be null (MCP requests carry a string or integer id)",
        ),
        Some(_) => return invalid("invalid request: \"id\" must be a string or an integer"),
    }
    let method = match o.get("method") {
        Some(Value::String(m)) => Some(m.as_str()),
        Some(_) => return invalid("invalid request: \"method\" must be a string"),
        None => None,
    };
    let Some(method) = method else {
        // A response to a server request: an id and exactly one of result / error.
        if o.contains_key("id") && (o.contains_key("result") != o.contains_key("error")) {
            return Ok(());
        }
        return invalid(
            "invalid request: no \"method\" (nor a response's id with result or error)",
        );
    };
    let params = o.get("params");
    if let Some(p) = params {
        if !p.is_object() {
            return Err(Refusal::new(
                INVALID_PARAMS,
                format!(
                    "invalid params: the params of {} must be an object",
                    crate::bounded::bounded(method)
                ),
                id,
            ));
        }
    }
    if method == "tools/call" {
        let params = params.and_then(Value::as_object);
        if !params
            .and_then(|p| p.get("name"))
            .is_some_and(Value::is_string)
        {
            return Err(Refusal::new(
                INVALID_PARAMS,
                "invalid params: tools/call needs a string \"name\"",
                id,
            ));
        }
        if params
            .and_then(|p| p.get("arguments"))
            .is_some_and(|a| !a.is_object() && !a.is_null())
        {
            return Err(Refusal::new(
                INVALID_PARAMS,
                "invalid params: tools/call \"arguments\" must be an object",
                id,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: Value) -> Option<(i64, StatusCode, Value)> {
        check(&v).err().map(|r| (r.code, r.status, r.id))
    }

    #[test]
    fn valid_messages_pass() {
        for v in [
            json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
            json!({"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","arguments":{}}}),
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}),
            json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            json!({"jsonrpc":"2.0","id":3,"result":{}}),
        ] {
            assert_eq!(check(&v), Ok(()), "{v}");
        }
    }

    #[test]
    fn invalid_messages_are_refused_with_their_code() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            code(json!({"jsonrpc":"1.0","id":4,"method":"ping"})),
            Some((INVALID_REQUEST, bad, json!(4)))
        );
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":null,"method":"ping"})),
            Some((INVALID_REQUEST, bad, Value::Null))
        );
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":{},"method":"ping"})),
            Some((INVALID_REQUEST, bad, Value::Null))
        );
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":6,"method":7})),
            Some((INVALID_REQUEST, bad, json!(6)))
        );
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":6})),
            Some((INVALID_REQUEST, bad, json!(6)))
        );
        assert_eq!(code(json!(5)), Some((INVALID_REQUEST, bad, Value::Null)));
        let ok = StatusCode::OK;
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{}}})),
            Some((INVALID_PARAMS, ok, json!(2)))
        );
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":5}})),
            Some((INVALID_PARAMS, ok, json!(2)))
        );
        assert_eq!(
            code(
                json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":5}})
            ),
            Some((INVALID_PARAMS, ok, json!(3)))
        );
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":3,"method":"tools/call"})),
            Some((INVALID_PARAMS, ok, json!(3)))
        );
        assert_eq!(
            code(json!({"jsonrpc":"2.0","id":3,"method":"ping","params":[1]})),
            Some((INVALID_PARAMS, ok, json!(3)))
        );
    }
}
