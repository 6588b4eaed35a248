//! Putting a verified tree in place of the live `openspec/` folder.
//!
//! - Tree: the staging folder is beside `openspec/` (in WORKING_DIRECTORY) and one
//!   `renameat2(RENAME_EXCHANGE)` swaps the two folders; where the filesystem refuses exchange,
//!   two renames (old aside, new in), undone if the second fails.
//! - InPlace: when `openspec/` itself cannot be renamed (it is WORKING_DIRECTORY, or a mount
//!   point such as a Docker volume, or its parent is not writable), the staging folder is inside
//!   it and its top-level entries (`specs`, `project.md`, ..., `changes` last) are exchanged one
//!   by one; a failure undoes the steps already done. The new `changes/` carries a lock of the
//!   restore's own (see `restore`), so no writer starts between two of those steps.
//! - Create: no workspace yet; the tree is renamed to WORKING_DIRECTORY/openspec (refusing to
//!   replace anything that appeared meanwhile).
//!
//! The caller holds the workspace lock across the swap, so no tool write is lost in it.

use super::manifest::TOP;
use super::mounts::is_mount_point;
use super::{is_transient, Failure, STAGING_PREFIX};
use crate::openspec::{fsio, Workspace};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Create { target: PathBuf },
    Tree { root: PathBuf },
    InPlace { root: PathBuf },
}

impl Plan {
    /// Looks at WORKING_DIRECTORY: the plan, and the current workspace if there is one.
    pub fn for_working_directory(wd: &Path) -> Result<(Plan, Option<Workspace>), Failure> {
        let canonical = fs::canonicalize(wd).map_err(|e| {
            Failure::new(format!(
                "WORKING_DIRECTORY {}: cannot resolve: {e}",
                wd.display()
            ))
        })?;
        if !canonical.is_dir() {
            return Err(Failure::new(format!(
                "WORKING_DIRECTORY {}: not a folder",
                wd.display()
            )));
        }
        let Ok(ws) = Workspace::open(&canonical) else {
            // A project root without openspec/ yet (open refuses nothing else).
            return Ok((
                Plan::Create {
                    target: canonical.join(TOP),
                },
                None,
            ));
        };
        let root = ws.root().to_path_buf();
        let plan = if root == canonical || is_mount_point(&root) {
            Plan::InPlace { root }
        } else {
            Plan::Tree { root }
        };
        Ok((plan, Some(ws)))
    }

    /// The folder that ends up holding the restored tree.
    pub fn target(&self) -> &Path {
        match self {
            Plan::Create { target } => target,
            Plan::Tree { root } | Plan::InPlace { root } => root,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Plan::Create { .. } => "created",
            Plan::Tree { .. } => "folder swapped",
            Plan::InPlace { .. } => "entries swapped inside the folder",
        }
    }

    fn staging_parent(&self) -> Option<&Path> {
        match self {
            Plan::Create { target } => target.parent(),
            Plan::Tree { root } => root.parent(),
            Plan::InPlace { root } => Some(root),
        }
    }
}

