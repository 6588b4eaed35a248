//! [`Store`] (tasks and memories) on SQLite: one file on the workspace volume, shared by every replica.
//!
//! WAL mode (readers never wait for the writer), `busy_timeout` (a writer waits that long for
//! another replica's write, then the call answers UNAVAILABLE), write transactions begun
//! `IMMEDIATE` (so SQLite's busy handler applies instead of a deadlock-style SQLITE_BUSY), and
//! migrations numbered in `schema_version`, applied under a write lock so two replicas starting
//! together apply each once. Connections are kept in a small idle pool; one that failed is
//! dropped, and a database that could not be opened is retried at the next call.
//!
//! WAL needs a filesystem with working POSIX locks and shared memory (local disks, Docker
//! volumes shared by containers on one host); not NFS.

use super::{
    expiry, now, stamp, Cursor, Memory, MemoryQuery, MemoryStore, NewMemory, NewTask, Page,
    StatusFilter, Store, StoreError, Task, TaskPatch, TaskStore,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Idle connections kept for reuse.
const IDLE_MAX: usize = 8;

/// Schema migrations, in order; `schema_version` holds how many were applied. Never edit one
/// that shipped: append.
/// How many migrations this backend knows (the newest schema version).
pub const MIGRATION_COUNT: usize = MIGRATIONS.len();

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE tasks (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        title       TEXT NOT NULL,
        description TEXT,
        due         TEXT,
        completed   INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        version     INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX tasks_owner_order ON tasks (owner, created_at, id);",
    // Tags as a JSON array of strings (sorted, unique); searched with json_each.
    "CREATE TABLE memories (
        owner       TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        tags        TEXT NOT NULL DEFAULT '[]',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        expires_at  TEXT,
        version     INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX memories_owner_newest ON memories (owner, updated_at DESC, key);
    CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;",
];

const MEMORY_COLUMNS: &str = "owner, key, value, tags, created_at, updated_at, expires_at, version";

const COLUMNS: &str =
    "id, owner, title, description, due, completed, created_at, updated_at, version";

pub struct SqliteStore {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    migrated: AtomicBool,
    writers: WriterGate,
}

/// One writer of this process at a time. SQLite allows one writer per database anyway; a
/// writer that finds the lock taken sleeps in its busy handler (1, 2, 5, 10, ... 100 ms), so
/// with a dozen concurrent writes the last ones waited tens of milliseconds for nothing. Here
/// they queue and each starts the moment the previous one commits. The wait is bounded by the
/// busy timeout; past it the write goes ahead and SQLite's own locking decides (writers of
/// other replicas are only ordered by that).
struct WriterGate {
    busy: Mutex<bool>,
    freed: Condvar,
}

struct WriterTurn<'a>(&'a WriterGate);

impl WriterGate {
    fn new() -> WriterGate {
        WriterGate {
            busy: Mutex::new(false),
            freed: Condvar::new(),
        }
    }

    /// Waits up to `limit` for the turn; `None` past it (write anyway).
    fn enter(&self, limit: Duration) -> Option<WriterTurn<'_>> {
        let guard = self.busy.lock().ok()?;
        let (mut busy, _) = self
            .freed
            .wait_timeout_while(guard, limit, |busy| *busy)
            .ok()?;
        if *busy {
            return None;
        }
        *busy = true;
        Some(WriterTurn(self))
    }
}

impl Drop for WriterTurn<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.0.busy.lock() {
            *busy = false;
        }
        self.0.freed.notify_one();
    }
}

impl SqliteStore {
    /// Does not touch the file: [`TaskStore::check`] (called at start-up) opens and migrates.
    pub fn new(path: impl Into<PathBuf>, busy_timeout: Duration) -> SqliteStore {
        SqliteStore {
            path: path.into(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            migrated: AtomicBool::new(false),
            writers: WriterGate::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("task database {}: {e}", self.path.display()))
    }

    fn open(&self) -> Result<Connection, StoreError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.unavailable(e))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(&self.path, flags).map_err(|e| self.unavailable(e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| self.unavailable(e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| self.unavailable(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!(
                "task database {}: journal mode is {mode}, not WAL",
                self.path.display()
            );
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| self.unavailable(e))?;
        if !self.migrated.load(Ordering::Acquire) {
            migrate(&mut conn).map_err(|e| self.unavailable(e))?;
            self.migrated.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    /// [`Self::with`] for a call that writes: in its turn among this process's writers.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let _turn = self.writers.enter(self.busy_timeout);
        self.with(f)
    }

    /// Runs `f` on a pooled connection; a connection whose call failed is not kept.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => self.open()?,
        };
        match f(&mut conn) {
            Ok(v) => {
                if let Ok(mut idle) = self.idle.lock() {
                    if idle.len() < IDLE_MAX {
                        idle.push(conn);
                    }
                }
                Ok(v)
            }
            Err(Failure::Store(e)) => {
                if let Ok(mut idle) = self.idle.lock() {
                    if idle.len() < IDLE_MAX {
                        idle.push(conn);
                    }
                }
                Err(e)
            }
            Err(Failure::Sql(e)) => Err(self.unavailable(e)),
        }
    }
}

/// Inside `with`: a domain answer (keep the connection) or a database failure (drop it).
enum Failure {
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Sql(e)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(|e| e.to_string())?;
    let applied: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(format!(
            "schema version {applied} is newer than this backend knows ({known}): upgrade the backend"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.execute_batch(sql)
            .map_err(|e| format!("migration {}: {e}", i + 1))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )
        .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

fn row_to_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: r.get(0)?,
        owner: r.get(1)?,
        title: r.get(2)?,
        description: r.get(3)?,
        due: r.get(4)?,
        completed: r.get::<_, i64>(5)? != 0,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        version: r.get(8)?,
    })
}

