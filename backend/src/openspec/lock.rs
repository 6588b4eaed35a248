//! A lock shared by every process using the workspace, including replicas on other hosts
//! sharing the volume: a file created with O_EXCL (`create_new`) in `changes/`, holding the
//! holder's pid, host, start time and a random token.
//!
//! A lock left by a crash is taken over when its holder is a dead pid on this same host, or
//! when it is older than [`STALE_AFTER`] (a holder on another host cannot be probed; mutations
//! take milliseconds, so minutes is generous).

use super::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const LOCK_FILE: &str = ".openspec.lock";
pub const STALE_AFTER: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(15);

#[derive(Debug)]
pub struct WorkspaceLock {
    path: PathBuf,
    token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pid: u32,
    host: String,
    created_ms: u64,
    token: String,
}

impl Holder {
    fn parse(s: &str) -> Option<Holder> {
        let mut h = Holder {
            pid: 0,
            host: String::new(),
            created_ms: 0,
            token: String::new(),
        };
        for line in s.lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "pid" => h.pid = v.parse().ok()?,
                "host" => h.host = v.to_string(),
                "created_ms" => h.created_ms = v.parse().ok()?,
                "token" => h.token = v.to_string(),
                _ => {}
            }
        }
        (!h.token.is_empty()).then_some(h)
    }

    fn render(&self) -> String {
        format!(
            "pid={}\nhost={}\ncreated_ms={}\ntoken={}\n",
            self.pid, self.host, self.created_ms, self.token
        )
    }

    fn describe(&self) -> String {
        let age = now_ms().saturating_sub(self.created_ms) / 1000;
        format!("pid {} on host {} ({age}s ago)", self.pid, self.host)
    }
}

impl WorkspaceLock {
    /// Takes the lock in `dir`, waiting up to `wait` for a live holder to release it; after
    /// that, a Conflict naming the holder.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<WorkspaceLock> {
        let path = dir.join(LOCK_FILE);
        let me = Holder {
            pid: std::process::id(),
            host: hostname(),
            created_ms: now_ms(),
            token: uuid::Uuid::new_v4().to_string(),
        };
        let deadline = std::time::Instant::now() + wait;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let me = Holder {
                        created_ms: now_ms(),
                        ..me
                    };
                    let written = file
                        .write_all(me.render().as_bytes())
                        .and_then(|_| file.sync_all());
                    let lock = WorkspaceLock {
                        path: path.clone(),
                        token: me.token,
                    };
                    written.map_err(|e| Error::io("cannot write lock", &path, e))?;
                    return Ok(lock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("cannot create lock", &path, e)),
            }
            // Held: by a live process, or left behind?
            let holder_text = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = Holder::parse(&holder_text);
            if is_stale(&path, holder.as_ref()) {
                take_over(&path, &holder_text);
                continue;
            }
            if std::time::Instant::now() >= deadline {
                let who = holder
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "another process".into());
                return Err(Error::conflict(format!(
                    "the workspace is locked by {who}; another change operation is in progress"
                ))
                .with_hint(format!(
                    "retry shortly; a lock older than {}s is taken over",
                    STALE_AFTER.as_secs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl WorkspaceLock {
    /// The lock file's folder was moved to `new_dir` while held (a restore swapped the
    /// `changes/` folder out): release the lock where it now is.
    pub fn release_moved(mut self, new_dir: &Path) {
        self.path = new_dir.join(LOCK_FILE);
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // Remove only our own lock: if it was taken over as stale, it now belongs to another.
        match std::fs::read_to_string(&self.path) {
            Ok(s) if Holder::parse(&s).is_some_and(|h| h.token == self.token) => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::error!("cannot release lock {}: {e}", self.path.display());
                }
            }
            Ok(_) => log::warn!("lock {} was taken over while held", self.path.display()),
            Err(e) => log::warn!("lock {} vanished while held: {e}", self.path.display()),
        }
    }
}

fn is_stale(path: &Path, holder: Option<&Holder>) -> bool {
    match holder {
        Some(h) => {
            if h.host == hostname() && h.pid != std::process::id() && !pid_alive(h.pid) {
                return true;
            }
            now_ms().saturating_sub(h.created_ms) > STALE_AFTER.as_millis() as u64
        }
        // Empty or garbled: a holder between create and write, or a crash right there. Judge
        // by the file's age.
        None => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER),
    }
}

/// Moves the stale lock aside, then checks it was the one judged stale: if another process
/// took over first and we moved its fresh lock, put that back (hard_link refuses to replace).
fn take_over(path: &Path, judged: &str) {
    static N: AtomicU64 = AtomicU64::new(0);
    let aside = path.with_extension(format!(
        "stale-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::rename(path, &aside).is_err() {
        return; // gone already: someone released or took it over; just retry
    }
    let moved = std::fs::read_to_string(&aside).unwrap_or_default();
    if moved == judged {
        log::warn!(
            "took over stale workspace lock {} ({})",
            path.display(),
            judged.replace('\n', " ")
        );
    } else if let Err(e) = std::fs::hard_link(&aside, path) {
        log::error!(
            "lock {}: moved a fresh lock aside and could not restore it: {e}",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&aside);
}

fn pid_alive(pid: u32) -> bool {
    // Without /proc (not Linux) we cannot tell: assume alive and rely on the age rule.
    !Path::new("/proc/self").exists() || Path::new("/proc").join(pid.to_string()).exists()
}

/// This host's name, as written into lock files (and backup manifests).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_then_released() {
        let dir = tempfile::tempdir().unwrap();
        let a = WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let err = WorkspaceLock::acquire(dir.path(), Duration::from_millis(30)).unwrap_err();
        assert_eq!(err.kind, super::super::ErrorKind::Conflict);
        assert!(
            err.message.contains(&format!("pid {}", std::process::id())),
            "{}",
            err.message
        );
        drop(a);
        assert!(!dir.path().join(LOCK_FILE).exists());
        WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn dead_holder_on_this_host_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let dead = Holder {
            pid: u32::MAX - 7,
            host: hostname(),
            created_ms: now_ms(),
            token: "t".into(),
        };
        std::fs::write(dir.path().join(LOCK_FILE), dead.render()).unwrap();
        WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn live_holder_on_other_host_is_respected_until_old() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = Holder {
            pid: 1,
            host: "elsewhere".into(),
            created_ms: now_ms(),
            token: "t".into(),
        };
        std::fs::write(dir.path().join(LOCK_FILE), fresh.render()).unwrap();
        assert!(WorkspaceLock::acquire(dir.path(), Duration::ZERO).is_err());
        let old = Holder {
            created_ms: now_ms() - STALE_AFTER.as_millis() as u64 - 1000,
            ..fresh
        };
        std::fs::write(dir.path().join(LOCK_FILE), old.render()).unwrap();
        WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }
}
