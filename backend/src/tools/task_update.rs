use super::{views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::openspec::lock::WorkspaceLock;
use crate::openspec::{archive, fsio, tasks, Error};
use serde_json::json;

#[derive(Default)]
pub struct TaskUpdate;

impl Tool for TaskUpdate {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "task.update",
            read_only: false,
            title: "Tick or untick a task",
            description:
                "Sets one checkbox in a change's tasks.md (atomically, under the workspace lock).",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "slug": views::slug_schema(),
                    "id": { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$",
                        "description": "The task number as written in tasks.md, e.g. \"1.3\"." },
                    "done": { "type": "boolean" }
                },
                "required": ["slug", "id", "done"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "slug": { "type": "string" },
                    "task": views::task_schema(),
                    "changed": { "type": "boolean",
                        "description": "False when the checkbox already had that state." },
                    "progress": views::progress_schema()
                },
                "required": ["slug", "task", "changed", "progress"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, ws: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let slug = input.name("slug")?;
        let id = input.task_id("id")?;
        let done = input.bool("done")?;
        ws.change_dir(slug)?;
        // The lock keeps two replicas from losing each other's ticks (read-modify-write) and
        // from writing into a change an archive is moving.
        let _lock = WorkspaceLock::acquire(&ws.changes_dir(), archive::LOCK_WAIT)?;
        let (path, content) = ws.read_tasks(slug)?;
        let content =
            content.ok_or_else(|| Error::not_found(format!("change {slug}: no tasks.md")))?;
        let (task, changed, list) = match tasks::set_done(&content, id, done)? {
            Some((updated, task)) => {
                fsio::atomic_write(&path, updated.as_bytes())?;
                (task, true, tasks::parse(&updated))
            }
            None => {
                let list = tasks::parse(&content);
                let task = list.iter().find(|t| t.id.as_deref() == Some(id)).cloned();
                (
                    task.ok_or_else(|| Error::not_found(format!("task {id}: not found")))?,
                    false,
                    list,
                )
            }
        };
        let (n_done, total) = tasks::progress(&list);
        let text = format!(
            "{slug} task {id} {} ({}); {n_done}/{total} done",
            if done { "done" } else { "not done" },
            if changed { "updated" } else { "unchanged" }
        );
        let structured = json!({
            "slug": slug,
            "task": views::task(&task),
            "changed": changed,
            "progress": views::progress(n_done, total),
        });
        Ok(ToolOutput { structured, text })
    }
}
