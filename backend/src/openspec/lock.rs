//! A lock shared by every process using the workspace, including replicas on other hosts
//! sharing the volume: a file `changes/.openspec.lock` created with O_EXCL (`create_new`),
//! holding its owner (host, pid, process start time), a random token and a lease.
//!
//! The lease: the holder writes `renewed_ms` (wall clock, ms since the epoch) and `lease_ms`;
//! a thread renews it every [`LEASE`]/3 while the lock is held, so even a long archive keeps
//! it. A lock is taken over (stale) when
//! - it is empty or garbled and its file is older than [`UNREADABLE_GRACE`] (a writer sits
//!   between create and write for microseconds; a crash there leaves an empty file);
//! - its holder is on this host and its pid is dead, or alive with another start time than
//!   recorded (`/proc/<pid>/stat` field 22: the pid was reused, e.g. pid 1 in a restarted
//!   container);
//! - its lease expired (`renewed_ms + lease_ms` is past), whatever the host.
//!
//! A live holder with a valid lease is never robbed. Leases compare wall clocks of different
//! hosts: they assume clocks agree within a few seconds (NTP), far less than the 30 s lease.
//!
//! Takeover is serialised by a guard file (`.openspec.stale-guard`, O_EXCL): under it the
//! contender re-reads and re-judges the lock, renames it to a unique name, checks the moved
//! content is what it judged, and removes it; the lock is then won by O_EXCL create as usual.
//! Two contenders judging the same stale lock therefore never move each other's fresh lock.
//!
//! Taking the lock also finishes an archive a crash interrupted (see `recovery`).

use super::{fsio, recovery, Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const LOCK_FILE: &str = ".openspec.lock";
/// Serialises takeovers; the `.openspec.stale-` prefix keeps it out of backups.
const GUARD_FILE: &str = ".openspec.stale-guard";
/// How long a holder's lease lasts without renewal; renewed every third of it.
pub const LEASE: Duration = Duration::from_secs(30);
/// An unreadable (empty, garbled) lock younger than this may be a writer between create and
/// write, and is left alone.
pub const UNREADABLE_GRACE: Duration = Duration::from_secs(2);
/// A guard left by a crash in the middle of a takeover is removed after this.
const GUARD_STALE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(15);

#[derive(Debug)]
pub struct WorkspaceLock {
    path: PathBuf,
    token: String,
    renewer: Option<(mpsc::Sender<PathBuf>, std::thread::JoinHandle<()>)>,
}

/// The content of a lock file: `key=value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Start time of the process in clock ticks since boot (0 when unknown).
    pub start: u64,
    pub created_ms: u64,
    pub renewed_ms: u64,
    pub lease_ms: u64,
    pub token: String,
}

impl Holder {
    /// This process, now.
    pub fn me() -> Holder {
        let now = now_ms();
        Holder {
            pid: std::process::id(),
            host: hostname(),
            start: process_start(std::process::id()).unwrap_or(0),
            created_ms: now,
            renewed_ms: now,
            lease_ms: LEASE.as_millis() as u64,
            token: uuid::Uuid::new_v4().to_string(),
        }
    }

    pub fn parse(s: &str) -> Option<Holder> {
        let mut h = Holder {
            pid: 0,
            host: String::new(),
            start: 0,
            created_ms: 0,
            renewed_ms: 0,
            lease_ms: 0,
            token: String::new(),
        };
        for line in s.lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "pid" => h.pid = v.parse().ok()?,
                "host" => h.host = v.to_string(),
                "start" => h.start = v.parse().ok()?,
                "created_ms" => h.created_ms = v.parse().ok()?,
                "renewed_ms" => h.renewed_ms = v.parse().ok()?,
                "lease_ms" => h.lease_ms = v.parse().ok()?,
                "token" => h.token = v.to_string(),
                _ => {}
            }
        }
        if h.token.is_empty() || h.pid == 0 || h.host.is_empty() {
            return None;
        }
        // A lock written before leases existed: its creation time starts the lease.
        if h.renewed_ms == 0 {
            h.renewed_ms = h.created_ms;
        }
        if h.lease_ms == 0 {
            h.lease_ms = LEASE.as_millis() as u64;
        }
        Some(h)
    }

    pub fn render(&self) -> String {
        format!(
            "pid={}\nhost={}\nstart={}\ncreated_ms={}\nrenewed_ms={}\nlease_ms={}\ntoken={}\n",
            self.pid,
            self.host,
            self.start,
            self.created_ms,
            self.renewed_ms,
            self.lease_ms,
            self.token
        )
    }

    fn describe(&self) -> String {
        let age = now_ms().saturating_sub(self.created_ms) / 1000;
        let left = (self.renewed_ms + self.lease_ms).saturating_sub(now_ms()) / 1000;
        format!(
            "pid {} on host {} (taken {age}s ago, lease valid {left}s more)",
            self.pid,
            crate::bounded::bounded(&self.host)
        )
    }

    /// Why this holder no longer holds the lock, or `None` while it does.
    fn stale_reason(&self) -> Option<String> {
        let now = now_ms();
        if now > self.renewed_ms.saturating_add(self.lease_ms) {
            return Some(format!(
                "lease expired {}s ago",
                (now - self.renewed_ms - self.lease_ms) / 1000
            ));
        }
        if self.host != hostname() || !Path::new("/proc/self/stat").exists() {
            return None; // cannot probe another host's (or a /proc-less) process table
        }
        match process_start(self.pid) {
            None => Some(format!("pid {} is not running", self.pid)),
            Some(start) if self.start != 0 && start != self.start => Some(format!(
                "pid {} is another process now (started at tick {start}, not {})",
                self.pid, self.start
            )),
            Some(_) => None,
        }
    }
}

