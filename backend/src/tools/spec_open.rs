use super::{views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::openspec::paths;
use serde_json::json;

#[derive(Default)]
pub struct SpecOpen;

impl Tool for SpecOpen {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "spec.open",
            read_only: true,
            title: "Open a spec",
            description: "One main spec: title, purpose, requirements (name, text, scenarios) and the raw Markdown.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "capability": { "type": "string", "pattern": paths::NAME_PATTERN,
                        "description": "The capability: its folder name under openspec/specs/, e.g. \"auth\"." }
                },
                "required": ["capability"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "capability": { "type": "string" },
                    "title": { "type": "string" },
                    "purpose": { "type": ["string", "null"] },
                    "requirements": { "type": "array", "items": views::requirement_schema() },
                    "content": { "type": "string", "description": "The raw Markdown." }
                },
                "required": ["capability", "title", "purpose", "requirements", "content"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, ws: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let capability = input.name("capability")?;
        let spec = ws.open_spec(capability)?;
        let structured = json!({
            "capability": spec.capability,
            "title": spec.title,
            "purpose": spec.purpose,
            "requirements": spec.requirements.iter().map(views::requirement).collect::<Vec<_>>(),
            "content": spec.content,
        });
        Ok(ToolOutput {
            structured,
            text: spec.content,
        })
    }
}
