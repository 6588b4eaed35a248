//! Item stores shared by every replica: the todo family's tasks and the memory family's
//! memories.
//!
//! One trait, [`Store`] (its two halves [`TaskStore`] and [`MemoryStore`]), which the tools
//! see as `&dyn Store`; SQLite ([`sqlite`]) is the default, a file in the workspace volume, and
//! PostgreSQL ([`postgres`], `DATABASE_URL`) serves replicas on many hosts. Tools never know
//! which.
//!
//! The trait is synchronous on purpose: tools are synchronous and every todo call already runs
//! on tokio's blocking pool under REQUEST_TIMEOUT_MS (see `exec`), rusqlite is synchronous,
//! and a PostgreSQL implementation can use the synchronous `postgres` client (or
//! `Handle::block_on` over tokio-postgres) from those same threads. Async would only add a
//! boxed future per call for no gain here.
//!
//! Rules every implementation keeps:
//! - every read and write is filtered by `owner`; another owner's task or memory is
//!   `NotFound`;
//! - `update` is one atomic statement (field-wise: concurrent updates of different fields all
//!   apply) and bumps `version` by one; with `expected_version` it is a compare-and-set
//!   (`Conflict` when stale);
//! - a database that cannot be opened or answered (locked past the busy timeout, disk full,
//!   unreadable file) is `Unavailable`, never a hang;
//! - listing order is stable: `(created_at, id)` ascending, and the cursor is the last key;
//! - a memory is keyed by `(owner, key)`; `remember` is one atomic upsert (a new value bumps
//!   `version`); an expired memory (`expires_at` passed) is never returned and counts as absent
//!   (remembering it again starts at version 1); search is newest first (`updated_at`
//!   descending, then `key`).

pub mod postgres;
pub mod sqlite;

use serde_json::{json, Value};

/// One task as stored. Timestamps are RFC 3339 UTC with microseconds (fixed width, so they
/// sort as text); `due` is what the caller gave (an RFC 3339 date or date-time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub owner: String,
    pub title: String,
    pub description: Option<String>,
    pub due: Option<String>,
    pub completed: bool,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

impl Task {
    /// A new task of `owner` as `create` stores it: a fresh id, open, version 1, now.
    pub fn new(owner: &str, new: &NewTask) -> Task {
        let at = now();
        Task {
            id: new_id(),
            owner: owner.to_string(),
            title: new.title.clone(),
            description: new.description.clone(),
            due: new.due.clone(),
            completed: false,
            created_at: at.clone(),
            updated_at: at,
            version: 1,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "owner": self.owner,
            "title": self.title,
            "description": self.description,
            "due": self.due,
            "completed": self.completed,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        })
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at.clone(),
            id: self.id.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Open,
    Completed,
    All,
}

#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub title: String,
    pub description: Option<String>,
    pub due: Option<String>,
}

/// Fields to change; `None` keeps the field. `description` and `due` are `Some(None)` to clear.
#[derive(Debug, Clone, Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub due: Option<Option<String>>,
    pub completed: Option<bool>,
}

impl TaskPatch {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.due.is_none()
            && self.completed.is_none()
    }
}