fn row_to_memory(r: &rusqlite::Row<'_>) -> rusqlite::Result<Memory> {
    let tags: String = r.get(3)?;
    Ok(Memory {
        owner: r.get(0)?,
        key: r.get(1)?,
        value: r.get(2)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        expires_at: r.get(6)?,
        version: r.get(7)?,
    })
}

fn current_version(conn: &Connection, owner: &str, id: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT version FROM tasks WHERE id = ?1 AND owner = ?2",
        params![id, owner],
        |r| r.get(0),
    )
    .optional()
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn check(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT COUNT(*) FROM schema_version", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
    }
}

impl TaskStore for SqliteStore {
    fn list(
        &self,
        owner: &str,
        status: StatusFilter,
        limit: usize,
        after: Option<&Cursor>,
    ) -> Result<Page, StoreError> {
        let completed: Option<i64> = match status {
            StatusFilter::Open => Some(0),
            StatusFilter::Completed => Some(1),
            StatusFilter::All => None,
        };
        let (after_at, after_id) = match after {
            Some(c) => (Some(c.created_at.as_str()), Some(c.id.as_str())),
            None => (None, None),
        };
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE owner = ?1 AND (?2 IS NULL OR completed = ?2)
                   AND (?3 IS NULL OR (created_at, id) > (?3, ?4))
                 ORDER BY created_at, id LIMIT ?5"
            ))?;
            let tasks = stmt
                .query_map(
                    params![owner, completed, after_at, after_id, limit as i64 + 1],
                    row_to_task,
                )?
                .collect::<rusqlite::Result<Vec<Task>>>()?;
            Ok(Page::from_rows(tasks, limit))
        })
    }

    fn create(&self, owner: &str, new: &NewTask) -> Result<Task, StoreError> {
        let task = Task::new(owner, new);
        self.write(|conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, 1)"
            ))?
            .execute(params![
                task.id,
                task.owner,
                task.title,
                task.description,
                task.due,
                task.created_at,
                task.updated_at
            ])?;
            Ok(task.clone())
        })
    }

    fn update(
        &self,
        owner: &str,
        id: &str,
        patch: &TaskPatch,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError> {
        let at = now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // One statement: each field either kept or set, the version bumped once; the
            // version predicate is the compare-and-set.
            let updated = tx
                .prepare_cached(&format!(
                    "UPDATE tasks SET
                        title = CASE WHEN ?3 THEN ?4 ELSE title END,
                        description = CASE WHEN ?5 THEN ?6 ELSE description END,
                        due = CASE WHEN ?7 THEN ?8 ELSE due END,
                        completed = CASE WHEN ?9 THEN ?10 ELSE completed END,
                        updated_at = ?11,
                        version = version + 1
                     WHERE id = ?1 AND owner = ?2 AND (?12 IS NULL OR version = ?12)
                     RETURNING {COLUMNS}"
                ))?
                .query_row(
                    params![
                        id,
                        owner,
                        patch.title.is_some(),
                        patch.title,
                        patch.description.is_some(),
                        patch.description.clone().flatten(),
                        patch.due.is_some(),
                        patch.due.clone().flatten(),
                        patch.completed.is_some(),
                        patch.completed.map(i64::from),
                        at,
                        expected_version,
                    ],
                    row_to_task,
                )
                .optional()?;
            let result = match updated {
                Some(task) => Ok(task),
                None => match current_version(&tx, owner, id)? {
                    Some(current) => Err(StoreError::Conflict { current }),
                    None => Err(StoreError::NotFound),
                },
            };
            tx.commit()?;
            result.map_err(Failure::Store)
        })
    }

    fn complete(&self, owner: &str, id: &str) -> Result<(Task, bool), StoreError> {
        let at = now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let updated = tx
                .prepare_cached(&format!(
                    "UPDATE tasks SET completed = 1, updated_at = ?3, version = version + 1
                     WHERE id = ?1 AND owner = ?2 AND completed = 0 RETURNING {COLUMNS}"
                ))?
                .query_row(params![id, owner, at], row_to_task)
                .optional()?;
            let result = match updated {
                Some(task) => Ok((task, true)),
                None => tx
                    .query_row(
                        &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1 AND owner = ?2"),
                        params![id, owner],
                        row_to_task,
                    )
                    .optional()?
                    .map(|t| (t, false))
                    .ok_or(StoreError::NotFound),
            };
            tx.commit()?;
            result.map_err(Failure::Store)
        })
    }

    fn delete(&self, owner: &str, id: &str) -> Result<(), StoreError> {
        self.write(|conn| {
            let n = conn
                .prepare_cached("DELETE FROM tasks WHERE id = ?1 AND owner = ?2")?
                .execute(params![id, owner])?;
            if n == 0 {
                Err(Failure::Store(StoreError::NotFound))
            } else {
                Ok(())
            }
        })
    }
}

