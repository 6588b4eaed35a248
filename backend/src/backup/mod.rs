//! `backend backup` and `backend restore`: a consistent copy of the OpenSpec workspace as a
//! gzip'd tar, and a restore that verifies the whole archive before it touches anything.
//!
//! The archive holds the `openspec/` tree under relative paths `openspec/...` (folders and
//! regular files only; never the workspace lock or the temp files of writes in progress), then,
//! as its last member, `backup-manifest.json` ([`manifest::Manifest`]): format version, creation
//! time, host, file count, total bytes and the SHA-256 of every file. When the item store is
//! SQLite and its file exists, a consistent copy of it (SQLite's online backup API) goes in as
//! `database/store.sqlite3`, listed in the manifest's `database` ([`database`]).
//!
//! - backup ([`write`]) holds the workspace lock while it reads, so no `change.archive` or
//!   `task.update` is half in it; a FILE is written atomically (temp file, fsync, rename).
//! - restore ([`restore`]) extracts into a staging folder next to the workspace, checking every
//!   entry's path and type, every file's SHA-256 against the manifest and that the tree opens as
//!   a workspace; only then, under the lock of the current workspace, it swaps the tree in
//!   ([`swap`]) and removes the old one. Any failure before the swap leaves the workspace as it
//!   was, byte for byte.
//!
//! Exit codes of both subcommands: 0 done, 1 failed (the message says what and why), 2 bad
//! arguments.

pub mod database;
pub mod manifest;
pub mod mounts;
pub mod restore;
pub mod swap;
pub mod write;

use crate::openspec;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How long backup and restore wait for a running change operation to release the lock.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);
const MAX_LOCK_WAIT_SECS: u64 = 3600;

/// A failed subcommand: the message for stderr and the exit code (1 failure, 2 usage).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<openspec::Error> for Failure {
    fn from(e: openspec::Error) -> Failure {
        Failure::new(e.to_string())
    }
}

/// Where the archive comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    Stdio,
    File(PathBuf),
}

impl Stream {
    pub fn describe(&self) -> String {
        match self {
            Stream::Stdio => "-".to_string(),
            Stream::File(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub stream: Stream,
    pub wait: Duration,
}

pub const USAGE: &str = "\
Usage: backend backup [--wait SECS] [FILE|-]
       backend restore [--wait SECS] FILE|-

backup   writes a gzip'd tar of the openspec/ tree of WORKING_DIRECTORY to FILE (atomically:
         temp file, fsync, rename) or to stdout (-, the default), holding the workspace lock
         so no change.archive or task.update is half in it. The lock file and temp files are
         left out; symlinks and special files are refused. A manifest (backup-manifest.json)
         records the SHA-256 of every file. The todo/memory SQLite database (DATABASE_PATH,
         default WORKING_DIRECTORY/.mcp/store.sqlite3) goes in too, copied with SQLite's
         online backup API while the replicas keep serving; a PostgreSQL store (DATABASE_URL)
         is not included: back it up with pg_dump.
restore  reads FILE or stdin (-), verifies all of it (gzip and tar readable to the end,
         manifest, every file's SHA-256, paths inside openspec/, no links or devices, the tree
         opens as a workspace), then swaps it in for WORKING_DIRECTORY's openspec/ under the
         workspace lock and removes the old tree. WORKING_DIRECTORY may have no openspec/ yet.
         A database in the archive is checked (integrity_check, known schema) and written
         into DATABASE_PATH through the backup API first, in one transaction the running
         replicas see whole. A refused archive leaves the workspace and database unchanged.
--wait   how long to wait for the workspace lock (default 30 s); then exit 1 naming its holder.

Both read WORKING_DIRECTORY (default .), DATABASE_PATH and DATABASE_URL from the environment and print one summary line
on stderr. Exit codes: 0 done, 1 failed (the message names what and why), 2 bad arguments.
";

/// Runs `backend backup ...` or `backend restore ...` (`sub` is the subcommand, `args` what
/// follows it).
pub fn main(sub: &str, args: &[String]) -> ExitCode {
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .format_timestamp(None)
        .target(env_logger::Target::Stderr)
        .try_init();
    let result = match parse_args(sub, args) {
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Some(args)) => run(sub, &args),
        Err(f) => Err(f),
    };
    match result {
        Ok(summary) => {
            eprintln!("backend {sub}: {summary}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("backend {sub}: {}", f.message);
            if f.code == 2 {
                eprintln!("(see backend {sub} --help)");
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(sub: &str, args: &Args) -> Result<String, Failure> {
    let wd = crate::config::working_directory_from(|name| std::env::var(name).ok());
    match sub {
        "backup" => {
            if args.stream == Stream::Stdio && std::io::stdout().is_terminal() {
                return Err(Failure::usage(
                    "refusing to write a binary archive to a terminal: redirect stdout \
                     (backend backup > file.tar.gz) or give a FILE",
                ));
            }
            write::backup(&wd, &args.stream, args.wait).map(|r| r.summary())
        }
        _ => {
            if args.stream == Stream::Stdio && std::io::stdin().is_terminal() {
                return Err(Failure::usage(
                    "stdin is a terminal: pipe the archive in (backend restore - < file.tar.gz) \
                     or give a FILE",
                ));
            }
            restore::restore(&wd, &args.stream, args.wait).map(|r| r.summary())
        }
    }
}

/// `Ok(None)` for --help.
pub fn parse_args(sub: &str, args: &[String]) -> Result<Option<Args>, Failure> {
    let mut stream = None;
    let mut wait = DEFAULT_LOCK_WAIT;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let wait_value = if arg == "--wait" {
            Some(
                iter.next()
                    .ok_or_else(|| Failure::usage("--wait needs a number of seconds"))?
                    .as_str(),
            )
        } else {
            arg.strip_prefix("--wait=")
        };
        if let Some(v) = wait_value {
            let secs: u64 = v
                .parse()
                .ok()
                .filter(|s| *s <= MAX_LOCK_WAIT_SECS)
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "--wait {v:?}: expected whole seconds, 0..={MAX_LOCK_WAIT_SECS}"
                    ))
                })?;
            wait = Duration::from_secs(secs);
            continue;
        }
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "-" => set_stream(&mut stream, Stream::Stdio, arg)?,
            a if a.starts_with('-') => {
                return Err(Failure::usage(format!("unknown option {a:?}")));
            }
            "" => return Err(Failure::usage("empty FILE argument")),
            a => set_stream(&mut stream, Stream::File(PathBuf::from(a)), arg)?,
        }
    }
    let stream = match (stream, sub) {
        (Some(s), _) => s,
        (None, "backup") => Stream::Stdio,
        (None, _) => {
            return Err(Failure::usage(
                "restore needs the archive: FILE, or - for stdin",
            ))
        }
    };
    Ok(Some(Args { stream, wait }))
}

