//! Shared by the backend's integration tests: a private copy of the example workspace
//! (examples/workspace) and a registry over it, so a test may archive and tick freely.
#![allow(dead_code)] // each test file uses its own subset

use backend::openspec::Workspace;
use backend::tools::{NoProgress, Registry, ToolError, ToolOutput};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workspace")
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A private copy of the fixture and a registry over it.
pub fn workspace() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let ws = Workspace::open(dir.path()).unwrap();
    (dir, Registry::new(ws))
}

pub fn call(reg: &Registry, tool: &str, input: Value) -> Result<ToolOutput, ToolError> {
    reg.call(tool, input, &NoProgress)
}
