use super::{views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::openspec::archive;
use serde_json::json;
use std::fmt::Write;

#[derive(Default)]
pub struct ChangeArchive;

impl Tool for ChangeArchive {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "change.archive",
            read_only: false,
            title: "Archive a change",
            description: "Does what `openspec archive` does: refuses while tasks are unchecked (unless force), \
                          validates the spec deltas, applies them to the main specs (RENAMED, REMOVED, MODIFIED, \
                          ADDED), then moves the change to changes/archive/YYYY-MM-DD-<slug>. All or nothing.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "slug": views::slug_schema(),
                    "force": { "type": "boolean", "default": false,
                        "description": "Archive even when tasks are unchecked." }
                },
                "required": ["slug"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "slug": { "type": "string" },
                    "archivedAs": { "type": "string", "description": "YYYY-MM-DD-<slug>" },
                    "path": { "type": "string", "description": "changes/archive/<archivedAs>" },
                    "forced": { "type": "boolean" },
                    "uncheckedTasks": views::count_schema(),
                    "specs": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "capability": { "type": "string" },
                            "created": { "type": "boolean",
                                "description": "A new spec file was created." },
                            "added": views::count_schema(),
                            "modified": views::count_schema(),
                            "removed": views::count_schema(),
                            "renamed": views::count_schema()
                        },
                        "required": ["capability", "created", "added", "modified", "removed", "renamed"],
                        "additionalProperties": false
                    }}
                },
                "required": ["slug", "archivedAs", "path", "forced", "uncheckedTasks", "specs"],
                "additionalProperties": false
            })),
        }
    }

    fn call(
        &self,
        ws: &Context,
        input: &Input,
        progress: &dyn Progress,
    ) -> Result<ToolOutput, ToolError> {
        let slug = input.name("slug")?;
        let force = input.opt_bool("force")?.unwrap_or(false);
        let report = archive::archive(ws, slug, force, &|step, total, msg| {
            progress.report(step, Some(total), Some(msg))
        })?;
        let mut text = format!(
            "Archived {} as changes/archive/{}\n",
            report.slug, report.archived_as
        );
        if report.forced {
            let _ = writeln!(text, "(forced with {} unchecked task(s))", report.unchecked);
        }
        for s in &report.specs {
            let c = &s.counts;
            let _ = writeln!(
                text,
                "- specs/{}/spec.md{}: {} added, {} modified, {} removed, {} renamed",
                s.capability,
                if s.created { " (new)" } else { "" },
                c.added,
                c.modified,
                c.removed,
                c.renamed
            );
        }
        let structured = json!({
            "slug": report.slug,
            "archivedAs": report.archived_as,
            "path": format!("changes/archive/{}", report.archived_as),
            "forced": report.forced,
            "uncheckedTasks": report.unchecked,
            "specs": report.specs.iter().map(|s| json!({
                "capability": s.capability,
                "created": s.created,
                "added": s.counts.added,
                "modified": s.counts.modified,
                "removed": s.counts.removed,
                "renamed": s.counts.renamed,
            })).collect::<Vec<_>>(),
        });
        Ok(ToolOutput { structured, text })
    }
}
