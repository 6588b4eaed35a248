//! `backend restore`: read the whole archive into a staging folder, verifying as it goes and
//! against the manifest at the end, check the tree opens as a workspace, and only then swap it
//! in (see [`super::swap`]). Nothing of the live workspace is touched before the swap.

use super::manifest::{check_member_path, Manifest, MANIFEST_NAME, MAX_MANIFEST_BYTES, TOP};
use super::swap::{self, Plan, CHANGES};
use super::write::Hashing;
use super::{database, lock_workspace, Failure, Stream};
use crate::openspec::lock::WorkspaceLock;
use crate::openspec::Workspace;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct RestoreReport {
    pub files: usize,
    pub bytes: u64,
    pub source: String,
    pub host: String,
    pub created: String,
    pub target: PathBuf,
    pub how: &'static str,
    /// Set when the previous tree could not be removed after the swap.
    pub leftover: Option<String>,
    /// What happened to the archive's database, when it held one.
    pub database: Option<String>,
}

impl RestoreReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "restored {} files ({} bytes) from {} (backup of {} taken {}) into {} ({})",
            self.files,
            self.bytes,
            self.source,
            self.host,
            self.created,
            self.target.display(),
            self.how
        );
        if let Some(db) = &self.database {
            s.push_str(&format!("; {db}"));
        }
        if let Some(left) = &self.leftover {
            s.push_str(&format!("; warning: {left}"));
        }
        s
    }
}

/// Restores the archive from `src` into the workspace of `wd`.
pub fn restore(wd: &Path, src: &Stream, wait: Duration) -> Result<RestoreReport, Failure> {
    let input: Box<dyn Read> = match src {
        Stream::Stdio => Box::new(io::stdin().lock()),
        Stream::File(p) => Box::new(
            fs::File::open(p)
                .map_err(|e| Failure::new(format!("cannot open {}: {e}", p.display())))?,
        ),
    };
    let source = match src {
        Stream::Stdio => "stdin".to_string(),
        Stream::File(p) => p.display().to_string(),
    };
    let (plan, current) = Plan::for_working_directory(wd)?;
    let (plan, mut staging) = swap::create_staging(plan)?;
    let new_tree = staging.path().join(TOP);
    let manifest = extract_verified(input, staging.path())
        .map_err(|why| Failure::new(format!("{source}: refused, workspace unchanged: {why}")))?;
    validate_tree(staging.path()).map_err(|why| {
        Failure::new(format!(
            "{source}: refused, workspace unchanged: the restored tree is not a usable \
             workspace: {why}"
        ))
    })?;
    swap::sync_tree(&new_tree)?;

    let lock = match &current {
        Some(ws) => lock_workspace(&ws.changes_dir(), wait)
            .map_err(|f| Failure::new(format!("{}; workspace unchanged", f.message)))?,
        None => None,
    };
    // Swapped entry by entry, the new tree's changes/ (swapped last) brings a lock of ours
    // along, so no writer starts before every entry is in.
    let new_changes = new_tree.join(CHANGES);
    let new_lock = match plan {
        Plan::InPlace { .. } if new_changes.is_dir() => Some(
            WorkspaceLock::acquire(&new_changes, Duration::ZERO)
                .map_err(|e| Failure::new(format!("cannot lock the staged tree: {e}")))?,
        ),
        _ => None,
    };
    // The database first, under the workspace lock: if it cannot be written (locked past
    // --wait), nothing has changed yet.
    let db_report = match &manifest.database {
        None => None,
        Some(entry) => {
            let target = database::Target::from_env(wd);
            if target.postgres {
                Some(format!(
                    "the archive's SQLite database ({} bytes) was not restored: DATABASE_URL \
                     points at PostgreSQL",
                    entry.size
                ))
            } else {
                database::restore_into(&target.path, &staging.path().join(database::MEMBER), wait)
                    .map_err(|why| {
                        Failure::new(format!("{source}: refused, workspace unchanged: {why}"))
                    })?;
                Some(format!(
                    "database {} restored ({} bytes)",
                    target.path.display(),
                    entry.size
                ))
            }
        }
    };
    let outcome = swap::swap_in(&plan, &mut staging, &new_tree).map_err(|f| match &db_report {
        Some(db) if !db.contains("not restored") => Failure::new(format!(
            "{}; the database was already restored ({db})",
            f.message
        )),
        _ => f,
    })?;
    if let (Some(lock), Some(moved)) = (lock, &outcome.old_changes) {
        lock.release_moved(moved);
    }
    if let Some(lock) = new_lock {
        lock.release_moved(&plan.target().join(CHANGES));
    }
    let leftover = staging.remove();
    Ok(RestoreReport {
        files: manifest.file_count,
        bytes: manifest.total_bytes,
        source,
        host: manifest.host,
        created: manifest.created,
        target: plan.target().to_path_buf(),
        how: plan.describe(),
        leftover,
        database: db_report,
    })
}

