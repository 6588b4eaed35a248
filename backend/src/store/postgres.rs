//! [`Store`] (tasks and memories) on PostgreSQL (`DATABASE_URL`): one database shared by
//! replicas on many hosts. Same semantics as [`super::sqlite`], statement for statement.
//!
//! - The trait is synchronous; the store owns a small tokio runtime (one worker, `pg-store`)
//!   that drives its connections, and each call blocks its (blocking-pool) thread on it.
//! - At most `DATABASE_POOL_SIZE` connections; waiting for a free one, connecting, and every
//!   statement are each bounded by `DATABASE_TIMEOUT_MS` (also the server's
//!   `statement_timeout`), and then the call is `Unavailable`. A connection whose call failed,
//!   or that the server closed, is dropped; the next call connects again, so a database that
//!   comes back is used again without a restart. A pooled connection that died silently (no
//!   FIN) costs its next call one timeout.
//! - TLS as libpq's `sslmode`: `disable`, `prefer` (the default: TLS when the server offers
//!   it) and `require`. Like libpq's `require`, the certificate is not verified (encryption,
//!   not authentication of the server).
//! - Migrations numbered in `schema_version`, applied in one transaction under an advisory
//!   lock ([`MIGRATION_LOCK`]) so replicas starting together apply each once.
//! - Text columns are `COLLATE "C"`: ordering is by bytes as in SQLite, and `lower()` changes
//!   ASCII letters only, as SQLite's does. Timestamps are the same fixed-width RFC 3339 text.
//! - PostgreSQL text cannot hold U+0000 (the tools refuse it in input): should one reach the
//!   store, it is refused (`Unavailable`, saying so) before any round trip; as a lookup key it
//!   finds nothing.
//!
//! Connections and the pool are in `pool`, the schema and statements in `sql`.

use super::{
    expiry, now, stamp, Cursor, Memory, MemoryQuery, MemoryStore, NewMemory, NewTask, Page,
    StatusFilter, Store, StoreError, Task, TaskPatch, TaskStore,
};
use pool::{tls_connector, why, Conn, Failure};
use postgres_openssl::MakeTlsConnector;
use sql::{
    CHECK, COMPLETE, CREATE, DELETE, FORGET, GET, LIST, PURGE, RECALL, REMEMBER, SEARCH, UPDATE,
    VERSION,
};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Semaphore;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Config, Row};

mod pool;
mod sql;

pub use sql::MIGRATION_LOCK;

pub struct PostgresStore {
    /// Owns the runtime (taken in `drop`); calls go through `handle`.
    rt: Option<Runtime>,
    handle: Handle,
    config: Config,
    /// `None` with `sslmode=disable`.
    tls: Option<MakeTlsConnector>,
    /// `postgres://user@host:port/db`, no password.
    name: String,
    /// The URL's password as written, scrubbed from messages just in case.
    secret: Option<String>,
    timeout: Duration,
    pool_size: usize,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
    migrated: AtomicBool,
}

impl PostgresStore {
    /// Parses the URL and starts the runtime; does not connect ([`Store::check`], called at
    /// start-up, connects and migrates). Errors never contain the password.
    pub fn new(url: &str, pool_size: usize, timeout: Duration) -> Result<PostgresStore, String> {
        let secret = url_password(url);
        let scrub = |e: String| scrub(e, secret.as_deref());
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            scrub(format!(
                "not a PostgreSQL URL (postgres://user:password@host:port/db\
                 [?sslmode=disable|prefer|require]): {e}"
            ))
        })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err("no host: write postgres://user:password@host:port/db".into());
        }
        config
            .connect_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("mcp-backend");
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(tls_connector().map_err(|e| format!("TLS set-up: {e}"))?),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("pg-store")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start its runtime: {e}"))?;
        let pool_size = pool_size.max(1);
        Ok(PostgresStore {
            handle: rt.handle().clone(),
            rt: Some(rt),
            name: describe(&config),
            config,
            tls,
            secret,
            timeout,
            pool_size,
            permits: Arc::new(Semaphore::new(pool_size)),
            idle: Mutex::new(Vec::new()),
            migrated: AtomicBool::new(false),
        })
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(scrub(
            format!("task/memory database {}: {why}", self.name),
            self.secret.as_deref(),
        ))
    }
}

/// `postgres://user@host:port,host2:port/db`: what the URL names, without the password.
fn describe(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            Host::Unix(path) => format!("{}:{}", path.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", port(i)),
                std::net::IpAddr::V4(a) => format!("{a}:{}", port(i)),
            })
            .collect();
    }
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// The password part of a URL (`scheme://user:password@...`), raw as written.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let creds = authority.rsplit_once('@')?.0;
    let password = creds.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_string())
}

