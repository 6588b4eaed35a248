//! The MCP edge, on routes marked `mcp = true`: what each request asks (`view`: JSON-RPC method
//! and tool), how the backend answered it at the MCP level (`outcome`: a JSON-RPC error or a
//! tool result with `isError`, which HTTP 200 hides), the `tools/list` answer cut down to what
//! the caller may call (`tools_list`), and one audit line per tool call (`audit`).

pub mod audit;
pub mod outcome;
pub mod tools_list;
pub mod view;

pub use view::is_method;
