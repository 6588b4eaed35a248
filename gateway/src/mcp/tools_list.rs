//! The `tools/list` answer on an MCP route: its tool names become known metric labels, and for
//! a caller whose grants name only some tools, the JSON answer is cut down to those (a client
//! should not offer a model tools it will be refused). The filtered answer is held whole, up to
//! [`HOLD_LIMIT`]; a larger one is replaced by a JSON-RPC error rather than shown unfiltered.
//! Answers in an SSE stream pass as they are: calling a tool outside the grants is refused
//! either way.

use bytes::Bytes;
use serde::Deserialize;

use crate::auth::Rights;

/// Largest `tools/list` answer held for filtering.
pub const HOLD_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct Listed<'a> {
    #[serde(borrow)]
    result: Option<ListedTools<'a>>,
}

#[derive(Deserialize)]
struct ListedTools<'a> {
    #[serde(borrow)]
    tools: Vec<ListedTool<'a>>,
}

#[derive(Deserialize)]
struct ListedTool<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

/// Makes the listed tool names known labels.
pub fn learn(body: &[u8]) {
    if let Ok(Listed {
        result: Some(listed),
    }) = serde_json::from_slice::<Listed>(body)
    {
        crate::mcp::view::learn_tools(listed.tools.iter().map(|t| t.name.as_ref()));
    }
}

/// Holds a JSON `tools/list` answer and gives it back filtered at its end.
pub struct Filter {
    held: Vec<u8>,
    over: bool,
}

impl Filter {
    pub fn new() -> Filter {
        Filter {
            held: Vec::new(),
            over: false,
        }
    }

    /// Takes the body chunk in; at the end, puts out the filtered answer.
    pub fn filter(&mut self, body: &mut Option<Bytes>, end: bool, rights: &Rights) {
        if let Some(b) = body.take() {
            if self.held.len() + b.len() > HOLD_LIMIT {
                self.over = true;
                self.held = Vec::new();
            } else if !self.over {
                self.held.extend_from_slice(&b);
            }
        }
        if end {
            *body = Some(self.finish(rights));
        }
    }

    fn finish(&mut self, rights: &Rights) -> Bytes {
        let held = std::mem::take(&mut self.held);
        if self.over {
            return error("tools/list answer too large to filter");
        }
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&held) else {
            return error("tools/list answer is not JSON");
        };
        learn(&held);
        if let Some(tools) = v
            .pointer_mut("/result/tools")
            .and_then(|t| t.as_array_mut())
        {
            tools.retain(|t| {
                t.get("name")
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| rights.allows_tool(n))
            });
        }
        Bytes::from(v.to_string())
    }
}

fn error(message: &str) -> Bytes {
    crate::mcp::view::jsonrpc_error(None, -32603, message, None)
}
