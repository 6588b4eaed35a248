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
