//! The OpenSpec workspace model: locating the `openspec/` folder, reading specs, changes and
//! tasks, and archiving a change (apply its spec deltas, then move it) all-or-nothing.
//!
//! Everything here is synchronous filesystem work; the server runs it where it likes.

pub mod archive;
pub mod changes;
pub mod delta;
pub mod error;
pub mod fsio;
pub mod lock;
pub mod markdown;
pub mod paths;
pub mod recovery;
pub mod spec;
pub mod stamp;
pub mod tasks;

pub use error::{Error, ErrorKind, Result};

use std::path::{Path, PathBuf};

/// An OpenSpec workspace: the canonical path of its `openspec/` folder.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Accepts a project root holding `openspec/` or the `openspec/` folder itself.
    /// The error names the path and why it was refused.
    pub fn open(path: &Path) -> Result<Workspace> {
        let canonical = std::fs::canonicalize(path).map_err(|e| {
            Error::not_found(format!("workspace {}: cannot resolve: {e}", path.display()))
        })?;
        if !canonical.is_dir() {
            return Err(Error::invalid_input(format!(
                "workspace {}: not a directory",
                path.display()
            )));
        }
        let nested = canonical.join("openspec");
        let root = if nested.is_dir() {
            // Canonicalize again: `openspec` itself may be a symlink (a mounted volume).
            std::fs::canonicalize(&nested).map_err(|e| Error::io("workspace", &nested, e))?
        } else if canonical.file_name().is_some_and(|n| n == "openspec")
            || canonical.join("specs").is_dir()
            || canonical.join("changes").is_dir()
        {
            canonical
        } else {
            return Err(Error::not_found(format!(
                "workspace {}: no openspec/ folder here, and it is not an openspec folder itself \
                 (expected {}/openspec, or a folder holding specs/ or changes/)",
                path.display(),
                path.display()
            )));
        };
        Ok(Workspace { root })
    }

    /// The canonical `openspec/` folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn specs_dir(&self) -> PathBuf {
        self.root.join("specs")
    }

    pub fn changes_dir(&self) -> PathBuf {
        self.root.join("changes")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("changes").join("archive")
    }

    /// For readiness probes: the folder can be listed now.
    pub fn check_readable(&self) -> std::result::Result<(), String> {
        std::fs::read_dir(&self.root)
            .map(|_| ())
            .map_err(|e| format!("workspace {}: not readable: {e}", self.root.display()))
    }
}