impl MemoryStore for SqliteStore {
    fn remember(&self, owner: &str, new: &NewMemory) -> Result<(Memory, bool), StoreError> {
        let at_time = chrono::Utc::now();
        let at = stamp(at_time);
        let expires_at = new.ttl.map(|ttl| expiry(at_time, ttl));
        let tags = serde_json::to_string(&new.tags).unwrap_or_else(|_| "[]".into());
        self.write(|conn| {
            // Expired memories of anyone go here (the partial index finds them cheaply), so
            // they never pile up.
            conn.prepare_cached(
                "DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            )?
            .execute(params![at])?;
            // One upsert: a live memory keeps created_at and bumps version; an expired one
            // is replaced as if new.
            let memory = conn
                .prepare_cached(&format!(
                    "INSERT INTO memories ({MEMORY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 1)
                     ON CONFLICT (owner, key) DO UPDATE SET
                        value = excluded.value,
                        tags = excluded.tags,
                        expires_at = excluded.expires_at,
                        created_at = CASE WHEN memories.expires_at IS NOT NULL
                            AND memories.expires_at <= excluded.updated_at
                            THEN excluded.created_at ELSE memories.created_at END,
                        version = CASE WHEN memories.expires_at IS NOT NULL
                            AND memories.expires_at <= excluded.updated_at
                            THEN 1 ELSE memories.version + 1 END,
                        updated_at = excluded.updated_at
                     RETURNING {MEMORY_COLUMNS}"
                ))?
                .query_row(
                    params![owner, new.key, new.value, tags, at, expires_at],
                    row_to_memory,
                )?;
            let created = memory.version == 1;
            Ok((memory, created))
        })
    }

    fn recall(&self, owner: &str, key: &str) -> Result<Memory, StoreError> {
        let at = now();
        self.with(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {MEMORY_COLUMNS} FROM memories
                 WHERE owner = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)"
            ))?
            .query_row(params![owner, key, at], row_to_memory)
            .optional()?
            .ok_or(Failure::Store(StoreError::NotFound))
        })
    }

    fn search(&self, owner: &str, query: &MemoryQuery) -> Result<Vec<Memory>, StoreError> {
        let at = now();
        let text = query.text.as_deref().map(str::to_ascii_lowercase);
        let tags = serde_json::to_string(&query.tags).unwrap_or_else(|_| "[]".into());
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MEMORY_COLUMNS} FROM memories
                 WHERE owner = ?1 AND (expires_at IS NULL OR expires_at > ?2)
                   AND (?3 IS NULL OR instr(lower(key), ?3) > 0 OR instr(lower(value), ?3) > 0)
                   AND NOT EXISTS (
                       SELECT 1 FROM json_each(?4) AS wanted
                       WHERE wanted.value NOT IN (SELECT value FROM json_each(memories.tags)))
                 ORDER BY updated_at DESC, key LIMIT ?5"
            ))?;
            let found = stmt
                .query_map(
                    params![owner, at, text, tags, query.limit as i64],
                    row_to_memory,
                )?
                .collect::<rusqlite::Result<Vec<Memory>>>()?;
            Ok(found)
        })
    }

    fn forget(&self, owner: &str, key: &str) -> Result<(), StoreError> {
        let at = now();
        self.write(|conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM memories WHERE owner = ?1 AND key = ?2
                     AND (expires_at IS NULL OR expires_at > ?3)",
                )?
                .execute(params![owner, key, at])?;
            // An expired memory is absent: removed here too, but still NotFound.
            conn.prepare_cached(
                "DELETE FROM memories WHERE owner = ?1 AND key = ?2 AND expires_at <= ?3",
            )?
            .execute(params![owner, key, at])?;
            if n == 0 {
                Err(Failure::Store(StoreError::NotFound))
            } else {
                Ok(())
            }
        })
    }
}

#[cfg(test)]
mod gate_tests {
    use super::WriterGate;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn one_turn_at_a_time_and_a_bounded_wait() {
        let gate = Arc::new(WriterGate::new());
        let turn = gate.enter(Duration::from_secs(1)).expect("a free gate");
        let started = Instant::now();
        assert!(gate.enter(Duration::from_millis(50)).is_none(), "taken");
        assert!(started.elapsed() >= Duration::from_millis(50));
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.enter(Duration::from_secs(5)).is_some())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(turn);
        assert!(waiter.join().unwrap(), "handed over when freed");
        assert!(gate.enter(Duration::ZERO).is_some(), "free again");
    }
}
