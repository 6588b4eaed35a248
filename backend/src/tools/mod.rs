//! The tool registry: every tool is one small file implementing [`Tool`], listed once in the
//! `tools!` invocation below. The registry validates nothing itself: each tool reads its input
//! through [`input::Input`], which names the offending field in every error.

mod input;
mod views;

use crate::openspec::{self, Workspace};
use serde_json::Value;
use std::collections::HashMap;

pub use input::Input;

/// What `tools/list` shows for one tool.
#[derive(Debug, Clone)]
pub struct ToolDef {
    pub name: &'static str,
    /// Only reads a few small files: run inline rather than on the blocking pool, and shown to
    /// MCP clients with `readOnlyHint`.
    pub read_only: bool,
    pub title: &'static str,
    pub description: &'static str,
    /// JSON Schema with `"type": "object"`.
    pub input_schema: Value,
    pub output_schema: Option<Value>,
}

/// A tool's answer: structured content (a JSON object) and a readable summary.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub structured: Value,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    UnknownTool,
    InvalidInput,
    NotFound,
    Conflict,
    Internal,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::UnknownTool => "UNKNOWN_TOOL",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::UnknownTool => 404,
            ErrorCode::InvalidInput => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Internal => 500,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ToolError {
    pub code: ErrorCode,
    pub message: String,
    pub hint: Option<String>,
}

impl ToolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ToolError {
        ToolError {
            code,
            message: message.into(),
            hint: None,
        }
    }
    pub fn invalid_input(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorCode::InvalidInput, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> ToolError {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<openspec::Error> for ToolError {
    fn from(e: openspec::Error) -> ToolError {
        let code = match e.kind {
            openspec::ErrorKind::InvalidInput | openspec::ErrorKind::Invalid => {
                ErrorCode::InvalidInput
            }
            openspec::ErrorKind::NotFound => ErrorCode::NotFound,
            openspec::ErrorKind::Conflict => ErrorCode::Conflict,
            openspec::ErrorKind::Io => ErrorCode::Internal,
        };
        ToolError {
            code,
            message: e.message,
            hint: e.hint,
        }
    }
}

/// Progress of a long call; the server turns reports into MCP progress notifications or SSE
/// events. `progress` grows monotonically; `total` when known.
pub trait Progress: Send + Sync {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<&str>);
}

/// For callers that do not stream progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _progress: f64, _total: Option<f64>, _message: Option<&str>) {}
}

/// One tool, in its own file; `Default` builds it (a unit struct, or one holding a cache).
pub trait Tool: Send + Sync {
    fn def(&self) -> ToolDef;
    fn call(
        &self,
        ws: &Workspace,
        input: &Input,
        progress: &dyn Progress,
    ) -> Result<ToolOutput, ToolError>;
}

/// Declares the tool modules and the registry's list in one place: adding a tool is its file
/// plus one line here.
macro_rules! tools {
    ($($module:ident :: $tool:ident),* $(,)?) => {
        $(mod $module;)*
        fn all_tools() -> Vec<Box<dyn Tool>> {
            vec![$(Box::new(<$module::$tool>::default())),*]
        }
    };
}

tools! {
    change_list::ChangeList,
    change_open::ChangeOpen,
    change_archive::ChangeArchive,
    task_list::TaskList,
    task_update::TaskUpdate,
    spec_list::SpecList,
    spec_open::SpecOpen,
}

/// The tools over one workspace. Immutable after construction, so it is `Send + Sync` and
/// cheap to share in an `Arc`.
pub struct Registry {
    workspace: Workspace,
    tools: Vec<Box<dyn Tool>>,
    defs: Vec<ToolDef>,
    by_name: HashMap<&'static str, usize>,
}

impl Registry {
    pub fn new(workspace: Workspace) -> Registry {
        let tools = all_tools();
        let defs: Vec<ToolDef> = tools.iter().map(|t| t.def()).collect();
        let by_name = defs.iter().enumerate().map(|(i, d)| (d.name, i)).collect();
        Registry {
            workspace,
            tools,
            defs,
            by_name,
        }
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn list(&self) -> &[ToolDef] {
        &self.defs
    }

    pub fn get(&self, name: &str) -> Option<&ToolDef> {
        self.by_name.get(name).map(|&i| &self.defs[i])
    }

    /// Synchronous (filesystem work); the server decides whether to run it on a blocking thread.
    pub fn call(
        &self,
        name: &str,
        input: Value,
        progress: &dyn Progress,
    ) -> Result<ToolOutput, ToolError> {
        let Some(&index) = self.by_name.get(name) else {
            let names: Vec<&str> = self.defs.iter().map(|d| d.name).collect();
            return Err(ToolError::new(
                ErrorCode::UnknownTool,
                format!("unknown tool: {}", crate::bounded::bounded(name)),
            )
            .with_hint(format!("available tools: {}", names.join(", "))));
        };
        let input = Input::new(input, self.defs[index].input_schema.get("properties"))?;
        if self.defs[index].read_only {
            // A reader never sees an archive half done: one stat, and only after a crash or
            // during a running archive a short wait on the lock that finishes it.
            crate::openspec::recovery::settle(&self.workspace);
        }
        self.tools[index].call(&self.workspace, &input, progress)
    }
}
