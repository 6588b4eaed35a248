//! What the todo tools share: the task's JSON schema, and reading task fields from input
//! (every error names the field).

use super::{Input, ToolError};
use serde_json::{json, Value};

pub const TITLE_MAX: usize = 500;
pub const DESCRIPTION_MAX: usize = 10_000;

pub fn task_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "format": "uuid" },
            "owner": { "type": "string", "description": "The caller the task belongs to." },
            "title": { "type": "string" },
            "description": { "type": ["string", "null"] },
            "due": { "type": ["string", "null"],
                "description": "RFC 3339 date (2027-01-31) or date-time, as given." },
            "completed": { "type": "boolean" },
            "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" },
            "version": { "type": "integer", "minimum": 1,
                "description": "Grows by one with every change; pass it as expected_version." }
        },
        "required": ["id", "owner", "title", "description", "due", "completed",
                     "created_at", "updated_at", "version"],
        "additionalProperties": false
    })
}

pub fn task_id_schema() -> Value {
    json!({ "type": "string", "format": "uuid", "description": "The task's id (from list_tasks or create_task)." })
}

pub fn title_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": TITLE_MAX })
}

pub fn description_schema() -> Value {
    json!({ "type": ["string", "null"], "maxLength": DESCRIPTION_MAX })
}

pub fn due_schema() -> Value {
    json!({ "type": ["string", "null"],
        "description": "RFC 3339 date (2027-01-31) or date-time (2027-01-31T17:00:00Z)." })
}

/// `{"task": ...}` output with extra properties.
pub fn task_output_schema(extra: Value) -> Value {
    let mut props = serde_json::Map::new();
    props.insert("task".into(), task_schema());
    let mut required = vec![json!("task")];
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            required.push(json!(k));
            props.insert(k, v);
        }
    }
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false
    })
}

/// A task id: a UUID, returned in its canonical form (lowercase, hyphenated).
pub fn task_id(input: &Input, field: &str) -> Result<String, ToolError> {
    let raw = input.str(field)?;
    uuid::Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            ToolError::invalid_input(format!("input.{field}: must be a task id (a UUID)"))
                .with_hint("task ids come from list_tasks or create_task")
        })
}

/// PostgreSQL text cannot hold U+0000: refused for every store alike.
fn no_nul(field: &str, s: &str) -> Result<(), ToolError> {
    if s.contains('\0') {
        return Err(ToolError::invalid_input(format!(
            "input.{field}: must not contain NUL (U+0000)"
        )));
    }
    Ok(())
}

pub fn title(input: &Input, field: &str) -> Result<String, ToolError> {
    let t = input.str(field)?.trim();
    no_nul(field, t)?;
    if t.is_empty() {
        return Err(ToolError::invalid_input(format!(
            "input.{field}: must not be empty"
        )));
    }
    if t.chars().count() > TITLE_MAX {
        return Err(ToolError::invalid_input(format!(
            "input.{field}: longer than {TITLE_MAX} characters"
        )));
    }
    Ok(t.to_string())
}

pub fn description(input: &Input, field: &str) -> Result<Option<String>, ToolError> {
    let Some(d) = input.opt_str(field)? else {
        return Ok(None);
    };
    no_nul(field, d)?;
    if d.chars().count() > DESCRIPTION_MAX {
        return Err(ToolError::invalid_input(format!(
            "input.{field}: longer than {DESCRIPTION_MAX} characters"
        )));
    }
    Ok(Some(d.to_string()))
}

/// An RFC 3339 full-date or date-time, kept as given (trimmed).
pub fn due(input: &Input, field: &str) -> Result<Option<String>, ToolError> {
    let Some(d) = input.opt_str(field)? else {
        return Ok(None);
    };
    let d = d.trim();
    let ok = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() && d.len() == 10
        || chrono::DateTime::parse_from_rfc3339(d).is_ok();
    if !ok {
        return Err(ToolError::invalid_input(format!(
            "input.{field}: must be an RFC 3339 date (2027-01-31) or date-time (2027-01-31T17:00:00Z)"
        )));
    }
    Ok(Some(d.to_string()))
}