impl WorkspaceLock {
    /// Takes the lock in `dir` (a `changes/` folder), waiting up to `wait` for a live
    /// holder to release it; after that, a Conflict naming the holder. Once taken, an
    /// archive a crash interrupted is finished or undone before returning.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<WorkspaceLock> {
        let lock = Self::acquire_plain(dir, wait)?;
        recovery::recover(dir)?;
        Ok(lock)
    }

    /// The lock alone, without recovery.
    pub fn acquire_plain(dir: &Path, wait: Duration) -> Result<WorkspaceLock> {
        let path = dir.join(LOCK_FILE);
        let deadline = std::time::Instant::now() + wait;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let me = Holder::me();
                    let written = file
                        .write_all(me.render().as_bytes())
                        .and_then(|_| file.sync_all());
                    let mut lock = WorkspaceLock {
                        path: path.clone(),
                        token: me.token.clone(),
                        renewer: None,
                    };
                    written.map_err(|e| Error::io("cannot write lock", &path, e))?;
                    lock.renewer = Some(spawn_renewer(path.clone(), me));
                    return Ok(lock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("cannot create lock", &path, e)),
            }
            let holder_text = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = Holder::parse(&holder_text);
            if judge(&path, &holder_text).is_some() {
                take_over(dir, &path);
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
                    "retry shortly; a lock whose holder died or whose {}s lease expired is \
                     taken over",
                    LEASE.as_secs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The lock file's folder was moved to `new_dir` while held (a restore swapped the
    /// `changes/` folder out): renew and release the lock where it now is.
    pub fn release_moved(mut self, new_dir: &Path) {
        self.path = new_dir.join(LOCK_FILE);
        if let Some((tx, _)) = &self.renewer {
            let _ = tx.send(self.path.clone());
        }
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // Stop renewing first, so the file is not rewritten after removal.
        if let Some((tx, handle)) = self.renewer.take() {
            drop(tx);
            let _ = handle.join();
        }
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

/// Renews the lease every third of it until the sender is dropped; a path sent means the
/// lock moved there.
fn spawn_renewer(
    path: PathBuf,
    mut me: Holder,
) -> (mpsc::Sender<PathBuf>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let handle = std::thread::spawn(move || {
        let mut path = path;
        loop {
            match rx.recv_timeout(LEASE / 3) {
                Ok(moved) => path = moved,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let ours = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| Holder::parse(&s))
                .is_some_and(|h| h.token == me.token);
            if !ours {
                return; // released, moved away or taken over: nothing to renew
            }
            me.renewed_ms = now_ms();
            if let Err(e) = fsio::atomic_write(&path, me.render().as_bytes()) {
                log::error!("cannot renew lock {}: {e}", path.display());
            }
        }
    });
    (tx, handle)
}

/// Why the lock whose content is `text` is stale, or `None` when it is held.
fn judge(path: &Path, text: &str) -> Option<String> {
    match Holder::parse(text) {
        Some(h) => h
            .stale_reason()
            .map(|why| format!("{}: {why}", h.describe())),
        None => {
            let age = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())?;
            (age > UNREADABLE_GRACE).then(|| {
                format!(
                    "unreadable lock ({} bytes, {}s old)",
                    text.len(),
                    age.as_secs()
                )
            })
        }
    }
}

/// Removes the stale lock at `path` under the takeover guard; the caller then competes for
/// the lock by O_EXCL create. Any failure just means "retry".
fn take_over(dir: &Path, path: &Path) {
    let guard = dir.join(GUARD_FILE);
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&guard)
        .is_err()
    {
        // Another contender is taking over right now, or one crashed doing so.
        let old = std::fs::metadata(&guard)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > GUARD_STALE);
        if old {
            let _ = std::fs::remove_file(&guard);
        }
        return;
    }
    // Under the guard: judge again (another contender may have won in the meantime).
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if let Some(why) = judge(path, &text) {
        static N: AtomicU64 = AtomicU64::new(0);
        let aside = dir.join(format!(
            ".openspec.stale-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::rename(path, &aside).is_ok() {
            let moved = std::fs::read_to_string(&aside).unwrap_or_default();
            if moved == text {
                log::warn!(
                    "took over stale workspace lock {}: {}",
                    path.display(),
                    crate::bounded::bounded(&why)
                );
                recovery::request_sweep();
            } else if let Err(e) = std::fs::hard_link(&aside, path) {
                // The holder renewed between our read and the rename: it was alive.
                log::error!(
                    "lock {}: moved a renewed lock aside and could not restore it: {e}",
                    path.display()
                );
            }
            let _ = std::fs::remove_file(&aside);
        }
    }
    let _ = std::fs::remove_file(&guard);
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks after boot); `None` when the
/// process does not exist or there is no /proc.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "lock_tests.rs"]
mod tests;
