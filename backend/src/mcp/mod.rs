//! MCP through the official Rust SDK (rmcp): one hand-written `ServerHandler` serves both the
//! Streamable HTTP endpoint (stateless, see `http::AppState::new`) and the 2024-11-05 HTTP+SSE
//! transport (`http::sse_transport`).
//!
//! - `tools/list` lists the registry's tools with their input and output schemas; the
//!   capabilities not declared (prompts, resources, completions) answer -32601.
//! - Messages rmcp would misread are answered first by `wire` (-32700, -32600, -32602).
//! - `tools/call` runs the tool through `exec::Executor`; a tool error (bad slug, conflict,
//!   timeout, too large) is a result with `isError: true` and the message as text, so the
//!   model can read it; an unknown tool name is a JSON-RPC error (invalid params).
//! - When the request carries `_meta.progressToken`, the tool's progress reports are sent as
//!   `notifications/progress` on the same response stream, all before the result.
//! - The caller (`caller::Caller`, set by `guard` on the HTTP request) comes from the request
//!   parts rmcp hands over; on the 2024-11-05 SSE transport it is the session's, fixed when
//!   `GET /sse` opened it.

use crate::api_error::ApiError;
use crate::caller::Caller;
use crate::exec::{Executor, ProgressUpdate};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestMethod,
    CompleteRequestParams, CompleteResult, ContentBlock, Implementation, InitializeResult,
    JsonObject, ListPromptsRequestMethod, ListPromptsResult, ListResourceTemplatesRequestMethod,
    ListResourceTemplatesResult, ListResourcesRequestMethod, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use std::sync::Arc;

pub mod wire;

/// Cheap to clone: rmcp asks for a handler per request in stateless mode.
#[derive(Clone)]
pub struct McpHandler {
    exec: Arc<Executor>,
    tools: Arc<Vec<Tool>>,
    /// The caller of an SSE session (its requests carry no HTTP parts).
    session_caller: Option<Caller>,
}

fn as_object(v: &Value) -> JsonObject {
    match v {
        Value::Object(o) => o.clone(),
        _ => JsonObject::new(),
    }
}

impl McpHandler {
    pub fn new(exec: Arc<Executor>) -> McpHandler {
        let tools = exec
            .registry()
            .list()
            .iter()
            .map(|d| {
                let mut t = Tool::new(d.name, d.description, Arc::new(as_object(&d.input_schema)))
                    .with_title(d.title);
                if let Some(out) = &d.output_schema {
                    t = t.with_raw_output_schema(Arc::new(as_object(out)));
                }
                t.with_annotations(
                    ToolAnnotations::with_title(d.title)
                        .read_only(d.read_only)
                        .destructive(false)
                        .open_world(false),
                )
            })
            .collect();
        McpHandler {
            exec,
            tools: Arc::new(tools),
            session_caller: None,
        }
    }

    /// The same handler for an SSE session opened by `caller`.
    pub fn for_session(&self, caller: Option<Caller>) -> McpHandler {
        McpHandler {
            session_caller: caller,
            ..self.clone()
        }
    }
}

/// A tool error as the model sees it: one text block with the code, message and hint.
fn error_result(e: &ApiError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(e.to_string())])
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new(crate::SERVICE_NAME, env!("CARGO_PKG_VERSION"));
        let names: Vec<&str> = self.tools.iter().map(|t| t.name.as_ref()).collect();
        info.instructions = Some(format!(
            "OpenSpec tools: {}. Changes are addressed by slug, tasks by id like \"1.3\".",
            names.join(", ")
        ));
        info
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    // Only `tools` is declared (MCP: a client must not call what the server did not declare,
    // and a server answers such a method with -32601); rmcp's defaults would answer empty
    // lists for prompts, resources and completions.
    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Err(McpError::method_not_found::<ListPromptsRequestMethod>())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Err(McpError::method_not_found::<ListResourcesRequestMethod>())
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Err(McpError::method_not_found::<
            ListResourceTemplatesRequestMethod,
        >())
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        Err(McpError::method_not_found::<CompleteRequestMethod>())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items((*self.tools).clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.as_ref();
        if self.exec.tool_name(name).is_none() {
            return Err(McpError::invalid_params(
                format!("unknown tool: {}", crate::bounded::bounded(name)),
                Some(serde_json::json!({"code": "UNKNOWN_TOOL"})),
            ));
        }
        let input = Value::Object(request.arguments.clone().unwrap_or_default());

        let (progress_tx, forwarder) = match context.meta.get_progress_token() {
            None => (None, None),
            Some(token) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProgressUpdate>();
                let peer = context.peer.clone();
                let task = tokio::spawn(async move {
                    while let Some(u) = rx.recv().await {
                        let mut p = ProgressNotificationParam::new(token.clone(), u.progress);
                        p.total = u.total;
                        p.message = u.message;
                        if let Err(e) = peer.notify_progress(p).await {
                            log::debug!("progress notification not delivered: {e}");
                            break;
                        }
                    }
                });
                (Some(tx), Some(task))
            }
        };

        let parts = context.extensions.get::<http::request::Parts>();
        let caller = parts
            .and_then(|p| p.extensions.get::<Caller>())
            .or(self.session_caller.as_ref())
            .cloned()
            .unwrap_or_else(Caller::anonymous);
        let span = parts.and_then(|p| p.extensions.get::<crate::trace::RequestSpan>().copied());
        let result = self
            .exec
            .call(name, input, &caller, progress_tx, span)
            .await;
        if let Some(task) = forwarder {
            match &result {
                // A timed-out call still holds the sender on the blocking pool: do not wait.
                Err(e) if e.code == "TIMEOUT" => task.abort(),
                // Every report is queued by now; wait so they all precede the result.
                _ => {
                    let _ = task.await;
                }
            }
        }
        Ok(match result {
            Ok(out) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(out.text)]);
                r.structured_content = Some(out.structured);
                r
            }
            Err(e) => error_result(&e),
        }
        .into())
    }
}
