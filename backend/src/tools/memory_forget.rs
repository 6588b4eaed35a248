use super::{memory_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use serde_json::json;

#[derive(Default)]
pub struct MemoryForget;

impl Tool for MemoryForget {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "memory_forget",
            read_only: false,
            title: "Forget a memory",
            description: "Removes the memory under a key of yours.",
            input_schema: json!({
                "type": "object",
                "properties": { "key": memory_views::key_schema() },
                "required": ["key"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": { "forgotten": { "type": "string" } },
                "required": ["forgotten"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let key = memory_views::key(input, "key")?;
        cx.store()?
            .forget(cx.caller.as_str(), &key)
            .map_err(|e| memory_views::store_error(e, &key))?;
        Ok(ToolOutput {
            structured: json!({ "forgotten": key }),
            text: format!("forgot {}", crate::bounded::bounded(&key)),
        })
    }
}
