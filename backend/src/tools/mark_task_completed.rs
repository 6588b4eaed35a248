use super::{todo_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use serde_json::json;

#[derive(Default)]
pub struct MarkTaskCompleted;

impl Tool for MarkTaskCompleted {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "mark_task_completed",
            read_only: false,
            title: "Complete a task",
            description: "Marks one of your tasks completed (nothing changes if it already is).",
            input_schema: json!({
                "type": "object",
                "properties": { "task_id": todo_views::task_id_schema() },
                "required": ["task_id"],
                "additionalProperties": false
            }),
            output_schema: Some(todo_views::task_output_schema(json!({
                "changed": { "type": "boolean",
                    "description": "False when the task was already completed." }
            }))),
        }
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let id = todo_views::task_id(input, "task_id")?;
        let (task, changed) = cx.store()?.complete(cx.caller.as_str(), &id)?;
        let text = format!(
            "{} {}",
            if changed {
                "completed"
            } else {
                "already completed"
            },
            super::list_tasks::line(&task)
        );
        Ok(ToolOutput {
            structured: json!({ "task": task.to_json(), "changed": changed }),
            text,
        })
    }
}
