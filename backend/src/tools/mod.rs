//! The tool registry: every tool is one small file implementing [`Tool`], listed once in the
//! `tools!` invocation below. The registry validates nothing itself: each tool reads its input
//! through [`input::Input`], which names the offending field in every error.
//!
//! Tools come in families (`openspec`, `todo`, `memory`), enabled by TOOLS; only enabled families are
//! registered, so only they appear in `tools/list` and `/tools`. A tool is called with a
//! [`Context`]: the workspace (what it derefs to), the caller's identity and the item store.

mod input;
mod memory_views;
mod todo_views;
mod views;

use crate::caller::Caller;
use crate::openspec::{self, Workspace};
use crate::store::{Store, StoreError};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// The item store cannot be used now (cannot be opened, locked past its busy timeout,
    /// disk full): retry later.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::UnknownTool => "UNKNOWN_TOOL",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::UnknownTool => 404,
            ErrorCode::InvalidInput => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
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

impl From<StoreError> for ToolError {
    fn from(e: StoreError) -> ToolError {
        match e {
            StoreError::NotFound => ToolError::new(ErrorCode::NotFound, "task not found")
                .with_hint("list_tasks shows your tasks; a task_id of another caller is not found"),
            StoreError::Conflict { current } => ToolError::new(
                ErrorCode::Conflict,
                format!("input.expected_version: the task is at version {current} now"),
            )
            .with_hint("read the task again (list_tasks) and retry with its current version"),
            StoreError::Unavailable(why) => {
                log::warn!("{why}");
                ToolError::new(
                    ErrorCode::Unavailable,
                    format!("the item store is unavailable: {why}"),
                )
                .with_hint("retry shortly; /health/ready reports the store")
            }
        }
    }
}

/// A tool family, as named in TOOLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Openspec,
    Todo,
    Memory,
}

impl Family {
    pub const ALL: &'static [Family] = &[Family::Openspec, Family::Todo, Family::Memory];

    pub fn as_str(&self) -> &'static str {
        match self {
            Family::Openspec => "openspec",
            Family::Todo => "todo",
            Family::Memory => "memory",
        }
    }

    /// What `/servers` says the family is.
    pub fn description(&self) -> &'static str {
        match self {
            Family::Openspec => "OpenSpec changes, tasks and specs in the workspace",
            Family::Todo => "the caller's own tasks, in the item store",
            Family::Memory => {
                "the caller's own memories (key, value, tags, expiry), in the item store"
            }
        }
    }

    /// True when the family keeps its items in the [`Store`].
    pub fn uses_store(&self) -> bool {
        matches!(self, Family::Todo | Family::Memory)
    }

    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL
            .iter()
            .copied()
            .find(|f| f.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

/// What a tool is called with: derefs to the workspace, so OpenSpec tools read `ws.…` as
/// before; the todo and memory tools use `caller` and `store()`.
pub struct Context<'a> {
    pub workspace: &'a Workspace,
    pub caller: &'a Caller,
    pub store: Option<&'a dyn Store>,
}

impl Context<'_> {
    /// The item store, or UNAVAILABLE when none is configured.
    pub fn store(&self) -> Result<&dyn Store, ToolError> {
        self.store
            .ok_or_else(|| ToolError::new(ErrorCode::Unavailable, "no item store is configured"))
    }
}

impl std::ops::Deref for Context<'_> {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        self.workspace
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
        ws: &Context,
        input: &Input,
        progress: &dyn Progress,
    ) -> Result<ToolOutput, ToolError>;
    /// True when a call may wait on something slower than a few small local files (a
    /// database): it then runs on the blocking pool under the time limit even if read-only.
    fn blocking(&self) -> bool {
        false
    }
}

/// Declares the tool modules and the registry's list in one place: adding a tool is its file
/// plus one line here.
macro_rules! tools {
    ($($family:ident => $module:ident :: $tool:ident),* $(,)?) => {
        $(mod $module;)*
        fn all_tools() -> Vec<(Family, Box<dyn Tool>)> {
            vec![$((Family::$family, Box::new(<$module::$tool>::default()))),*]
        }
    };
}

