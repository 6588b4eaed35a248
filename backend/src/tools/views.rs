//! JSON shapes shared by several tools, so a task or a requirement looks the same everywhere.

use crate::openspec::changes::CapabilityDelta;
use crate::openspec::spec::RequirementBlock;
use crate::openspec::tasks::Task;
use serde_json::{json, Value};

pub fn task(t: &Task) -> Value {
    json!({ "id": t.id, "text": t.text, "done": t.done, "section": t.section })
}

pub fn tasks(ts: &[Task]) -> Value {
    Value::Array(ts.iter().map(task).collect())
}

pub fn progress(done: usize, total: usize) -> Value {
    json!({ "done": done, "total": total })
}

pub fn requirement(b: &RequirementBlock) -> Value {
    json!({ "name": b.name, "text": b.body(), "scenarios": b.scenarios() })
}

pub fn delta(d: &CapabilityDelta) -> Value {
    let p = &d.plan;
    let removed: Vec<Value> = p
        .removed
        .iter()
        .map(|name| {
            let body = p
                .removed_blocks
                .iter()
                .find(|b| &b.name == name)
                .map(|b| b.body());
            json!({ "name": name, "text": body })
        })
        .collect();
    json!({
        "capability": d.capability,
        "added": p.added.iter().map(requirement).collect::<Vec<_>>(),
        "modified": p.modified.iter().map(requirement).collect::<Vec<_>>(),
        "removed": removed,
        "renamed": p.renamed.iter().map(|r| json!({ "from": r.from, "to": r.to })).collect::<Vec<_>>(),
    })
}

/// The `slug` property every change tool takes.
pub fn slug_schema() -> Value {
    json!({
        "type": "string",
        "pattern": crate::openspec::paths::NAME_PATTERN,
        "description": "The change id: its folder name under openspec/changes/, e.g. \"add-two-factor-auth\"."
    })
}

// Output schemas of the shapes above, kept beside the builders so the two change together.
// Every object here is built by a `json!` literal with fixed keys, so `additionalProperties:
// false` is exact; `Option` fields are always present, as null when absent.

/// A string that may be null (an `Option<String>` always serialised).
pub fn nullable_string() -> Value {
    json!({ "type": ["string", "null"] })
}

/// A count (`usize`).
pub fn count_schema() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

/// Schema of [`task`].
pub fn task_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": ["string", "null"],
                "description": "The task number like \"1.3\"; null for a checkbox without a number." },
            "text": { "type": "string" },
            "done": { "type": "boolean" },
            "section": { "type": ["string", "null"],
                "description": "The `##` heading the task sits under, if any." }
        },
        "required": ["id", "text", "done", "section"],
        "additionalProperties": false
    })
}

/// Schema of [`tasks`].
pub fn tasks_schema() -> Value {
    json!({ "type": "array", "items": task_schema() })
}

/// Schema of [`progress`].
pub fn progress_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "done": count_schema(), "total": count_schema() },
        "required": ["done", "total"],
        "additionalProperties": false
    })
}

/// Schema of [`requirement`].
pub fn requirement_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "text": { "type": "string", "description": "The body under the requirement header." },
            "scenarios": { "type": "array", "items": { "type": "string" },
                "description": "Scenario names." }
        },
        "required": ["name", "text", "scenarios"],
        "additionalProperties": false
    })
}

/// Schema of [`delta`].
pub fn delta_schema() -> Value {
    let requirements = json!({ "type": "array", "items": requirement_schema() });
    json!({
        "type": "object",
        "properties": {
            "capability": { "type": "string" },
            "added": requirements,
            "modified": requirements,
            "removed": { "type": "array", "items": {
                "type": "object",
                "properties": {
                    "name": { "type": "string" },
                    "text": { "type": ["string", "null"],
                        "description": "The Reason/Migration body when the header form was used." }
                },
                "required": ["name", "text"],
                "additionalProperties": false
            }},
            "renamed": { "type": "array", "items": {
                "type": "object",
                "properties": { "from": { "type": "string" }, "to": { "type": "string" } },
                "required": ["from", "to"],
                "additionalProperties": false
            }}
        },
        "required": ["capability", "added", "modified", "removed", "renamed"],
        "additionalProperties": false
    })
}
