use super::{todo_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::store::TaskPatch;
use serde_json::json;

#[derive(Default)]
pub struct UpdateTask;

impl Tool for UpdateTask {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "update_task",
            read_only: false,
            title: "Update a task",
            description: "Changes the given fields of one of your tasks in one atomic step \
                          (description or due null clears it). With expected_version the \
                          change applies only if the task is still at that version, else \
                          CONFLICT: read it again and retry.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "task_id": todo_views::task_id_schema(),
                    "title": todo_views::title_schema(),
                    "description": todo_views::description_schema(),
                    "due": todo_views::due_schema(),
                    "completed": { "type": "boolean" },
                    "expected_version": { "type": "integer", "minimum": 1 }
                },
                "required": ["task_id"],
                "additionalProperties": false
            }),
            output_schema: Some(todo_views::task_output_schema(json!({}))),
        }
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let id = todo_views::task_id(input, "task_id")?;
        let title = match input.opt_str("title")? {
            Some(_) => Some(todo_views::title(input, "title")?),
            None if input.is_null("title") => {
                return Err(ToolError::invalid_input(
                    "input.title: must be a string (a task always has a title)",
                ))
            }
            None => None,
        };
        let patch = TaskPatch {
            title,
            description: input
                .has("description")
                .then(|| todo_views::description(input, "description"))
                .transpose()?,
            due: input
                .has("due")
                .then(|| todo_views::due(input, "due"))
                .transpose()?,
            completed: input.opt_bool("completed")?,
        };
        let expected = input.opt_int("expected_version", 1, i64::MAX)?;
        if patch.is_empty() {
            return Err(ToolError::invalid_input(
                "input: nothing to update: give title, description, due or completed",
            ));
        }
        let task = cx
            .store()?
            .update(cx.caller.as_str(), &id, &patch, expected)?;
        Ok(ToolOutput {
            text: format!("updated {}", super::list_tasks::line(&task)),
            structured: json!({ "task": task.to_json() }),
        })
    }
}