tools! {
    Openspec => change_list::ChangeList,
    Openspec => change_open::ChangeOpen,
    Openspec => change_archive::ChangeArchive,
    Openspec => task_list::TaskList,
    Openspec => task_update::TaskUpdate,
    Openspec => spec_list::SpecList,
    Openspec => spec_open::SpecOpen,
    Todo => list_tasks::ListTasks,
    Todo => create_task::CreateTask,
    Todo => mark_task_completed::MarkTaskCompleted,
    Todo => update_task::UpdateTask,
    Todo => delete_task::DeleteTask,
    Memory => memory_remember::MemoryRemember,
    Memory => memory_recall::MemoryRecall,
    Memory => memory_forget::MemoryForget,
}

/// The tools over one workspace. Immutable after construction, so it is `Send + Sync` and
/// cheap to share in an `Arc`.
pub struct Registry {
    workspace: Workspace,
    store: Option<Arc<dyn Store>>,
    tools: Vec<(Family, Box<dyn Tool>)>,
    defs: Vec<ToolDef>,
    by_name: HashMap<&'static str, usize>,
}

impl Registry {
    /// The OpenSpec family alone, no store.
    pub fn new(workspace: Workspace) -> Registry {
        Registry::with_families(workspace, &[Family::Openspec], None)
    }

    /// The tools of `families`; `store` serves the todo and memory families.
    pub fn with_families(
        workspace: Workspace,
        families: &[Family],
        store: Option<Arc<dyn Store>>,
    ) -> Registry {
        let tools: Vec<(Family, Box<dyn Tool>)> = all_tools()
            .into_iter()
            .filter(|(f, _)| families.contains(f))
            .collect();
        let defs: Vec<ToolDef> = tools.iter().map(|(_, t)| t.def()).collect();
        let by_name = defs.iter().enumerate().map(|(i, d)| (d.name, i)).collect();
        Registry {
            workspace,
            store,
            tools,
            defs,
            by_name,
        }
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// A cheap read that may run inline on the async worker (see `exec`).
    pub fn runs_inline(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|&i| self.defs[i].read_only && !self.tools[i].1.blocking())
    }

    pub fn list(&self) -> &[ToolDef] {
        &self.defs
    }

    /// The families served, in registry order, each with its tools (for `/servers`).
    pub fn families(&self) -> Vec<(Family, Vec<&ToolDef>)> {
        let mut out: Vec<(Family, Vec<&ToolDef>)> = Vec::new();
        for ((family, _), def) in self.tools.iter().zip(&self.defs) {
            match out.iter_mut().find(|(f, _)| f == family) {
                Some((_, defs)) => defs.push(def),
                None => out.push((*family, vec![def])),
            }
        }
        out
    }

    pub fn get(&self, name: &str) -> Option<&ToolDef> {
        self.by_name.get(name).map(|&i| &self.defs[i])
    }

    /// As `anonymous`.
    pub fn call(
        &self,
        name: &str,
        input: Value,
        progress: &dyn Progress,
    ) -> Result<ToolOutput, ToolError> {
        self.call_as(name, input, &Caller::anonymous(), progress)
    }

    /// Synchronous (filesystem or database work); the server decides whether to run it on a
    /// blocking thread.
    pub fn call_as(
        &self,
        name: &str,
        input: Value,
        caller: &Caller,
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
        let (family, tool) = &self.tools[index];
        if self.defs[index].read_only && *family == Family::Openspec {
            // A reader never sees an archive half done: one stat, and only after a crash or
            // during a running archive a short wait on the lock that finishes it.
            crate::openspec::recovery::settle(&self.workspace);
        }
        let cx = Context {
            workspace: &self.workspace,
            caller,
            store: self.store.as_deref(),
        };
        tool.call(&cx, &input, progress)
    }
}
