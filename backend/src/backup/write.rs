//! `backend backup`: under the workspace lock, the `openspec/` tree goes into a gzip'd tar
//! (into the temp file beside FILE, or into memory for stdout), then the lock is released and
//! the archive is published: renamed onto FILE after an fsync, or written to stdout. A slow
//! reader of stdout therefore never holds up the server's writers.

use super::manifest::{FileEntry, Manifest, MANIFEST_NAME, TOP};
use super::{database, is_transient, lock_workspace, Failure, Stream};
use crate::openspec::{fsio, Workspace};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug)]
pub struct BackupReport {
    pub source: PathBuf,
    pub files: usize,
    pub dirs: usize,
    pub bytes: u64,
    pub compressed: u64,
    pub dest: String,
    /// What the archive holds of the item store.
    pub database: Option<String>,
}

impl BackupReport {
    pub fn summary(&self) -> String {
        format!(
            "{} files, {} folders, {} bytes ({} compressed) from {} -> {}",
            self.files,
            self.dirs,
            self.bytes,
            self.compressed,
            self.source.display(),
            self.dest
        ) + &self
            .database
            .as_ref()
            .map(|d| format!("; {d}"))
            .unwrap_or_default()
    }
}

/// Backs up the workspace of `wd` (a project root holding `openspec/`, or that folder).
pub fn backup(wd: &Path, dest: &Stream, wait: Duration) -> Result<BackupReport, Failure> {
    let ws = Workspace::open(wd)
        .map_err(|e| Failure::new(format!("nothing to back up (WORKING_DIRECTORY): {e}")))?;
    let mut sink = match dest {
        Stream::Stdio => Sink::Memory(Vec::new()),
        Stream::File(path) => Sink::File(TempFile::beside(path, ws.root())?),
    };
    let lock = lock_workspace(&ws.changes_dir(), wait)?;
    let mut db_report = None;
    let (manifest, compressed) = {
        let counted = Counting::new(sink.writer());
        let gz = flate2::write::GzEncoder::new(counted, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut manifest = write_tree(&mut tar, ws.root())?;
        let target = database::Target::from_env(wd);
        if target.postgres {
            db_report = Some(
                "database: PostgreSQL (DATABASE_URL) is not in the archive: use pg_dump".into(),
            );
        } else if let Some(entry) = append_database(&mut tar, &target.path, wait)? {
            db_report = Some(format!(
                "database {} ({} bytes)",
                target.path.display(),
                entry.size
            ));
            manifest.database = Some(entry);
        }
        let raw = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Failure::new(format!("cannot encode the manifest: {e}")))?;
        let mut header = file_header(raw.len() as u64, 0o644, now_secs());
        let finished = tar
            .append_data(&mut header, MANIFEST_NAME, raw.as_slice())
            .and_then(|_| tar.into_inner())
            .and_then(|gz| gz.finish())
            .and_then(|mut c| c.flush().map(|_| c.count));
        let compressed = finished.map_err(|e| sink.error("cannot write the archive", e))?;
        (manifest, compressed)
    };
    drop(lock);
    let dest = sink.publish(dest)?;
    Ok(BackupReport {
        source: ws.root().to_path_buf(),
        files: manifest.file_count,
        dirs: manifest.dirs.len(),
        bytes: manifest.total_bytes,
        compressed,
        dest,
        database: db_report,
    })
}

/// The item store's SQLite file at `db`, copied with the online backup API into a private temp
/// file beside it, appended as `database/store.sqlite3`; `None` when there is no such file.
fn append_database<W: Write>(
    tar: &mut tar::Builder<W>,
    db: &Path,
    wait: Duration,
) -> Result<Option<FileEntry>, Failure> {
    let name = db
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("store.sqlite3");
    let snapshot = db.with_file_name(format!(".{name}.backup-{}", std::process::id()));
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&snapshot);
    if !database::snapshot(db, &snapshot, wait)? {
        return Ok(None);
    }
    append_file(tar, &snapshot, database::MEMBER).map(Some)
}