/// Reads the archive to its very end into `staging` (which gets `staging/openspec/...`) and
/// checks it: member paths and types, the manifest, every file's size and SHA-256, nothing
/// after the tar end or after the gzip stream. The error says what is wrong.
pub fn extract_verified<R: Read>(input: R, staging: &Path) -> Result<Manifest, String> {
    let mut gz = flate2::bufread::GzDecoder::new(BufReader::new(input));
    let mut manifest_raw: Option<Vec<u8>> = None;
    let mut dirs = BTreeSet::new();
    let mut files: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut dir_times = Vec::new();
    let mut database: Option<(u64, String)> = None;
    {
        let mut archive = tar::Archive::new(&mut gz);
        let entries = archive
            .entries()
            .map_err(|e| format!("not a readable gzip'd tar: {e}"))?;
        let mut last = String::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                if last.is_empty() {
                    format!("not a gzip'd tar, or corrupted at its start: {e}")
                } else {
                    format!("unreadable after {last}: {e} (truncated or corrupted archive?)")
                }
            })?;
            if manifest_raw.is_some() {
                return Err(format!(
                    "an entry follows {MANIFEST_NAME}, which must be last"
                ));
            }
            let ty = entry.header().entry_type();
            let raw = entry.path_bytes().into_owned();
            if raw == MANIFEST_NAME.as_bytes() && ty.is_file() {
                if entry.size() > MAX_MANIFEST_BYTES {
                    return Err(format!(
                        "{MANIFEST_NAME}: {} bytes, too large",
                        entry.size()
                    ));
                }
                let mut buf = Vec::new();
                entry
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("{MANIFEST_NAME}: unreadable: {e}"))?;
                manifest_raw = Some(buf);
                continue;
            }
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
            let mtime = entry.header().mtime().unwrap_or(0);
            if raw == database::MEMBER.as_bytes() && ty.is_file() {
                if database.is_some() {
                    return Err(format!("{}: appears twice", database::MEMBER));
                }
                database = Some(extract_file(
                    &mut entry,
                    staging,
                    database::MEMBER,
                    0o600,
                    mtime,
                )?);
                last = database::MEMBER.to_string();
                continue;
            }
            if ty.is_dir() {
                let rel = check_member_path(&raw, true)?;
                if !dirs.insert(rel.clone()) {
                    return Err(format!("{rel}/: appears twice"));
                }
                let path = staging.join(&rel);
                match fs::create_dir_all(&path) {
                    Ok(()) => {}
                    Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
                }
                dir_times.push((path, mode | 0o700, mtime));
                last = format!("{rel}/");
            } else if ty.is_file() {
                let rel = check_member_path(&raw, false)?;
                let (size, sha) = extract_file(&mut entry, staging, &rel, mode | 0o600, mtime)?;
                if files.insert(rel.clone(), (size, sha)).is_some() {
                    return Err(format!("{rel}: appears twice"));
                }
                last = rel;
            } else {
                let what = match ty {
                    tar::EntryType::Symlink | tar::EntryType::Link => "a link",
                    tar::EntryType::Char | tar::EntryType::Block => "a device",
                    tar::EntryType::Fifo => "a FIFO",
                    _ => "an unsupported entry type",
                };
                return Err(format!(
                    "{shown}: {what} (type {:?}); backups hold only folders and regular files",
                    ty.as_byte() as char
                ));
            }
        }
    }
    let Some(raw) = manifest_raw else {
        return Err(format!(
            "no {MANIFEST_NAME} at the end: truncated, or not made by `backend backup`"
        ));
    };
    // The rest of the tar stream must be the end-of-archive zero blocks; reading it to the end
    // makes the gzip decoder check its CRC and length trailer.
    let mut rest = Vec::new();
    gz.read_to_end(&mut rest).map_err(|e| {
        format!("the gzip stream is corrupted or truncated after the last entry: {e}")
    })?;
    if rest.iter().any(|b| *b != 0) {
        return Err("data after the end of the tar archive".into());
    }
    let mut outer = gz.into_inner();
    let trailing = outer
        .fill_buf()
        .map_err(|e| format!("cannot read after the gzip stream: {e}"))?;
    if !trailing.is_empty() {
        return Err("trailing bytes after the gzip stream".into());
    }
    let manifest = Manifest::parse(&raw)?;
    manifest.verify(&dirs, &files, database.as_ref())?;
    if manifest.database.is_some() {
        database::check_staged(&staging.join(database::MEMBER))?;
    }
    // Folder times last: creating the files inside changed them.
    for (path, mode, mtime) in dir_times.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        let _ = fs::File::open(path).and_then(|d| d.set_modified(time(*mtime)));
    }
    Ok(manifest)
}

fn extract_file<R: Read>(
    entry: &mut R,
    staging: &Path,
    rel: &str,
    mode: u32,
    mtime: u64,
) -> Result<(u64, String), String> {
    let path = staging.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => format!("{rel}: appears twice"),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    let mut reader = Hashing {
        inner: entry,
        hasher: Sha256::new(),
        count: 0,
    };
    io::copy(&mut reader, &mut file)
        .map_err(|e| format!("{rel}: unreadable: {e} (truncated or corrupted archive?)"))?;
    let sha = hex::encode(reader.hasher.finalize());
    file.flush()
        .and_then(|_| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|_| file.set_modified(time(mtime)))
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((reader.count, sha))
}

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The staged tree must open as a workspace, with every spec and change readable the way
/// the tools read them.
pub fn validate_tree(staging: &Path) -> Result<(), String> {
    let ws = Workspace::open(staging).map_err(|e| e.to_string())?;
    let expected = fs::canonicalize(staging.join(TOP)).map_err(|e| e.to_string())?;
    if ws.root() != expected {
        return Err(format!("{TOP}/ is not the workspace root"));
    }
    for spec in ws.list_specs().map_err(|e| e.to_string())? {
        ws.open_spec(&spec.capability)
            .map_err(|e| format!("spec {}: {e}", spec.capability))?;
    }
    for change in ws.list_changes().map_err(|e| e.to_string())? {
        ws.open_change(&change.slug)
            .map_err(|e| format!("change {}: {e}", change.slug))?;
    }
    ws.list_archived().map_err(|e| e.to_string())?;
    Ok(())
}
