//! What the memory tools share: the memory's JSON schema, reading keys, values and tags from
//! input (every error names the field), and how a store answer reads to the caller.

use super::input::type_name;
use super::{ErrorCode, Input, ToolError};
use crate::store::{Memory, StoreError};
use serde_json::{json, Value};
use std::fmt::Write;

pub const KEY_MAX: usize = 256;
/// In bytes: a memory is a note, not a file store (MAX_REQUEST_SIZE_KB bounds the call too).
pub const VALUE_MAX: usize = 64 * 1024;
pub const TAGS_MAX: usize = 20;
pub const TAG_MAX: usize = 64;
/// Ten years.
pub const TTL_MAX: i64 = 10 * 365 * 24 * 3600;

pub fn memory_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "key": { "type": "string" },
            "owner": { "type": "string", "description": "The caller the memory belongs to." },
            "value": { "type": "string" },
            "tags": { "type": "array", "items": { "type": "string" } },
            "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" },
            "expires_at": { "type": ["string", "null"], "format": "date-time",
                "description": "When ttl_seconds was given: the memory is gone after this." },
            "version": { "type": "integer", "minimum": 1,
                "description": "Grows by one each time the key is remembered again." }
        },
        "required": ["key", "owner", "value", "tags", "created_at", "updated_at",
                     "expires_at", "version"],
        "additionalProperties": false
    })
}

pub fn key_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": KEY_MAX,
        "description": "Your name for the memory (unique among your memories)." })
}

pub fn tags_schema() -> Value {
    json!({ "type": "array", "maxItems": TAGS_MAX,
        "items": { "type": "string", "minLength": 1, "maxLength": TAG_MAX } })
}

/// `{"memories": [...]}`: what memory_recall answers in both of its forms.
pub fn memories_output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "memories": { "type": "array", "items": memory_schema() }
        },
        "required": ["memories"],
        "additionalProperties": false
    })
}

fn bad(field: &str, why: impl std::fmt::Display) -> ToolError {
    ToolError::invalid_input(format!("input.{field}: {why}"))
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), ToolError> {
    if s.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(bad(field, format!("longer than {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(())
}

/// A key, as given (keys are exact: no trimming, no case folding).
pub fn key(input: &Input, field: &str) -> Result<String, ToolError> {
    let k = input.str(field)?;
    check_text(field, k, KEY_MAX)?;
    Ok(k.to_string())
}

/// The value to remember: `value`, or `content` as seed clients send it; exactly one.
pub fn value(input: &Input) -> Result<String, ToolError> {
    let (field, v) = match (input.opt_str("value")?, input.opt_str("content")?) {
        (Some(_), Some(_)) => {
            return Err(bad("content", "give value or content, not both"));
        }
        (Some(v), None) => ("value", v),
        (None, Some(v)) => ("content", v),
        (None, None) => {
            return Err(bad("value", "required").with_hint("content is accepted as its alias"))
        }
    };
    if v.len() > VALUE_MAX {
        return Err(bad(field, format!("longer than {VALUE_MAX} bytes")));
    }
    // PostgreSQL text cannot hold it; refused for every store alike.
    if v.contains('\0') {
        return Err(bad(field, "must not contain NUL (U+0000)"));
    }
    Ok(v.to_string())
}

/// Tags: trimmed, each 1..=TAG_MAX characters, at most TAGS_MAX; returned sorted and unique.
pub fn tags(input: &Input, field: &str) -> Result<Vec<String>, ToolError> {
    let Some(v) = input.opt_value(field) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        return Err(bad(
            field,
            format!("must be an array of strings, got {}", type_name(v)),
        ));
    };
    if items.len() > TAGS_MAX {
        return Err(bad(field, format!("more than {TAGS_MAX} tags")));
    }
    let mut tags = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Value::String(t) = item else {
            return Err(bad(
                &at,
                format!("must be a string, got {}", type_name(item)),
            ));
        };
        let t = t.trim();
        check_text(&at, t, TAG_MAX)?;
        tags.push(t.to_string());
    }
    tags.sort_unstable();
    tags.dedup();
    Ok(tags)
}

/// A store answer for the memory under `key`.
pub fn store_error(e: StoreError, key: &str) -> ToolError {
    match e {
        StoreError::NotFound => ToolError::new(
            ErrorCode::NotFound,
            format!(
                "no memory under key {:?}",
                crate::bounded::bounded(key).to_string()
            ),
        )
        .with_hint("memory_recall with a query or tags lists your memories"),
        other => other.into(),
    }
}

/// One line per memory for the text content.
pub fn line(m: &Memory) -> String {
    let mut s = format!("{} (v{}", m.key, m.version);
    if !m.tags.is_empty() {
        let _ = write!(s, ", tags {}", m.tags.join(","));
    }
    if let Some(at) = &m.expires_at {
        let _ = write!(s, ", expires {at}");
    }
    s.push(')');
    s
}