/// Appends `root` as `openspec/` (folders first, names sorted) and returns the manifest.
fn write_tree<W: Write>(tar: &mut tar::Builder<W>, root: &Path) -> Result<Manifest, Failure> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut pending = vec![(root.to_path_buf(), TOP.to_string())];
    while let Some((dir, rel)) = pending.pop() {
        let meta = fs::symlink_metadata(&dir).map_err(|e| io_failure("cannot inspect", &dir, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(meta.mode() & 0o777);
        header.set_mtime(meta.mtime().max(0) as u64);
        tar.append_data(&mut header, format!("{rel}/"), io::empty())
            .map_err(|e| Failure::new(format!("cannot write the archive at {rel}/: {e}")))?;
        dirs.push(rel.clone());

        let mut children = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_failure("cannot list", &dir, e))? {
            let entry = entry.map_err(|e| io_failure("cannot list", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| {
                Failure::new(format!(
                    "{rel}/{}: the name is not UTF-8; rename it to back up",
                    name.to_string_lossy()
                ))
            })?;
            if !is_transient(name) {
                children.push(name.to_string());
            }
        }
        children.sort_unstable();
        let mut subdirs = Vec::new();
        for name in children {
            let path = dir.join(&name);
            let child_rel = format!("{rel}/{name}");
            let meta =
                fs::symlink_metadata(&path).map_err(|e| io_failure("cannot inspect", &path, e))?;
            let ty = meta.file_type();
            if ty.is_dir() {
                subdirs.push((path, child_rel));
            } else if ty.is_file() {
                files.push(append_file(tar, &path, &child_rel)?);
            } else if ty.is_symlink() {
                let target = fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(Failure::new(format!(
                    "{} is a symbolic link (-> {target}); backups hold only folders and regular \
                     files: replace it with what it points to, or remove it",
                    path.display()
                )));
            } else {
                return Err(Failure::new(format!(
                    "{} is not a regular file or folder (a socket, FIFO or device); remove it \
                     to back up",
                    path.display()
                )));
            }
        }
        // Depth first, in name order: pop takes the last pushed.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(Manifest::new(&root.display().to_string(), dirs, files))
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    rel: &str,
) -> Result<FileEntry, Failure> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_failure("cannot open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_failure("cannot inspect", path, e))?;
    let size = meta.len();
    let mut header = file_header(size, meta.mode() & 0o777, meta.mtime().max(0) as u64);
    let mut reader = Hashing {
        inner: file.take(size),
        hasher: Sha256::new(),
        count: 0,
    };
    tar.append_data(&mut header, rel, &mut reader)
        .map_err(|e| Failure::new(format!("cannot archive {}: {e}", path.display())))?;
    if reader.count != size {
        return Err(Failure::new(format!(
            "{} shrank while being read ({} of {size} bytes); is something editing the \
             workspace outside the tools?",
            path.display(),
            reader.count
        )));
    }
    Ok(FileEntry {
        path: rel.to_string(),
        size,
        sha256: hex::encode(reader.hasher.finalize()),
    })
}

fn file_header(size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io_failure(what: &str, path: &Path, e: io::Error) -> Failure {
    Failure::new(format!("{what} {}: {e}", path.display()))
}

/// A reader that hashes and counts what passes through.
pub(crate) struct Hashing<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Counting<W> {
        Counting { inner, count: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Sink {
    Memory(Vec<u8>),
    File(TempFile),
}

impl Sink {
    fn writer(&mut self) -> Box<dyn Write + '_> {
        match self {
            Sink::Memory(v) => Box::new(v),
            Sink::File(t) => Box::new(io::BufWriter::new(&mut t.file)),
        }
    }

    fn error(&self, what: &str, e: io::Error) -> Failure {
        match self {
            Sink::Memory(_) => Failure::new(format!("{what}: {e}")),
            Sink::File(t) => io_failure(what, &t.path, e),
        }
    }

    /// Stdout: write it all. FILE: fsync the temp file, rename it onto FILE, fsync the folder.
    fn publish(self, dest: &Stream) -> Result<String, Failure> {
        match (self, dest) {
            (Sink::Memory(bytes), _) => {
                let mut out = io::stdout().lock();
                out.write_all(&bytes)
                    .and_then(|_| out.flush())
                    .map_err(|e| {
                        Failure::new(format!("cannot write the archive to stdout: {e}"))
                    })?;
                Ok("stdout".into())
            }
            (Sink::File(temp), Stream::File(path)) => temp.persist(path),
            (Sink::File(_), Stream::Stdio) => Err(Failure::new("internal: file sink for stdout")),
        }
    }
}

/// A temp file beside the destination, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: fs::File,
    keep: bool,
}

impl TempFile {
    /// Checks the destination (its folder exists, it is not a folder, it is not inside the
    /// workspace being backed up) and creates the temp file (mode 0600: a backup holds the
    /// whole workspace).
    fn beside(dest: &Path, workspace: &Path) -> Result<TempFile, Failure> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Failure::usage(format!("{}: not a file name", dest.display())))?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let canonical_dir = fs::canonicalize(&dir)
            .map_err(|e| io_failure("cannot use the folder of FILE", &dir, e))?;
        if canonical_dir.starts_with(workspace) {
            return Err(Failure::usage(format!(
                "{}: FILE is inside the workspace {} being backed up; write it elsewhere",
                dest.display(),
                workspace.display()
            )));
        }
        if dest.is_dir() {
            return Err(Failure::usage(format!(
                "{}: is a folder; give a file name",
                dest.display()
            )));
        }
        let path = dir.join(fsio::temp_name(name));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_failure("cannot create", &path, e))?;
        Ok(TempFile {
            path,
            file,
            keep: false,
        })
    }

    fn persist(mut self, dest: &Path) -> Result<String, Failure> {
        self.file
            .sync_all()
            .map_err(|e| io_failure("cannot fsync", &self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| {
            Failure::new(format!(
                "cannot rename {} onto {}: {e}",
                self.path.display(),
                dest.display()
            ))
        })?;
        self.keep = true;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsio::sync_dir(dir)?;
        }
        Ok(dest.display().to_string())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}
