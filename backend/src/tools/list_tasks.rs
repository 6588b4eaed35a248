use super::{todo_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::store::{Cursor, StatusFilter, Task};
use serde_json::json;
use std::fmt::Write;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Default)]
pub struct ListTasks;

impl Tool for ListTasks {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "list_tasks",
            read_only: true,
            title: "List your tasks",
            description: "Your tasks, oldest first, a page at a time: pass next_cursor back as \
                          cursor for the next page.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "status": { "type": "string", "enum": ["open", "completed", "all"],
                        "default": "all" },
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT },
                    "cursor": { "type": "string",
                        "description": "next_cursor of the previous page." }
                },
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "tasks": { "type": "array", "items": todo_views::task_schema() },
                    "next_cursor": { "type": ["string", "null"],
                        "description": "Present when more tasks follow." }
                },
                "required": ["tasks", "next_cursor"],
                "additionalProperties": false
            })),
        }
    }

    fn blocking(&self) -> bool {
        true
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let status = match input.opt_str("status")? {
            None | Some("all") => StatusFilter::All,
            Some("open") => StatusFilter::Open,
            Some("completed") => StatusFilter::Completed,
            Some(_) => {
                return Err(ToolError::invalid_input(
                    "input.status: must be one of open, completed, all",
                ))
            }
        };
        let limit = input
            .opt_int("limit", 1, MAX_LIMIT)?
            .unwrap_or(DEFAULT_LIMIT) as usize;
        let cursor = match input.opt_str("cursor")? {
            None => None,
            Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
                ToolError::invalid_input("input.cursor: not a cursor from list_tasks")
                    .with_hint("pass next_cursor of the previous page as it was")
            })?),
        };
        let page = cx
            .store()?
            .list(cx.caller.as_str(), status, limit, cursor.as_ref())?;
        let mut text = format!("{} task(s)", page.tasks.len());
        if page.next_cursor.is_some() {
            text.push_str(" (more follow)");
        }
        for t in &page.tasks {
            let _ = write!(text, "\n{}", line(t));
        }
        let structured = json!({
            "tasks": page.tasks.iter().map(Task::to_json).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor.as_ref().map(Cursor::encode),
        });
        Ok(ToolOutput { structured, text })
    }
}

pub fn line(t: &Task) -> String {
    let mut s = format!(
        "[{}] {} ({}, v{})",
        if t.completed { "x" } else { " " },
        t.title,
        t.id,
        t.version
    );
    if let Some(due) = &t.due {
        let _ = write!(s, " due {due}");
    }
    s
}
