use super::{views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use serde_json::json;
use std::fmt::Write;

#[derive(Default)]
pub struct SpecList;

impl Tool for SpecList {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "spec.list",
            read_only: true,
            title: "List specs",
            description: "The main specs (openspec/specs/<capability>/spec.md) with their title and requirement count.",
            input_schema: json!({ "type": "object", "properties": {}, "additionalProperties": false }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "specs": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "capability": { "type": "string" },
                            "title": { "type": "string" },
                            "requirements": views::count_schema()
                        },
                        "required": ["capability", "title", "requirements"],
                        "additionalProperties": false
                    }}
                },
                "required": ["specs"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, ws: &Context, _: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let specs = ws.list_specs()?;
        let mut text = format!("{} spec(s)\n", specs.len());
        for s in &specs {
            let _ = writeln!(
                text,
                "- {}: {} ({} requirements)",
                s.capability, s.title, s.requirements
            );
        }
        let structured = json!({
            "specs": specs.iter().map(|s| json!({
                "capability": s.capability, "title": s.title, "requirements": s.requirements,
            })).collect::<Vec<_>>(),
        });
        Ok(ToolOutput { structured, text })
    }
}
