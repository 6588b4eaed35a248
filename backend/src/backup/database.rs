//! The item store's SQLite database in backups: `backend backup` takes a consistent copy with
//! SQLite's online backup API (the replicas keep writing meanwhile; WAL readers never wait),
//! stores it as the member `database/store.sqlite3` and lists it in the manifest's `database`;
//! `backend restore` checks the staged copy (`PRAGMA integrity_check`, a schema this backend
//! knows) and then writes it into the live database through the same API, which takes the
//! database's write lock and replaces every page in one transaction, so running replicas see
//! the old data or the new, never a mix, and keep their connections.
//!
//! A PostgreSQL store (DATABASE_URL) is not in the archive: back it up with `pg_dump`.

use super::Failure;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The archive member holding the database.
pub const MEMBER: &str = "database/store.sqlite3";

/// Where the database is, as the server reads it (DATABASE_PATH, else
/// `<WORKING_DIRECTORY>/.mcp/store.sqlite3`), or `None` with DATABASE_URL set.
pub struct Target {
    pub path: PathBuf,
    pub postgres: bool,
}

impl Target {
    pub fn from_env(wd: &Path) -> Target {
        let get = |name: &str| std::env::var(name).ok();
        Target {
            path: crate::config::database_path_from(get, wd),
            postgres: get("DATABASE_URL").is_some_and(|v| !v.trim().is_empty()),
        }
    }
}

/// Runs a backup API copy from `src` to `dst` in one step, retrying while the source or the
/// destination is locked by another connection, up to `wait`.
fn copy(src: &Connection, dst: &mut Connection, wait: Duration, what: &str) -> Result<(), String> {
    let backup = rusqlite::backup::Backup::new(src, dst).map_err(|e| format!("{what}: {e}"))?;
    let started = Instant::now();
    loop {
        match backup.step(-1) {
            Ok(rusqlite::backup::StepResult::Done) => return Ok(()),
            Ok(rusqlite::backup::StepResult::More) => continue,
            Ok(_) if started.elapsed() < wait => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) => {
                return Err(format!(
                    "{what}: the database stayed locked for {} s",
                    wait.as_secs()
                ))
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// A consistent copy of the live database at `db` into `snapshot` (created, mode 0600), or
/// `Ok(false)` when there is no database file (no store was ever used).
pub fn snapshot(db: &Path, snapshot: &Path, wait: Duration) -> Result<bool, Failure> {
    if !db.exists() {
        return Ok(false);
    }
    let fail = |e: String| Failure::new(format!("database {}: {e}", db.display()));
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(format!("cannot open: {e}")))?;
    let _ = src.busy_timeout(wait);
    let _ = std::fs::remove_file(snapshot);
    create_private(snapshot)
        .map_err(|e| fail(format!("cannot create {}: {e}", snapshot.display())))?;
    let mut dst = Connection::open(snapshot)
        .map_err(|e| fail(format!("cannot open {}: {e}", snapshot.display())))?;
    copy(&src, &mut dst, wait, "online backup").map_err(fail)?;
    // A self-contained file: no WAL beside it.
    dst.execute_batch("PRAGMA journal_mode = DELETE")
        .map_err(|e| fail(format!("cannot finish the copy: {e}")))?;
    Ok(true)
}

fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// The staged copy must be an intact SQLite database of this backend's item store.
pub fn check_staged(staged: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(staged, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{MEMBER}: not a SQLite database: {e}"))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("{MEMBER}: not a SQLite database: {e}"))?;
    if verdict != "ok" {
        return Err(format!("{MEMBER}: integrity check failed: {verdict}"));
    }
    let version: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(|e| format!("{MEMBER}: not an item store database: {e}"))?;
    let known = crate::store::sqlite::MIGRATION_COUNT as i64;
    if version > known {
        return Err(format!(
            "{MEMBER}: schema version {version} is newer than this backend knows ({known})"
        ));
    }
    Ok(())
}

/// Replaces the live database at `db` with the staged copy (created when absent), in one
/// transaction of the backup API; running replicas migrate it forward at their next call if
/// it is older.
pub fn restore_into(db: &Path, staged: &Path, wait: Duration) -> Result<(), String> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let src = Connection::open_with_flags(staged, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{MEMBER}: {e}"))?;
    let mut dst = Connection::open(db).map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let _ = dst.busy_timeout(wait);
    copy(&src, &mut dst, wait, &format!("restoring {}", db.display()))?;
    // The copy carries the snapshot's journal mode; the replicas share the file in WAL.
    dst.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(|e| format!("{}: {e}", db.display()))?;
    Ok(())
}
