//! Harness for the end-to-end tests: start the real release binaries on free
//! loopback ports, talk to them with real clients (curl, openssl), and stop
//! them by pid when the test ends (also when it panics).
//!
//! The binaries are built by `cargo build --release --workspace --bins`
//! (`make test` does that first); tests never build them themselves.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a release binary of this workspace.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("release").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// True once something accepts TCP connections on 127.0.0.1:port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process whose stdout and stderr go to a log file; killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir for log");
        let log_path = dir.path().join(format!("{name}.log"));
        let log = fs::File::create(&log_path).expect("create log");
        let log2 = log.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log_path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name ("TERM", "HUP", "KILL", "STOP", "CONT", "QUIT").
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panic with the process log attached.
    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n--- {} log ---\n{}", self.name, self.log())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

/// Copy a directory tree (files and dirs; symlinks are recreated as symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let ty = entry.file_type().expect("file type");
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if ty.is_symlink() {
            let target = fs::read_link(entry.path()).expect("read link");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
        } else {
            fs::copy(entry.path(), &dest).expect("copy file");
        }
    }
}

/// A private copy of the example OpenSpec project (examples/workspace), so a
/// test may archive and tick tasks without touching the repository.
/// The returned dir is the project root; the OpenSpec tree is `<root>/openspec`.
pub fn workspace_copy() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&repo_root().join("examples/workspace"), dir.path());
    dir
}

/// A running backend replica on a free port.
pub struct Backend {
    pub proc: Proc,
    pub port: u16,
    pub url: String,
}

impl Backend {
    /// Start `backend` over `workspace` with extra environment, and wait until
    /// /healthz answers.
    pub fn start(workspace: &Path, env: &[(&str, &str)]) -> Backend {
        let port = free_port();
        let mut cmd = Command::new(bin("backend"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("WORKING_DIRECTORY", workspace)
            .env("LOG_LEVEL", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(&format!("backend:{port}"), cmd);
        let url = format!("http://127.0.0.1:{port}");
        let mut backend = Backend { proc, port, url };
        backend.wait_ready();
        backend
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if !self.proc.is_running() {
                self.proc.fail("backend exited during start-up");
            }
            if http_get_status(self.port, "/healthz") == Some(200) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.proc
            .fail("backend did not answer /healthz within 15 s");
    }
}

/// Minimal HTTP/1.1 GET on loopback returning the status code, for readiness
/// polling without spawning curl in a loop.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    use std::io::Write;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// What curl saw: status, headers of the final response, body.
#[derive(Debug)]
pub struct CurlOut {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub http_version: String,
    pub exit_code: i32,
    pub stderr: String,
}

impl CurlOut {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Run curl with `args` (URL included) and capture status, headers and body.
/// `-sS` is always added; pass `-k`, `--http2`, `-X`, `-H`, `-d` as needed.
pub fn curl(args: &[&str]) -> CurlOut {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .arg("-sS")
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .arg("-w")
        .arg("%{http_code} %{http_version}")
        .args(args)
        .output()
        .expect("run curl");
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = written.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = parts.next().unwrap_or("").to_string();
    let head_text = fs::read_to_string(&head).unwrap_or_default();
    // With redirects or 100-continue there are several header blocks: keep the last.
    let last_block = head_text
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = last_block
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    CurlOut {
        status,
        headers,
        body: fs::read_to_string(&body).unwrap_or_default(),
        http_version,
        exit_code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}
pub mod gateway;
pub mod http1;
pub mod otlp;
pub mod postgres;
pub mod stores;
pub mod tool_calls;

/// A body (not necessarily JSON) POSTed to `url` as an MCP Streamable HTTP client sends it:
/// JSON content type, accepting JSON and SSE, with `MCP-Protocol-Version` when given.
pub fn mcp_post(url: &str, version: Option<&str>, extra: &[&str], body: &str) -> CurlOut {
    let mut args = vec![
        "-X",
        "POST",
        url,
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "--data-binary",
        body,
    ];
    let header;
    if let Some(v) = version {
        header = format!("mcp-protocol-version: {v}");
        args.extend_from_slice(&["-H", &header]);
    }
    args.extend_from_slice(extra);
    curl(&args)
}
