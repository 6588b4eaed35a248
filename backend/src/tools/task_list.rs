use super::{views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::openspec::tasks;
use serde_json::json;
use std::fmt::Write;

#[derive(Default)]
pub struct TaskList;

impl Tool for TaskList {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "task.list",
            read_only: true,
            title: "List a change's tasks",
            description:
                "The checkbox tasks of a change's tasks.md: id (like \"1.3\"), text, done, section.",
            input_schema: json!({
                "type": "object",
                "properties": { "slug": views::slug_schema() },
                "required": ["slug"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "slug": { "type": "string" },
                    "hasTasksFile": { "type": "boolean" },
                    "tasks": views::tasks_schema(),
                    "progress": views::progress_schema()
                },
                "required": ["slug", "hasTasksFile", "tasks", "progress"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, ws: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let slug = input.name("slug")?;
        let (_, content) = ws.read_tasks(slug)?;
        let list = content.as_deref().map(tasks::parse).unwrap_or_default();
        let (done, total) = tasks::progress(&list);
        let mut text = format!("{slug}: {done}/{total} tasks done\n");
        for t in &list {
            let _ = writeln!(
                text,
                "- [{}] {} {}",
                if t.done { 'x' } else { ' ' },
                t.id.as_deref().unwrap_or("-"),
                t.text
            );
        }
        let structured = json!({
            "slug": slug,
            "hasTasksFile": content.is_some(),
            "tasks": views::tasks(&list),
            "progress": views::progress(done, total),
        });
        Ok(ToolOutput { structured, text })
    }
}
