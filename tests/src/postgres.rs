//! A throwaway PostgreSQL server for the tests: Debian's server binaries
//! (`/usr/lib/postgresql/<newest>/bin`, installed by `scripts/setup.sh test`) with a fresh
//! cluster in a temporary directory, listening on a free loopback port with TLS on (a
//! self-signed certificate), a login role `mcp` (password `secret`, password auth over TCP)
//! owning a database `mcp`. Stopped by pid when dropped.
//!
//! PostgreSQL refuses to run as root: as root (CI), `initdb` and `postgres` run as the
//! `postgres` user the Debian package creates (its uid set on the child itself, so the pid we
//! hold is the postmaster's), with the directory chowned to it.

use crate::{free_port, Proc};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The role, password and database the URL names.
pub const USER: &str = "mcp";
pub const PASSWORD: &str = "secret";
pub const DATABASE: &str = "mcp";

pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    /// `Some((uid, gid))` of the `postgres` user when we are root.
    run_as: Option<(u32, u32)>,
    proc: Option<Proc>,
}

impl Postgres {
    /// A new cluster, started and ready, with the `mcp` role and database.
    pub fn start() -> Postgres {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pg-test-")
            .tempdir()
            .expect("tempdir");
        let run_as = if is_root() {
            let ids = (id_of("-u"), id_of("-g"));
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1)).expect("chown");
            Some(ids)
        } else {
            None
        };
        let mut pg = Postgres {
            bin,
            dir,
            port: free_port(),
            run_as,
            proc: None,
        };
        pg.initdb();
        pg.start_again();
        pg.psql_in(
            "postgres",
            &[
                &format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"),
                &format!("CREATE DATABASE {DATABASE} OWNER {USER}"),
            ],
        );
        pg
    }

    /// `postgres://mcp:secret@127.0.0.1:PORT/mcp` (sslmode left to the client: prefer).
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Fast shutdown (SIGINT: sessions are ended) and wait for the postmaster to exit.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            if proc.is_running() {
                proc.signal("INT");
                if proc.wait_exit(Duration::from_secs(30)).is_none() {
                    proc.fail("PostgreSQL did not stop within 30 s");
                }
            }
        }
    }

    /// SIGSTOP to the postmaster and all its processes (sessions too): the server still
    /// accepts TCP connections (the kernel's backlog) but answers nothing, like a host that
    /// hangs. [`Postgres::thaw`] resumes it.
    pub fn freeze(&self) {
        let pid = self.pid().expect("PostgreSQL is running");
        signal(&[pid], "STOP");
        signal(&children(pid), "STOP");
    }

    pub fn thaw(&self) {
        let pid = self.pid().expect("PostgreSQL is running");
        signal(&children(pid), "CONT");
        signal(&[pid], "CONT");
    }

    /// Starts the server again on the same data directory and port; waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "PostgreSQL is already running");
        let data = self.dir.path().join("data");
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path());
        for setting in [
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "ssl=on",
            "ssl_cert_file=server.crt",
            "ssl_key_file=server.key",
        ] {
            cmd.arg("-c").arg(setting);
        }
        let mut proc = Proc::spawn(&format!("postgres:{}", self.port), cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !proc.is_running() {
                proc.fail("PostgreSQL exited during start-up");
            }
            if self.try_psql("postgres", &["SELECT 1"]).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                proc.fail("PostgreSQL did not answer within 30 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
    }

    /// Runs `sql` in the `mcp` database as the superuser; its output unaligned, tuples only
    /// (`a|b` per row), trimmed. Panics when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(DATABASE, &[sql])
    }

    fn psql_in(&self, db: &str, commands: &[&str]) -> String {
        self.try_psql(db, commands)
            .unwrap_or_else(|e| panic!("psql {commands:?}: {e}"))
    }

    /// A psql command running `sql` in the `mcp` database as the superuser, for a session
    /// kept open in the background (spawn it with [`Proc::spawn`]); `PGAPPNAME` names it in
    /// `pg_stat_activity`.
    pub fn psql_command(&self, sql: &str) -> Command {
        let mut cmd = self.psql_base(DATABASE);
        cmd.arg("-c").arg(sql);
        cmd
    }

    /// psql over the unix socket as `postgres` (trust).
    fn psql_base(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db]);
        cmd
    }

    /// Each of `commands` on its own (not one transaction).
    fn try_psql(&self, db: &str, commands: &[&str]) -> Result<String, String> {
        let mut cmd = self.psql_base(db);
        for c in commands {
            cmd.arg("-c").arg(c);
        }
        let out = cmd.output().map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// A Debian server binary, run as the `postgres` user when we are root.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C.UTF-8")
            .current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A self-signed certificate, in the data directory (relative paths resolve there).
        let data = self.dir.path().join("data");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=127.0.0.1", "-keyout", "server.key"])
            .args(["-out", "server.crt"])
            .current_dir(&data)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for f in ["server.key", "server.crt"] {
            let path = data.join(f);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(proc) = self.proc.as_mut() {
            if proc.is_running() {
                // Fast shutdown by pid; Proc's own drop kills it if that did not work.
                let _ = Command::new("kill")
                    .arg("-INT")
                    .arg(proc.pid().to_string())
                    .status();
                proc.wait_exit(Duration::from_secs(15));
            }
        }
    }
}

/// The pids whose parent is `pid` (from /proc: no procps needed).
fn children(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == parent).then_some(child)
        })
        .collect()
}

fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pids:?} failed");
}

/// `/usr/lib/postgresql/<newest version>/bin`.
fn server_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin/postgres").exists())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let version: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((version, e.path().join("bin")))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server in {}/*/bin: run scripts/setup.sh test (Debian's postgresql)",
            root.display()
        ),
    }
}

/// Whether this process runs as root (the owner of /proc/self is the effective uid).
fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `id -u postgres` or `id -g postgres`.
fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no `postgres` user (Debian's postgresql package creates it)"))
}
