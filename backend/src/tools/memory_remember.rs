use super::{memory_views, Context, Input, Progress, Tool, ToolDef, ToolError, ToolOutput};
use crate::store::NewMemory;
use serde_json::json;

#[derive(Default)]
pub struct MemoryRemember;

impl Tool for MemoryRemember {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "memory_remember",
            read_only: false,
            title: "Remember something",
            description: "Stores a value under a key of yours (replacing what the key held), \
                          with optional tags and an expiry in seconds.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "key": memory_views::key_schema(),
                    "value": { "type": "string", "maxLength": memory_views::VALUE_MAX,
                        "description": "What to remember." },
                    "content": { "type": "string", "maxLength": memory_views::VALUE_MAX,
                        "description": "Alias of value (give one of them)." },
                    "tags": memory_views::tags_schema(),
                    "ttl_seconds": { "type": ["integer", "null"], "minimum": 1,
                        "maximum": memory_views::TTL_MAX,
                        "description": "Forget it this many seconds from now." }
                },
                "required": ["key"],
                "additionalProperties": false
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "memory": memory_views::memory_schema(),
                    "created": { "type": "boolean",
                        "description": "False when the key held a memory that was replaced." }
                },
                "required": ["memory", "created"],
                "additionalProperties": false
            })),
        }
    }

    fn call(&self, cx: &Context, input: &Input, _: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let new = NewMemory {
            key: memory_views::key(input, "key")?,
            value: memory_views::value(input)?,
            tags: memory_views::tags(input, "tags")?,
            ttl: input
                .opt_int("ttl_seconds", 1, memory_views::TTL_MAX)?
                .map(|s| std::time::Duration::from_secs(s as u64)),
        };
        let (memory, created) = cx
            .store()?
            .remember(cx.caller.as_str(), &new)
            .map_err(|e| memory_views::store_error(e, &new.key))?;
        let text = format!(
            "{} {}",
            if created { "remembered" } else { "replaced" },
            memory_views::line(&memory)
        );
        Ok(ToolOutput {
            structured: json!({ "memory": memory.to_json(), "created": created }),
            text,
        })
    }
}
