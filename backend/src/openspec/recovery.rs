//! Crash safety of `change.archive`: the intent record, rolling an interrupted archive
//! forward or back, and removing temp files a crash left behind.
//!
//! An archive first writes every rebuilt spec to a temp file beside its target (fsynced),
//! then commits by writing `changes/.archive-intent.json` atomically (temp, fsync, rename,
//! fsync of the folder), then renames each temp onto its spec, moves the change folder to
//! `changes/archive/`, and removes the record. Paths in the record are relative to the
//! `openspec/` folder.
//!
//! Whoever next takes the workspace lock (and the backend at start-up) reads the record:
//! - every entry's temp file present with the recorded hash, or already renamed (its target
//!   holds the recorded hash): roll forward — redo the remaining renames and the move;
//! - some temp missing or damaged before its rename while no rename happened yet: undo —
//!   delete the remaining temps and the record; the workspace is entirely old;
//! - anything else (renamed and lost entries mixed: the files were changed by hand) is an
//!   error naming the files, and writes stay refused until someone repairs them.
//!
//! Kill points: before the record exists, nothing was renamed (the temps are strays, removed
//! by the sweep); the record is atomic, so it is absent or whole; from then on every state is
//! finished by the roll-forward, which is idempotent.

use super::{fsio, paths, Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub const INTENT_FILE: &str = ".archive-intent.json";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Intent {
    pub version: u32,
    pub op: String,
    pub slug: String,
    pub host: String,
    pub pid: u32,
    pub created_ms: u64,
    pub specs: Vec<SpecWrite>,
    /// Capability folders this archive created (removed again by an undo when empty).
    pub created_dirs: Vec<String>,
    #[serde(rename = "move")]
    pub change_move: Move,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpecWrite {
    pub target: String,
    pub temp: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Set at server start-up and when a stale lock was taken over (its holder may have crashed
/// mid-write; a `backend backup` alone does not sweep): the next
/// recovery also sweeps stray temp files.
static SWEEP: AtomicBool = AtomicBool::new(false);

pub fn request_sweep() {
    SWEEP.store(true, Ordering::SeqCst);
}

/// At start-up: take the lock briefly, which finishes an interrupted archive and sweeps
/// strays. A failure is logged, not fatal: the next write retries the same recovery.
pub fn at_start(ws: &super::Workspace) {
    let changes = ws.changes_dir();
    if !changes.is_dir() {
        return;
    }
    request_sweep();
    match super::lock::WorkspaceLock::acquire(&changes, std::time::Duration::from_secs(2)) {
        Ok(lock) => drop(lock),
        Err(e) => log::warn!("start-up recovery skipped: {e}"),
    }
}

/// Before a read: when an intent record exists (an archive running now, or interrupted),
/// take the lock briefly so the read sees the archive entirely done or not at all. A holder
/// that keeps the lock longer is left alone: the read goes ahead.
pub fn settle(ws: &super::Workspace) {
    let changes = ws.changes_dir();
    if !changes.join(INTENT_FILE).exists() {
        return;
    }
    match super::lock::WorkspaceLock::acquire(&changes, std::time::Duration::from_millis(500)) {
        Ok(lock) => drop(lock),
        Err(e) => log::debug!("read without settling the archive record: {e}"),
    }
}

/// Writes the record: the commit point of an archive.
pub fn write_intent(changes_dir: &Path, intent: &Intent) -> Result<()> {
    let text = serde_json::to_vec_pretty(intent)
        .map_err(|e| Error::invalid(format!("cannot encode the archive intent: {e}")))?;
    fsio::atomic_write(&changes_dir.join(INTENT_FILE), &text)
}

/// Called with the workspace lock held, `changes_dir` being `openspec/changes`.
pub fn recover(changes_dir: &Path) -> Result<()> {
    let Some(root) = changes_dir.parent() else {
        return Ok(());
    };
    let intent_path = changes_dir.join(INTENT_FILE);
    let found = match fsio::read_optional(&intent_path)? {
        None => None,
        Some(text) => Some(serde_json::from_str::<Intent>(&text).map_err(|e| {
            Error::invalid(format!(
                "{}: unreadable archive intent record: {e}",
                intent_path.display()
            ))
            .with_hint("an interrupted archive cannot be finished; inspect and remove the file")
        })?),
    };
    if let Some(intent) = &found {
        finish(root, intent)?;
    }
    if found.is_some() || SWEEP.swap(false, Ordering::SeqCst) {
        sweep(root);
    }
    Ok(())
}

enum State {
    Pending,
    Done,
    Lost,
}

/// Rolls `intent` forward or back (see the module docs).
fn finish(root: &Path, intent: &Intent) -> Result<()> {
    let mut states = Vec::with_capacity(intent.specs.len());
    for s in &intent.specs {
        let temp = inside(root, &s.temp)?;
        let target = inside(root, &s.target)?;
        let state = match std::fs::read(&temp) {
            Ok(data) if sha256_hex(&data) == s.sha256 => State::Pending,
            Ok(_) => State::Lost,
            Err(_) => match std::fs::read(&target) {
                Ok(data) if sha256_hex(&data) == s.sha256 => State::Done,
                _ => State::Lost,
            },
        };
        states.push(state);
    }
    let lost: Vec<&str> = intent
        .specs
        .iter()
        .zip(&states)
        .filter(|(_, st)| matches!(st, State::Lost))
        .map(|(s, _)| s.target.as_str())
        .collect();
    let any_done = states.iter().any(|s| matches!(s, State::Done));
    let moved = !inside(root, &intent.change_move.from)?.exists()
        && inside(root, &intent.change_move.to)?.exists();
    if lost.is_empty() {
        log::warn!(
            "finishing the interrupted archive of {} (pid {} on {})",
            crate::bounded::bounded(&intent.slug),
            intent.pid,
            crate::bounded::bounded(&intent.host)
        );
        return roll_forward(root, intent, &|_, _| {});
    }
    if !any_done && !moved {
        log::warn!(
            "undoing the interrupted archive of {}: the new content of {} is missing",
            crate::bounded::bounded(&intent.slug),
            lost.join(", ")
        );
        return undo(root, intent);
    }
    Err(Error::invalid(format!(
        "an interrupted archive of {} cannot be finished or undone: {} hold neither the old \
         nor the new content recorded in changes/{INTENT_FILE}",
        intent.slug,
        lost.join(", ")
    ))
    .with_hint("repair those specs by hand (or restore a backup), then remove the record"))
}

/// Renames the remaining temps, moves the change, removes the record. Idempotent: each step
/// checks whether it already happened. `applied(i, capability target)` after each rename.
pub fn roll_forward(root: &Path, intent: &Intent, applied: &dyn Fn(usize, &str)) -> Result<()> {
    for (i, s) in intent.specs.iter().enumerate() {
        let temp = inside(root, &s.temp)?;
        let target = inside(root, &s.target)?;
        if temp.exists() {
            std::fs::rename(&temp, &target)
                .map_err(|e| Error::io("cannot rename onto", &target, e))?;
            if let Some(dir) = target.parent() {
                fsio::sync_dir(dir)?;
            }
        }
        applied(i, &s.target);
    }
    let from = inside(root, &intent.change_move.from)?;
    let to = inside(root, &intent.change_move.to)?;
    if std::fs::symlink_metadata(&from).is_ok() {
        if to.exists() {
            return Err(Error::conflict(format!(
                "{} and {} both exist; the change must be in one place",
                intent.change_move.from, intent.change_move.to
            )));
        }
        let archive_dir = to
            .parent()
            .ok_or_else(|| Error::invalid(format!("{}: no parent", intent.change_move.to)))?;
        std::fs::create_dir_all(archive_dir)
            .map_err(|e| Error::io("cannot create", archive_dir, e))?;
        std::fs::rename(&from, &to).map_err(|e| Error::io("cannot move the change to", &to, e))?;
        fsio::sync_dir(archive_dir)?;
    }
    let changes_dir = root.join("changes");
    remove_if_present(&changes_dir.join(INTENT_FILE))?;
    fsio::sync_dir(&changes_dir)
}

fn undo(root: &Path, intent: &Intent) -> Result<()> {
    for s in &intent.specs {
        remove_if_present(&inside(root, &s.temp)?)?;
    }
    for d in intent.created_dirs.iter().rev() {
        // Only when empty: a folder someone filled meanwhile stays.
        let _ = std::fs::remove_dir(inside(root, d)?);
    }
    let changes_dir = root.join("changes");
    remove_if_present(&changes_dir.join(INTENT_FILE))?;
    fsio::sync_dir(&changes_dir)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// A path of the record, relative to `root`: plain components only, and resolving inside.
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(format!(
            "changes/{INTENT_FILE}: path {:?} is not a plain relative path",
            crate::bounded::bounded(rel)
        )));
    }
    let joined = root.join(p);
    // The last component is checked without following it (it is what gets renamed).
    let parent = joined.parent().unwrap_or(root);
    let name = joined.file_name().unwrap_or_default();
    Ok(paths::resolve_for_write(root, parent)?.join(name))
}

/// Removes temp files of atomic writes, and locks moved aside, that no record refers to
/// (the caller holds the lock, so no writer of this workspace is in the middle of one).
pub fn sweep(root: &Path) {
    let changes = root.join("changes");
    let mut dirs = vec![changes.clone()];
    for parent in [changes.clone(), root.join("specs")] {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            // A lock renewal (another thread of a live holder) writes through a temp file
            // too: only one older than a renewal could take is a stray.
            let renewal = name.starts_with(&format!(".{}", super::lock::LOCK_FILE));
            let stray = (fsio::is_temp_name(&name) && (!renewal || older_than(&path, 10)))
                || (name.starts_with(".openspec.stale-") && name != ".openspec.stale-guard");
            if stray && e.file_type().is_ok_and(|t| t.is_file()) {
                match std::fs::remove_file(&path) {
                    Ok(()) => log::info!("removed stray temp file {}", path.display()),
                    Err(err) => log::warn!("cannot remove stray {}: {err}", path.display()),
                }
            }
        }
    }
}

fn older_than(path: &Path, secs: u64) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() >= secs)
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