/// A staging folder (`.openspec-restore-<pid>-<n>`), removed with everything in it on drop
/// unless kept (when a failed swap could not be undone and it holds the previous tree).
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes it now; a warning when that fails (the restore itself is done).
    pub fn remove(mut self) -> Option<String> {
        self.keep = true;
        fs::remove_dir_all(&self.path).err().map(|e| {
            format!(
                "could not remove the previous tree in {}: {e}; remove it by hand",
                self.path.display()
            )
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates the staging folder for `plan`. A Tree plan whose parent folder is not writable
/// becomes an InPlace plan (staging inside `openspec/`).
pub fn create_staging(plan: Plan) -> Result<(Plan, Staging), Failure> {
    let parent = plan
        .staging_parent()
        .ok_or_else(|| Failure::new("the workspace has no parent folder"))?
        .to_path_buf();
    match make_staging(&parent) {
        Ok(s) => Ok((plan, s)),
        Err(e) => match (&plan, e.kind()) {
            (
                Plan::Tree { root },
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem,
            ) => {
                let root = root.clone();
                let staging = make_staging(&root).map_err(|e| staging_failure(&root, e))?;
                Ok((Plan::InPlace { root }, staging))
            }
            _ => Err(staging_failure(&parent, e)),
        },
    }
}

fn staging_failure(parent: &Path, e: io::Error) -> Failure {
    Failure::new(format!(
        "cannot create a staging folder in {}: {e}",
        parent.display()
    ))
}

fn make_staging(parent: &Path) -> io::Result<Staging> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = parent.join(format!("{STAGING_PREFIX}{}-{nanos}", std::process::id()));
    fs::DirBuilder::new().mode(0o700).create(&path)?;
    Ok(Staging { path, keep: false })
}

/// Fsyncs every folder of the staged tree (the files were synced as they were written), so
/// the tree is on disk before it replaces the live one.
pub fn sync_tree(dir: &Path) -> Result<(), Failure> {
    fsio::sync_dir(dir)?;
    for entry in fs::read_dir(dir).map_err(|e| io_failure("cannot list", dir, e))? {
        let entry = entry.map_err(|e| io_failure("cannot list", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Where the previous tree's `changes/` folder (with the held lock in it) ended up.
#[derive(Debug)]
pub struct Outcome {
    pub old_changes: Option<PathBuf>,
}

/// Puts `new_tree` (inside `staging`) in place as `plan` says. On error the live workspace is
/// as it was, or, when undoing failed, the message says where the previous tree is (and the
/// staging folder is kept).
pub fn swap_in(plan: &Plan, staging: &mut Staging, new_tree: &Path) -> Result<Outcome, Failure> {
    let result = match plan {
        Plan::Create { target } => create(new_tree, target).map(|()| Outcome { old_changes: None }),
        Plan::Tree { root } => swap_tree(new_tree, root, &staging.path),
        Plan::InPlace { root } => swap_entries(new_tree, root, &staging.path),
    };
    let outcome = match result {
        Ok(o) => o,
        Err(SwapError::Undone(msg)) => {
            return Err(Failure::new(format!("{msg}; workspace unchanged")))
        }
        Err(SwapError::Stuck(msg)) => {
            staging.keep = true;
            return Err(Failure::new(msg));
        }
    };
    let synced = match plan.target().parent() {
        Some(parent) if !matches!(plan, Plan::InPlace { .. }) => fsio::sync_dir(parent),
        _ => fsio::sync_dir(plan.target()),
    };
    if let Err(e) = synced {
        log::warn!("{e}");
    }
    Ok(outcome)
}

enum SwapError {
    /// Nothing changed (or every step was undone).
    Undone(String),
    /// Undoing failed: the workspace is half swapped; the message says how to repair it.
    Stuck(String),
}

fn create(new_tree: &Path, target: &Path) -> Result<(), SwapError> {
    match rename2(new_tree, target, libc::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if unsupported(&e) => {
            if fs::symlink_metadata(target).is_ok() {
                return Err(SwapError::Undone(format!(
                    "{} appeared during the restore; run restore again",
                    target.display()
                )));
            }
            fs::rename(new_tree, target)
                .map_err(|e| SwapError::Undone(rename_msg(new_tree, target, e)))
        }
        Err(e) => Err(SwapError::Undone(rename_msg(new_tree, target, e))),
    }
}

fn swap_tree(new_tree: &Path, root: &Path, staging: &Path) -> Result<Outcome, SwapError> {
    match rename2(new_tree, root, libc::RENAME_EXCHANGE) {
        // The previous tree is now where the new one was.
        Ok(()) => Ok(Outcome {
            old_changes: Some(new_tree.join(CHANGES)),
        }),
        Err(e) if unsupported(&e) => {
            let aside = staging.join("previous");
            fs::rename(root, &aside).map_err(|e| SwapError::Undone(rename_msg(root, &aside, e)))?;
            if let Err(e) = fs::rename(new_tree, root) {
                let msg = rename_msg(new_tree, root, e);
                return match fs::rename(&aside, root) {
                    Ok(()) => Err(SwapError::Undone(msg)),
                    Err(e2) => Err(SwapError::Stuck(format!(
                        "{msg}; and moving the previous tree back failed: {e2}: it is in {}, \
                         move it to {} by hand",
                        aside.display(),
                        root.display()
                    ))),
                };
            }
            Ok(Outcome {
                old_changes: Some(aside.join(CHANGES)),
            })
        }
        Err(e) => Err(SwapError::Undone(format!(
            "cannot exchange {} with {}: {e}",
            new_tree.display(),
            root.display()
        ))),
    }
}

/// One done step of an in-place swap, for undoing.
enum Step {
    /// `new/name` and `root/name` were exchanged.
    Exchanged(String),
    /// `root/name` went to `aside/name`, then `new/name` to `root/name`.
    Replaced(String),
    /// `new/name` went to `root/name` (nothing was there).
    Added(String),
    /// `root/name` went to `aside/name` (not in the backup).
    Removed(String),
}

/// The folder holding the workspace lock.
pub const CHANGES: &str = "changes";

fn swap_entries(new_tree: &Path, root: &Path, staging: &Path) -> Result<Outcome, SwapError> {
    let aside = staging.join("previous");
    fs::create_dir(&aside)
        .map_err(|e| SwapError::Undone(format!("cannot create {}: {e}", aside.display())))?;
    let list = |dir: &Path| -> Result<Vec<String>, SwapError> {
        let mut names = Vec::new();
        let entries = fs::read_dir(dir)
            .map_err(|e| SwapError::Undone(format!("cannot list {}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| SwapError::Undone(format!("cannot list {}: {e}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_transient(&name) {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    };
    let new_names = list(new_tree)?;
    let old_names = list(root)?;
    // `changes/` (where the lock lives) last: writers stay out until every other entry is in.
    let mut names: Vec<&String> = new_names.iter().chain(&old_names).collect();
    names.sort_unstable_by_key(|n| (n.as_str() == CHANGES, n.as_str()));
    names.dedup();
    let mut done: Vec<Step> = Vec::new();
    let mut old_changes = None;
    let run = |done: &mut Vec<Step>| -> io::Result<()> {
        for name in names {
            let (new, live) = (new_tree.join(name), root.join(name));
            #[cfg(test)]
            test_hooks::maybe_fail(name)?;
            if !new_names.contains(name) {
                fs::rename(&live, aside.join(name))?;
                done.push(Step::Removed(name.clone()));
                if name == CHANGES {
                    old_changes = Some(aside.join(name));
                }
                continue;
            }
            if fs::symlink_metadata(&live).is_err() {
                fs::rename(&new, &live)?;
                done.push(Step::Added(name.clone()));
                continue;
            }
            match rename2(&new, &live, libc::RENAME_EXCHANGE) {
                Ok(()) => {
                    done.push(Step::Exchanged(name.clone()));
                    if name == CHANGES {
                        old_changes = Some(new);
                    }
                }
                Err(e) if unsupported(&e) => {
                    fs::rename(&live, aside.join(name))?;
                    if let Err(e) = fs::rename(&new, &live) {
                        if fs::rename(aside.join(name), &live).is_err() {
                            // As if removed: undoing moves it back (or reports it stuck).
                            done.push(Step::Removed(name.clone()));
                        }
                        return Err(e);
                    }
                    done.push(Step::Replaced(name.clone()));
                    if name == CHANGES {
                        old_changes = Some(aside.join(name));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let result = run(&mut done);
    match result {
        Ok(()) => Ok(Outcome { old_changes }),
        Err(e) => {
            let msg = format!("cannot swap the entries of {}: {e}", root.display());
            for step in done.iter().rev() {
                if let Err(undo) = undo_step(step, new_tree, root, &aside) {
                    return Err(SwapError::Stuck(format!(
                        "{msg}; and undoing failed: {undo}: the previous entries are in {} and \
                         {}; move them back into {} by hand",
                        new_tree.display(),
                        aside.display(),
                        root.display()
                    )));
                }
            }
            Err(SwapError::Undone(msg))
        }
    }
}

fn undo_step(step: &Step, new_tree: &Path, root: &Path, aside: &Path) -> io::Result<()> {
    match step {
        Step::Exchanged(n) => rename2(&new_tree.join(n), &root.join(n), libc::RENAME_EXCHANGE),
        Step::Replaced(n) => {
            fs::rename(root.join(n), new_tree.join(n))?;
            fs::rename(aside.join(n), root.join(n))
        }
        Step::Added(n) => fs::rename(root.join(n), new_tree.join(n)),
        Step::Removed(n) => fs::rename(aside.join(n), root.join(n)),
    }
}

fn rename_msg(from: &Path, to: &Path, e: io::Error) -> String {
    format!("cannot rename {} to {}: {e}", from.display(), to.display())
}

fn io_failure(what: &str, path: &Path, e: io::Error) -> Failure {
    Failure::new(format!("{what} {}: {e}", path.display()))
}

/// The filesystem or kernel does not do this `renameat2` flag.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`, by syscall number so it works whatever
/// the C library exports.
#[cfg(target_os = "linux")]
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
    };
    #[cfg(test)]
    if flags == libc::RENAME_EXCHANGE && test_hooks::NO_EXCHANGE.with(|c| c.get()) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn rename2(_from: &Path, _to: &Path, _flags: libc::c_uint) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Per test thread: pretend the filesystem has no RENAME_EXCHANGE; fail an in-place swap at
/// an entry.
#[cfg(test)]
mod test_hooks {
    use std::cell::{Cell, RefCell};

    thread_local! {
        pub static NO_EXCHANGE: Cell<bool> = const { Cell::new(false) };
        pub static FAIL_AT: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    pub fn maybe_fail(name: &str) -> std::io::Result<()> {
        if FAIL_AT.with(|f| f.borrow().as_deref() == Some(name)) {
            return Err(std::io::Error::other("injected failure"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (p, c) in files {
            let path = root.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, c).unwrap();
        }
    }

    fn read(root: &Path, p: &str) -> Option<String> {
        fs::read_to_string(root.join(p)).ok()
    }

    #[test]
    fn tree_swap_exchanges_the_folders() {
        tree_swap(false);
    }

    #[test]
    fn tree_swap_without_exchange_uses_two_renames() {
        tree_swap(true);
    }

    fn tree_swap(no_exchange: bool) {
        test_hooks::NO_EXCHANGE.with(|c| c.set(no_exchange));
        let wd = tempfile::tempdir().unwrap();
        let root = wd.path().join("openspec");
        tree(
            &root,
            &[("changes/a/tasks.md", "old"), ("old-only.md", "x")],
        );
        let mut staging = make_staging(wd.path()).unwrap();
        let new = staging.path().join(TOP);
        tree(
            &new,
            &[("changes/a/tasks.md", "new"), ("specs/s/spec.md", "s")],
        );
        let plan = Plan::Tree { root: root.clone() };
        let out = swap_in(&plan, &mut staging, &new).unwrap();
        assert_eq!(read(&root, "changes/a/tasks.md").as_deref(), Some("new"));
        assert_eq!(read(&root, "old-only.md"), None);
        let old = out.old_changes.unwrap();
        assert_eq!(read(&old, "a/tasks.md").as_deref(), Some("old"));
        assert!(staging.remove().is_none());
        assert_eq!(fs::read_dir(wd.path()).unwrap().count(), 1);
    }

    #[test]
    fn in_place_swap_replaces_adds_and_removes_entries() {
        in_place_swap(false);
    }

    #[test]
    fn in_place_swap_without_exchange_uses_renames() {
        in_place_swap(true);
    }

    fn in_place_swap(no_exchange: bool) {
        test_hooks::NO_EXCHANGE.with(|c| c.set(no_exchange));
        let wd = tempfile::tempdir().unwrap();
        let root = wd.path().join("openspec");
        tree(
            &root,
            &[("changes/a/tasks.md", "old"), ("old-only.md", "x")],
        );
        fs::write(root.join(".openspec.lock"), "kept").unwrap();
        let mut staging = make_staging(&root).unwrap();
        let new = staging.path().join(TOP);
        tree(&new, &[("changes/a/tasks.md", "new"), ("project.md", "p")]);
        let plan = Plan::InPlace { root: root.clone() };
        let out = swap_in(&plan, &mut staging, &new).unwrap();
        assert_eq!(read(&root, "changes/a/tasks.md").as_deref(), Some("new"));
        assert_eq!(read(&root, "project.md").as_deref(), Some("p"));
        assert_eq!(read(&root, "old-only.md"), None);
        assert_eq!(read(&root, ".openspec.lock").as_deref(), Some("kept"));
        assert!(out.old_changes.unwrap().join("a/tasks.md").exists());
        assert!(staging.remove().is_none());
        let mut names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".openspec.lock", "changes", "project.md"]);
    }

    #[test]
    fn create_refuses_to_replace() {
        let wd = tempfile::tempdir().unwrap();
        let mut staging = make_staging(wd.path()).unwrap();
        let new = staging.path().join(TOP);
        tree(&new, &[("project.md", "p")]);
        let target = wd.path().join(TOP);
        fs::create_dir(&target).unwrap();
        let plan = Plan::Create {
            target: target.clone(),
        };
        let err = swap_in(&plan, &mut staging, &new).unwrap_err();
        assert!(
            err.message.contains("workspace unchanged"),
            "{}",
            err.message
        );
        fs::remove_dir(&target).unwrap();
        swap_in(&plan, &mut staging, &new).unwrap();
        assert_eq!(read(&target, "project.md").as_deref(), Some("p"));
    }

    #[test]
    fn a_failed_in_place_swap_is_undone() {
        for no_exchange in [false, true] {
            test_hooks::NO_EXCHANGE.with(|c| c.set(no_exchange));
            let wd = tempfile::tempdir().unwrap();
            let root = wd.path().join("openspec");
            tree(
                &root,
                &[("changes/a/tasks.md", "old"), ("old-only.md", "x")],
            );
            let before = snapshot(&root);
            let mut staging = make_staging(&root).unwrap();
            let new = staging.path().join(TOP);
            // Order: old-only.md, project.md, specs, changes last; fail at specs, after two steps.
            tree(
                &new,
                &[
                    ("changes/a/tasks.md", "new"),
                    ("project.md", "p"),
                    ("specs/s/spec.md", "s"),
                ],
            );
            test_hooks::FAIL_AT.with(|f| *f.borrow_mut() = Some("specs".into()));
            let plan = Plan::InPlace { root: root.clone() };
            let err = swap_in(&plan, &mut staging, &new).unwrap_err();
            test_hooks::FAIL_AT.with(|f| *f.borrow_mut() = None);
            assert!(
                err.message.contains("workspace unchanged"),
                "{}",
                err.message
            );
            drop(staging);
            assert_eq!(snapshot(&root), before, "no_exchange={no_exchange}");
        }
    }

    fn snapshot(root: &Path) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if p.is_dir() {
                    out.push((rel, None));
                    stack.push(p);
                } else {
                    out.push((rel, fs::read_to_string(&p).ok()));
                }
            }
        }
        out.sort();
        out
    }
}
