use super::{todo_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use serde_json::json;

#[derive(Default)]
pub struct DeleteTask;

impl Tool for DeleteTask {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "delete_task",
            read_only: false,
            title: "Delete a task",
            description: "Deletes one of your tasks for good.",
            input_schema: json!({
                "type": "object",
                "properties": { "task_id": todo_views::task_id_schema() },
                "required": ["task_id"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "task_id": { "type": "string" },
                    "deleted": { "type": "boolean", "const": true }
                },
                "required": ["task_id", "deleted"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let id = todo_views::task_id(input, "task_id")?;
        cx.store()?.delete(cx.caller.as_str(), &id)?;
        Ok(ToolOutput {
            structured: json!({ "task_id": id, "deleted": true }),
            text: format!("deleted task {id}"),
        })
    }
}
