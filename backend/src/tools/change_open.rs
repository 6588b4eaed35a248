use super::{views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::openspec::stamp::Stamps;
use crate::openspec::{tasks, Workspace};
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Bounds the cache; past it the cache is simply emptied (changes are few).
const CACHE_MAX: usize = 256;

/// `change.open` is the hot read, so its answer is cached per slug and reused while every
/// file it came from keeps its stamp (see `openspec::stamp`): a write by any replica on the
/// shared volume invalidates it at the next call.
#[derive(Default)]
pub struct ChangeOpen {
    cache: Mutex<HashMap<String, Arc<(Stamps, ToolOutput)>>>,
}

impl Tool for ChangeOpen {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "change.open",
            read_only: true,
            title: "Open a change",
            description: "A change's proposal, design (if any), tasks (id, text, done) and spec deltas \
                          per capability (ADDED / MODIFIED / REMOVED / RENAMED requirements with their text).",
            input_schema: json!({
                "type": "object",
                "properties": { "slug": views::slug_schema() },
                "required": ["slug"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "slug": { "type": "string" },
                    "title": { "type": "string" },
                    "proposal": { "type": "string", "description": "proposal.md as written." },
                    "design": { "type": ["string", "null"], "description": "design.md, if any." },
                    "tasks": views::tasks_schema(),
                    "progress": views::progress_schema(),
                    "deltas": { "type": "array", "items": views::delta_schema() }
                },
                "required": ["slug", "title", "proposal", "design", "tasks", "progress", "deltas"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, ws: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let slug = input.name("slug")?;
        let cached = self.cache.lock().ok().and_then(|c| c.get(slug).cloned());
        if let Some(entry) = cached {
            if entry.0.still_valid() {
                return Ok(entry.1.clone());
            }
        }
        let (output, stamps) = render(ws, slug)?;
        if stamps.settled() {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(slug.to_string(), Arc::new((stamps, output.clone())));
            }
        }
        Ok(output)
    }
}

fn render(ws: &Workspace, slug: &str) -> Result<(ToolOutput, Stamps), ToolError> {
    let (change, stamps) = ws.open_change_stamped(slug)?;
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
    Ok((ToolOutput { structured, text }, stamps))
}
