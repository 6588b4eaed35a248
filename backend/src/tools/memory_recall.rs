use super::{memory_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::store::{Memory, MemoryQuery};
use serde_json::json;
use std::fmt::Write;

pub const DEFAULT_LIMIT: i64 = 10;
pub const MAX_LIMIT: i64 = 100;
/// Longest search text, in characters.
pub const QUERY_MAX: usize = 256;

#[derive(Default)]
pub struct MemoryRecall;

impl Tool for MemoryRecall {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "memory_recall",
            read_only: true,
            title: "Recall memories",
            description: "With key: the memory under that key. Otherwise searches your \
                          memories: query is a substring of the key or value (ASCII \
                          case-insensitive), tags must all be present; newest first.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "key": memory_views::key_schema(),
                    "query": { "type": "string", "minLength": 1, "maxLength": QUERY_MAX },
                    "tags": memory_views::tags_schema(),
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT }
                },
                "additionalProperties": false
            }),
            output_schema: Some(memory_views::memories_output_schema()),
        }
    }

    fn blocking(&self) -> bool {
        true
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let searching = input.has("query") || input.has("tags") || input.has("limit");
        if input.has("key") {
            if searching {
                return Err(ToolError::invalid_input(
                    "input.key: give key alone, or query/tags/limit to search, not both",
                ));
            }
            let key = memory_views::key(input, "key")?;
            let memory = cx
                .store()?
                .recall(cx.caller.as_str(), &key)
                .map_err(|e| memory_views::store_error(e, &key))?;
            let text = memory.value.clone();
            return Ok(ToolOutput {
                structured: json!({ "memories": [memory.to_json()] }),
                text,
            });
        }
        let text = match input.opt_str("query")? {
            None => None,
            Some("") => {
                return Err(ToolError::invalid_input("input.query: must not be empty"))
            }
            Some(q) if q.chars().count() > QUERY_MAX => {
                return Err(ToolError::invalid_input(format!(
                    "input.query: longer than {QUERY_MAX} characters"
                )))
            }
            Some(q) => Some(q.to_string()),
        };
        let tags = memory_views::tags(input, "tags")?;
        if text.is_none() && tags.is_empty() {
            return Err(ToolError::invalid_input("input.key: required")
                .with_hint("give key, or query and/or tags to search"));
        }
        let query = MemoryQuery {
            text,
            tags,
            limit: input
                .opt_int("limit", 1, MAX_LIMIT)?
                .unwrap_or(DEFAULT_LIMIT) as usize,
        };
        let found = cx.store()?.search(cx.caller.as_str(), &query)?;
        let mut text = format!("{} memor{}", found.len(), if found.len() == 1 { "y" } else { "ies" });
        for m in &found {
            let _ = write!(text, "\n{}: {}", memory_views::line(m), crate::bounded::bounded(&m.value));
        }
        Ok(ToolOutput {
            structured: json!({ "memories": found.iter().map(Memory::to_json).collect::<Vec<_>>() }),
            text,
        })
    }
}
