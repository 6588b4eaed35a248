use super::{views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use serde_json::json;
use std::fmt::Write;

#[derive(Default)]
pub struct ChangeList;

impl Tool for ChangeList {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "change.list",
            read_only: true,
            title: "List changes",
            description:
                "Active OpenSpec changes with their title and task progress (done/total); \
                          archived ones too when include_archived is true.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "include_archived": { "type": "boolean", "default": false,
                        "description": "Also list changes under changes/archive/." }
                },
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "changes": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "slug": { "type": "string" },
                            "title": { "type": "string" },
                            "tasks": views::progress_schema()
                        },
                        "required": ["slug", "title", "tasks"],
                        "additionalProperties": false
                    }},
                    "archived": { "type": "array",
                        "description": "Only when include_archived is true.",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": { "type": "string",
                                    "description": "The folder name, YYYY-MM-DD-<slug>." },
                                "slug": { "type": "string" },
                                "date": views::nullable_string(),
                                "title": { "type": "string" }
                            },
                            "required": ["name", "slug", "date", "title"],
                            "additionalProperties": false
                        }
                    }
                },
                "required": ["changes"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, ws: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let include_archived = input.opt_bool("include_archived")?.unwrap_or(false);
        let changes = ws.list_changes()?;
        let mut text = format!("{} active change(s)\n", changes.len());
        for c in &changes {
            let _ = writeln!(
                text,
                "- {}: {} [{}/{} tasks]",
                c.slug, c.title, c.done, c.total
            );
        }
        let mut structured = json!({
            "changes": changes.iter().map(|c| json!({
                "slug": c.slug, "title": c.title, "tasks": views::progress(c.done, c.total),
            })).collect::<Vec<_>>(),
        });
        if include_archived {
            let archived = ws.list_archived()?;
            let _ = writeln!(text, "{} archived change(s)", archived.len());
            for a in &archived {
                let _ = writeln!(text, "- {}: {}", a.name, a.title);
            }
            structured["archived"] = archived
                .iter()
                .map(
                    |a| json!({ "name": a.name, "slug": a.slug, "date": a.date, "title": a.title }),
                )
                .collect();
        }
        Ok(ToolOutput { structured, text })
    }
}
