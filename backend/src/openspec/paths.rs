//! Keeping every path inside the workspace: names are checked by pattern, and every path we
//! read or write is canonicalized and checked against the canonical workspace root, so a
//! symlink pointing elsewhere (`changes/x -> /etc`) is refused rather than followed.

use super::{Error, Result};
use std::path::{Path, PathBuf};

pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,63}$";

/// A change slug or capability name. The pattern alone rules out `/`, `..`, `.` and
/// absolute paths.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else if name.contains("..") || name.starts_with('/') || name.contains('/') {
        Err(format!(
            "must match {NAME_PATTERN} (path separators and `..` are not allowed)"
        ))
    } else {
        Err(format!("must match {NAME_PATTERN}"))
    }
}

pub fn is_name(name: &str) -> bool {
    check_name(name).is_ok()
}

/// Resolves an existing path and checks it stays under `root` (canonical). Returns the
/// canonical path. NotFound when it does not exist.
pub fn resolve_existing(root: &Path, path: &Path) -> Result<PathBuf> {
    let canonical = std::fs::canonicalize(path).map_err(|e| Error::io("cannot open", path, e))?;
    if !canonical.starts_with(root) {
        return Err(escape_error(root, path, &canonical));
    }
    Ok(canonical)
}

/// For a path that may not exist yet (a new spec file): its nearest existing ancestor must
/// resolve inside `root`, and nothing in between may be a symlink (they do not exist yet).
pub fn resolve_for_write(root: &Path, path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => resolve_existing(root, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path
                .parent()
                .ok_or_else(|| Error::invalid_input(format!("{}: no parent", path.display())))?;
            let file = path
                .file_name()
                .ok_or_else(|| Error::invalid_input(format!("{}: no file name", path.display())))?;
            Ok(resolve_for_write(root, parent)?.join(file))
        }
        Err(e) => Err(Error::io("cannot inspect", path, e)),
    }
}

fn escape_error(root: &Path, path: &Path, canonical: &Path) -> Error {
    let shown = path.strip_prefix(root).unwrap_or(path);
    Error::invalid_input(format!(
        "{} resolves to {}, outside the workspace {}; refusing to follow it",
        shown.display(),
        canonical.display(),
        root.display()
    ))
    .with_hint("a symlink inside the workspace points outside it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_name("add-2fa"));
        assert!(is_name("auth"));
        assert!(!is_name("../etc"));
        assert!(!is_name("/etc"));
        assert!(!is_name("Auth"));
        assert!(!is_name("-x"));
        assert!(!is_name(""));
        assert!(!is_name(&"a".repeat(65)));
        assert!(check_name("a/../b").unwrap_err().contains("`..`"));
    }
}