fn scrub(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if text.contains(s) => text.replace(s, "***"),
        _ => text,
    }
}

fn task(r: &Row) -> Result<Task, tokio_postgres::Error> {
    Ok(Task {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        title: r.try_get(2)?,
        description: r.try_get(3)?,
        due: r.try_get(4)?,
        completed: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        version: r.try_get(8)?,
    })
}

fn memory(r: &Row) -> Result<Memory, tokio_postgres::Error> {
    Ok(Memory {
        owner: r.try_get(0)?,
        key: r.try_get(1)?,
        value: r.try_get(2)?,
        tags: r.try_get(3)?,
        created_at: r.try_get(4)?,
        updated_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        version: r.try_get(7)?,
    })
}

fn read<T>(r: Result<T, tokio_postgres::Error>) -> Result<T, Failure> {
    r.map_err(|e| Failure::Db(why(&e)))
}

/// PostgreSQL text cannot hold U+0000.
fn has_nul<'a>(texts: impl IntoIterator<Item = &'a str>) -> bool {
    texts.into_iter().any(|t| t.contains('\0'))
}

fn nul_refused(what: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "{what} contains U+0000, which PostgreSQL text cannot hold"
    ))
}

impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn check(&self) -> Result<(), StoreError> {
        self.with(|s| {
            s.query(CHECK, &[])?;
            Ok(())
        })
    }
}

impl TaskStore for PostgresStore {
    fn list(
        &self,
        owner: &str,
        status: StatusFilter,
        limit: usize,
        after: Option<&Cursor>,
    ) -> Result<Page, StoreError> {
        let completed: Option<bool> = match status {
            StatusFilter::Open => Some(false),
            StatusFilter::Completed => Some(true),
            StatusFilter::All => None,
        };
        let (after_at, after_id) = match after {
            Some(c) => (Some(c.created_at.as_str()), Some(c.id.as_str())),
            None => (None, None),
        };
        if has_nul([owner].into_iter().chain(after_at)) {
            return Ok(Page {
                tasks: Vec::new(),
                next_cursor: None,
            });
        }
        let limit_plus_one = limit as i64 + 1;
        self.with(|s| {
            let rows = s.query(
                LIST,
                &[&owner, &completed, &after_at, &after_id, &limit_plus_one],
            )?;
            let tasks = read(rows.iter().map(task).collect::<Result<Vec<Task>, _>>())?;
            Ok(Page::from_rows(tasks, limit))
        })
    }

