use super::{todo_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::store::NewTask;
use serde_json::json;

#[derive(Default)]
pub struct CreateTask;

impl Tool for CreateTask {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "create_task",
            read_only: false,
            title: "Create a task",
            description: "Adds a task (open, version 1) to your list.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "title": todo_views::title_schema(),
                    "description": todo_views::description_schema(),
                    "due": todo_views::due_schema()
                },
                "required": ["title"],
                "additionalProperties": false
            }),
            output_schema: Some(todo_views::task_output_schema(json!({}))),
        }
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let new = NewTask {
            title: todo_views::title(input, "title")?,
            description: todo_views::description(input, "description")?,
            due: todo_views::due(input, "due")?,
        };
        let task = cx.store()?.create(cx.caller.as_str(), &new)?;
        let text = format!("created {}", super::list_tasks::line(&task));
        Ok(ToolOutput {
            structured: json!({ "task": task.to_json() }),
            text,
        })
    }
}