/// Where a page ends: the key of its last task. Opaque to callers (hex text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: String,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        hex::encode(format!("{}\n{}", self.created_at, self.id))
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let bytes = hex::decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (created_at, id) = text.split_once('\n')?;
        (created_at.len() <= 64 && uuid::Uuid::parse_str(id).is_ok()).then(|| Cursor {
            created_at: created_at.to_string(),
            id: id.to_string(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Page {
    pub tasks: Vec<Task>,
    /// Present when more tasks follow.
    pub next_cursor: Option<Cursor>,
}

impl Page {
    /// From up to `limit + 1` rows (stores fetch one more than asked to know whether more
    /// follow): the first `limit`, and the cursor after them when there was one more.
    pub fn from_rows(mut tasks: Vec<Task>, limit: usize) -> Page {
        let next_cursor = if tasks.len() > limit {
            tasks.truncate(limit);
            tasks.last().map(Task::cursor)
        } else {
            None
        };
        Page { tasks, next_cursor }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No such task for this owner (another owner's task looks the same).
    NotFound,
    /// `expected_version` was stale; the task's version now.
    Conflict { current: i64 },
    /// The database cannot be opened or used now; the message says why (no secrets).
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound => write!(f, "not found"),
            StoreError::Conflict { current } => write!(f, "version conflict (now {current})"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The item store: both families' halves, and what health and logs ask of it.
pub trait Store: TaskStore + MemoryStore {
    /// What it is, for logs and health (`sqlite:/data/.mcp/store.sqlite3`,
    /// `postgres://host:5432/db`), without secrets.
    fn describe(&self) -> String;
    /// Opens the database and applies migrations if not done yet; `Unavailable` otherwise.
    fn check(&self) -> Result<(), StoreError>;
}

/// The todo family's storage. Implementations are `Send + Sync` and called from blocking
/// threads; each method is one transaction.
pub trait TaskStore: Send + Sync {
    fn list(
        &self,
        owner: &str,
        status: StatusFilter,
        limit: usize,
        after: Option<&Cursor>,
    ) -> Result<Page, StoreError>;
    fn create(&self, owner: &str, new: &NewTask) -> Result<Task, StoreError>;
    fn update(
        &self,
        owner: &str,
        id: &str,
        patch: &TaskPatch,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError>;
    /// Marks it completed; the bool is false when it already was (nothing changed then).
    fn complete(&self, owner: &str, id: &str) -> Result<(Task, bool), StoreError>;
    fn delete(&self, owner: &str, id: &str) -> Result<(), StoreError>;
}

/// One memory as stored; `tags` sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    pub owner: String,
    pub key: String,
    pub value: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    /// When a `ttl_seconds` was given: after this instant the memory is gone.
    pub expires_at: Option<String>,
    pub version: i64,
}

impl Memory {
    pub fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "owner": self.owner,
            "value": self.value,
            "tags": self.tags,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "version": self.version,
        })
    }
}

/// What `remember` stores under `key`.
#[derive(Debug, Clone, Default)]
pub struct NewMemory {
    pub key: String,
    pub value: String,
    pub tags: Vec<String>,
    pub ttl: Option<std::time::Duration>,
}

/// What `search` looks for; every part given must match.
#[derive(Debug, Clone, Default)]
pub struct MemoryQuery {
    /// A substring of the key or the value, ASCII case-insensitive.
    pub text: Option<String>,
    /// Tags the memory has, all of them.
    pub tags: Vec<String>,
    pub limit: usize,
}

/// The memory family's storage; same rules as [`TaskStore`].
pub trait MemoryStore: Send + Sync {
    /// Stores `new` under its key (replacing a live memory, which keeps its `created_at`); the
    /// bool is true when the key held no live memory before.
    fn remember(&self, owner: &str, new: &NewMemory) -> Result<(Memory, bool), StoreError>;
    /// The live memory under `key`.
    fn recall(&self, owner: &str, key: &str) -> Result<Memory, StoreError>;
    /// Live memories matching `query`, newest first, at most `query.limit`.
    fn search(&self, owner: &str, query: &MemoryQuery) -> Result<Vec<Memory>, StoreError>;
    /// Removes the live memory under `key`; `NotFound` when there is none.
    fn forget(&self, owner: &str, key: &str) -> Result<(), StoreError>;
}

/// `at` plus `ttl`, in the stored form.
pub fn expiry(at: chrono::DateTime<chrono::Utc>, ttl: std::time::Duration) -> String {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let when = at
        .checked_add_signed(ttl)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    stamp(when)
}

/// A time in the stored form: RFC 3339 UTC, microseconds, `Z`.
pub fn stamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Now, as stored: RFC 3339 UTC, microseconds, `Z`.
pub fn now() -> String {
    stamp(chrono::Utc::now())
}

/// A new task id (UUID v4, hyphenated lowercase).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

#[cfg(test)]
mod tests;
