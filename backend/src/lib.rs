//! The tool server: OpenSpec tools behind MCP (Streamable HTTP and the 2024-11-05
//! HTTP+SSE transport) and the user's existing Task MCP API.

pub mod openspec;
pub mod tools;

pub mod api_error;
pub mod backup;
pub mod bounded;
pub mod caller;
pub mod config;
pub mod exec;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod redis_target;
pub mod shutdown;
pub mod store;
pub mod trace;

/// The name both the MCP `serverInfo` and `/health` report.
pub const SERVICE_NAME: &str = "task-mcp-backend";
