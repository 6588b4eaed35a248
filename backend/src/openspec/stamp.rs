//! File stamps for caches that must stay correct when another replica writes the shared
//! volume: (inode, size, mtime, ctime) from `lstat`. Our writes are temp file + rename, so they
//! always change the inode; in-place edits change mtime/ctime. Like git's "racy clean" rule,
//! files touched in the last [`SETTLE`] are not trusted, because coarse filesystem timestamps
//! could hide a second same-size write within one tick.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    dev: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// `None` when the path does not exist (absence is part of what is cached, e.g. no design.md).
pub fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(FileStamp {
        ino: m.ino(),
        dev: m.dev(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    })
}

/// The stamps of every path a cached value was built from.
#[derive(Debug, Clone, Default)]
pub struct Stamps(Vec<(PathBuf, Option<FileStamp>)>);

impl Stamps {
    pub fn add(&mut self, path: PathBuf) {
        let s = stamp(&path);
        self.0.push((path, s));
    }

    /// Records `path` only when it exists: the caller also stamps its folder, whose mtime
    /// changes when an entry appears, so absent files cost no syscall when validating.
    pub fn add_existing(&mut self, path: PathBuf) {
        if let Some(s) = stamp(&path) {
            self.0.push((path, Some(s)));
        }
    }

    /// Every path still has the stamp it had when the value was built.
    pub fn still_valid(&self) -> bool {
        self.0.iter().all(|(p, s)| stamp(p) == *s)
    }

    /// No file was modified recently enough for a same-tick rewrite to go unnoticed.
    pub fn settled(&self) -> bool {
        let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            return false;
        };
        let limit = (now.as_nanos() as i128) - SETTLE.as_nanos() as i128;
        self.0
            .iter()
            .all(|(_, s)| s.is_none_or(|s| s.mtime_ns < limit && s.ctime_ns < limit))
    }
}
