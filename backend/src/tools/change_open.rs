use super::{views, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::openspec::{tasks, Workspace};
use serde_json::json;
use std::fmt::Write;

pub struct ChangeOpen;

impl Tool for ChangeOpen {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "change.open",
            title: "Open a change",
            description: "A change's proposal, design (if any), tasks (id, text, done) and spec deltas \
                          per capability (ADDED / MODIFIED / REMOVED / RENAMED requirements with their text).",
            input_schema: json!({
                "type": "object",
                "properties": { "slug": views::slug_schema() },
                "required": ["slug"],
                "additionalProperties": false
            }),
            output_schema: None,
        }
    }

    fn call(
        &self,
        ws: &Workspace,
        input: &Input,
        _: &dyn Progress,
    ) -> Result<ToolOutput, ToolError> {
        let slug = input.name("slug")?;
        let change = ws.open_change(slug)?;
        let (done, total) = tasks::progress(&change.tasks);
        let mut text = format!(
            "{} ({}): {done}/{total} tasks done\n",
            change.title, change.slug
        );
        for d in &change.deltas {
            let p = &d.plan;
            let _ = writeln!(
                text,
                "- {}: {} added, {} modified, {} removed, {} renamed",
                d.capability,
                p.added.len(),
                p.modified.len(),
                p.removed.len(),
                p.renamed.len()
            );
        }
        text.push('\n');
        text.push_str(&change.proposal);
        let structured = json!({
            "slug": change.slug,
            "title": change.title,
            "proposal": change.proposal,
            "design": change.design,
            "tasks": views::tasks(&change.tasks),
            "progress": views::progress(done, total),
            "deltas": change.deltas.iter().map(views::delta).collect::<Vec<_>>(),
        });
        Ok(ToolOutput { structured, text })
    }
}