    fn create(&self, owner: &str, new: &NewTask) -> Result<Task, StoreError> {
        let task = Task::new(owner, new);
        let texts = [owner, task.title.as_str()].into_iter();
        if has_nul(
            texts
                .chain(task.description.as_deref())
                .chain(task.due.as_deref()),
        ) {
            return Err(nul_refused("the task"));
        }
        self.with(|s| {
            s.execute(
                CREATE,
                &[
                    &task.id,
                    &task.owner,
                    &task.title,
                    &task.description,
                    &task.due,
                    &task.created_at,
                    &task.updated_at,
                ],
            )?;
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
        if has_nul([owner, id]) {
            return Err(StoreError::NotFound);
        }
        let description = patch.description.clone().flatten();
        let due = patch.due.clone().flatten();
        let texts = [
            patch.title.as_deref(),
            description.as_deref(),
            due.as_deref(),
        ];
        if has_nul(texts.into_iter().flatten()) {
            return Err(nul_refused("the change"));
        }
        let at = now();
        let completed = patch.completed;
        self.with(|s| {
            let updated = s.query_opt(
                UPDATE,
                &[
                    &id,
                    &owner,
                    &patch.title.is_some(),
                    &patch.title,
                    &patch.description.is_some(),
                    &description,
                    &patch.due.is_some(),
                    &due,
                    &completed.is_some(),
                    &completed,
                    &at,
                    &expected_version,
                ],
            )?;
            if let Some(row) = updated {
                return read(task(&row));
            }
            // Not updated: gone, or (a fresh snapshot) at another version.
            match s.query_opt(VERSION, &[&id, &owner])? {
                Some(row) => Err(Failure::Store(StoreError::Conflict {
                    current: read(row.try_get(0))?,
                })),
                None => Err(Failure::Store(StoreError::NotFound)),
            }
        })
    }

    fn complete(&self, owner: &str, id: &str) -> Result<(Task, bool), StoreError> {
        if has_nul([owner, id]) {
            return Err(StoreError::NotFound);
        }
        let at = now();
        self.with(|s| {
            if let Some(row) = s.query_opt(COMPLETE, &[&id, &owner, &at])? {
                return Ok((read(task(&row))?, true));
            }
            match s.query_opt(GET, &[&id, &owner])? {
                Some(row) => Ok((read(task(&row))?, false)),
                None => Err(Failure::Store(StoreError::NotFound)),
            }
        })
    }

    fn delete(&self, owner: &str, id: &str) -> Result<(), StoreError> {
        if has_nul([owner, id]) {
            return Err(StoreError::NotFound);
        }
        self.with(|s| match s.execute(DELETE, &[&id, &owner])? {
            0 => Err(Failure::Store(StoreError::NotFound)),
            _ => Ok(()),
        })
    }
}

impl MemoryStore for PostgresStore {
    fn remember(&self, owner: &str, new: &NewMemory) -> Result<(Memory, bool), StoreError> {
        let texts = [owner, new.key.as_str(), new.value.as_str()];
        if has_nul(texts.into_iter().chain(new.tags.iter().map(String::as_str))) {
            return Err(nul_refused("the memory"));
        }
        let at_time = chrono::Utc::now();
        let at = stamp(at_time);
        let expires_at = new.ttl.map(|ttl| expiry(at_time, ttl));
        self.with(|s| {
            s.execute(PURGE, &[&at])?;
            let row = s
                .query_opt(
                    REMEMBER,
                    &[&owner, &new.key, &new.value, &new.tags, &at, &expires_at],
                )?
                .ok_or_else(|| Failure::Db("the upsert returned no row".into()))?;
            let memory = read(memory(&row))?;
            let created = memory.version == 1;
            Ok((memory, created))
        })
    }

    fn recall(&self, owner: &str, key: &str) -> Result<Memory, StoreError> {
        if has_nul([owner, key]) {
            return Err(StoreError::NotFound);
        }
        let at = now();
        self.with(|s| match s.query_opt(RECALL, &[&owner, &key, &at])? {
            Some(row) => read(memory(&row)),
            None => Err(Failure::Store(StoreError::NotFound)),
        })
    }

    fn search(&self, owner: &str, query: &MemoryQuery) -> Result<Vec<Memory>, StoreError> {
        let text = query.text.as_deref().map(str::to_ascii_lowercase);
        let wanted = [owner].into_iter().chain(text.as_deref());
        if has_nul(wanted.chain(query.tags.iter().map(String::as_str))) {
            return Ok(Vec::new());
        }
        let at = now();
        let limit = query.limit as i64;
        self.with(|s| {
            let rows = s.query(SEARCH, &[&owner, &at, &text, &query.tags, &limit])?;
            read(rows.iter().map(memory).collect())
        })
    }

    fn forget(&self, owner: &str, key: &str) -> Result<(), StoreError> {
        if has_nul([owner, key]) {
            return Err(StoreError::NotFound);
        }
        let at = now();
        self.with(|s| match s.query_opt(FORGET, &[&owner, &key, &at])? {
            Some(row) if read(row.try_get::<_, bool>(0))? => Ok(()),
            _ => Err(Failure::Store(StoreError::NotFound)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_without_the_password() {
        let url = "postgres://mcp:s3cr%3At@db.example:6543/items?sslmode=disable";
        let s = PostgresStore::new(url, 2, Duration::from_millis(100)).unwrap();
        assert_eq!(s.describe(), "postgres://mcp@db.example:6543/items");
        let s = PostgresStore::new("postgresql://u@[::1]/d", 1, Duration::from_secs(1)).unwrap();
        assert_eq!(s.describe(), "postgres://u@[::1]:5432/d");
        let e = PostgresStore::new(
            "postgres://mcp:hunter2@h/db?sslmode=verify-full",
            1,
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(!e.contains("hunter2") && e.contains("sslmode"), "{e}");
        assert!(PostgresStore::new("postgres:///db", 1, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn an_unreachable_server_is_unavailable_quickly_and_drops_cleanly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://mcp:hunter2@127.0.0.1:{port}/mcp?sslmode=disable");
        let s = PostgresStore::new(&url, 2, Duration::from_millis(500)).unwrap();
        let started = std::time::Instant::now();
        match s.check() {
            Err(StoreError::Unavailable(why)) => {
                assert!(
                    why.starts_with(&format!(
                        "task/memory database postgres://mcp@127.0.0.1:{port}/mcp: "
                    )),
                    "{why}"
                );
                assert!(!why.contains("hunter2"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(s.recall("a", "k\0"), Err(StoreError::NotFound));
        // Dropped inside another runtime: no panic.
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move { drop(s) });
    }
}
