//! File reads with context, and atomic writes (temp file in the same folder, fsync, rename,
//! fsync the folder) so a reader on any replica sees the old file or the new one, never half.

use super::{Error, Result};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))
}

/// `Ok(None)` when the file does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The name of a temp file for `name` in the same folder: `.{name}.tmp-{pid}-{n}`.
pub fn temp_name(name: &str) -> String {
    format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// True for a name made by [`temp_name`] (a write in progress, or left by a crash).
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, suffix)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !base.is_empty()
        && suffix
            .split_once('-')
            .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

pub fn atomic_write(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid_input(format!("{}: no parent folder", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(temp_name(&name));
    let result = write_synced(&temp, contents).and_then(|()| {
        std::fs::rename(&temp, path).map_err(|e| Error::io("cannot rename onto", path, e))?;
        sync_dir(dir)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Creates `path` (which must not exist), writes `contents` and fsyncs the file.
pub fn write_synced(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, e))?;
    file.write_all(contents)
        .map_err(|e| Error::io("cannot write", path, e))?;
    file.sync_all()
        .map_err(|e| Error::io("cannot fsync", path, e))
}

/// Makes a rename or create in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot fsync folder", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        let t = temp_name("tasks.md");
        assert!(t.starts_with(".tasks.md.tmp-"), "{t}");
        assert!(is_temp_name(&t));
        assert!(!is_temp_name("tasks.md"));
        assert!(!is_temp_name(".tasks.md.tmp-"));
        assert!(!is_temp_name(".tasks.md.tmp-12"));
        assert!(!is_temp_name(".tasks.md.tmp-12-x"));
        assert!(!is_temp_name("notes.tmp-1-2"));
    }
}