fn set_stream(slot: &mut Option<Stream>, value: Stream, arg: &str) -> Result<(), Failure> {
    if slot.is_some() {
        return Err(Failure::usage(format!(
            "unexpected argument {arg:?}: give one FILE or -"
        )));
    }
    *slot = Some(value);
    Ok(())
}

/// Prefix of the staging folders of a restore (beside or inside `openspec/`).
pub const STAGING_PREFIX: &str = ".openspec-restore-";

/// Names that are never part of a workspace's content: the lock, a lock moved aside while
/// being taken over, temp files of atomic writes, and restore staging folders. Backup skips
/// them; restore refuses an archive holding one.
pub fn is_transient(name: &str) -> bool {
    name == openspec::lock::LOCK_FILE
        || name.starts_with(".openspec.stale-")
        || name.starts_with(STAGING_PREFIX)
        || openspec::fsio::is_temp_name(name)
}

/// Acquires the workspace lock in `changes_dir`, or `None` when there is no `changes/`
/// folder (no writer can run then: every write is to a change).
fn lock_workspace(
    changes_dir: &std::path::Path,
    wait: Duration,
) -> Result<Option<openspec::lock::WorkspaceLock>, Failure> {
    if !changes_dir.is_dir() {
        return Ok(None);
    }
    openspec::lock::WorkspaceLock::acquire(changes_dir, wait)
        .map(Some)
        .map_err(|e| {
            Failure::new(format!(
                "cannot take the workspace lock {} within {} s: {e}",
                changes_dir.join(openspec::lock::LOCK_FILE).display(),
                wait.as_secs()
            ))
        })
}

#[cfg(test)]
mod roundtrip_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = parse_args("backup", &[]).unwrap().unwrap();
        assert_eq!(a.stream, Stream::Stdio);
        assert_eq!(a.wait, DEFAULT_LOCK_WAIT);
        let a = parse_args("backup", &args(&["--wait", "5", "x.tgz"]))
            .unwrap()
            .unwrap();
        assert_eq!(a.stream, Stream::File("x.tgz".into()));
        assert_eq!(a.wait, Duration::from_secs(5));
        let a = parse_args("restore", &args(&["-", "--wait=0"]))
            .unwrap()
            .unwrap();
        assert_eq!(a.stream, Stream::Stdio);
        assert_eq!(a.wait, Duration::ZERO);
        assert!(parse_args("restore", &args(&["--help"])).unwrap().is_none());
        for bad in [
            &["a", "b"][..],
            &["--wait"],
            &["--wait", "soon"],
            &["--wait=99999"],
            &["--force"],
            &[""],
        ] {
            let f = parse_args("backup", &args(bad)).unwrap_err();
            assert_eq!(f.code, 2, "{bad:?}");
        }
        assert_eq!(parse_args("restore", &[]).unwrap_err().code, 2);
    }

    #[test]
    fn transient_names() {
        assert!(is_transient(".openspec.lock"));
        assert!(is_transient(".openspec.stale-12-0"));
        assert!(is_transient(".tasks.md.tmp-12-0"));
        assert!(is_transient(".openspec-restore-1-2"));
        assert!(!is_transient("tasks.md"));
        assert!(!is_transient(".gitkeep"));
    }
}
