//! Starting the real `gateway` binary for end-to-end tests: a self-signed certificate made with
//! openssl in a temp dir, a config written from the pools/routes a test gives, free ports, and
//! purpose-built Python upstreams (tests/python/upstreams.py: SSE/NDJSON emitters with a given
//! spacing, a stall server, /whoami, /echo, /hold) as real peers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{bin, free_port, http_get_status, repo_root, wait_for_port, Proc};

/// A self-signed certificate for `localhost` and 127.0.0.1 in `dir` (cert.pem, key.pem).
pub fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Ports and files of one gateway instance (kept when restarting for an upgrade).
pub struct GatewaySetup {
    pub dir: TempDir,
    pub http_port: u16,
    pub https_port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub cert: PathBuf,
}

impl GatewaySetup {
    /// A config with the three listeners and `body` (pools, routes, extra sections) appended.
    /// `server_extra` lines go into `[server]`.
    pub fn new(body: &str, server_extra: &str) -> GatewaySetup {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = make_cert(dir.path());
        // free_port() can hand out the same just-released port twice: insist on three.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let (http_port, https_port, admin_port) = (ports[0], ports[1], ports[2]);
        let d = dir.path().display();
        let config = format!(
            r#"[server]
threads = 2
pid_file = "{d}/gateway.pid"
upgrade_sock = "{d}/upgrade.sock"
access_log = "{d}/access.log"
{server_extra}

[listeners.http]
address = "127.0.0.1:{http_port}"
https_port = {https_port}

[listeners.https]
address = "127.0.0.1:{https_port}"
cert = "{cert}"
key = "{key}"

[listeners.admin]
address = "127.0.0.1:{admin_port}"

{body}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let config_path = dir.path().join("gateway.toml");
        fs::write(&config_path, config).expect("write config");
        GatewaySetup {
            dir,
            http_port,
            https_port,
            admin_port,
            config_path,
            cert,
        }
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

pub struct Gateway {
    pub proc: Proc,
    pub setup: GatewaySetup,
}

impl Gateway {
    pub fn start(body: &str) -> Gateway {
        Gateway::start_setup(GatewaySetup::new(body, ""))
    }

    pub fn start_setup(setup: GatewaySetup) -> Gateway {
        let proc = spawn_gateway(&setup, &[]);
        let mut gw = Gateway { proc, setup };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if !self.proc.is_running() {
                self.proc.fail("gateway exited during start-up");
            }
            if http_get_status(self.setup.admin_port, "/healthz") == Some(200)
                && wait_for_port(self.setup.https_port, Duration::from_millis(100))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc.fail("gateway did not come up within 15 s");
    }

    pub fn https(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.setup.https_port)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.setup.http_port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.setup.admin_port)
    }

    /// curl against the HTTPS listener, trusting the test certificate.
    pub fn curl_https(&self, path: &str, extra: &[&str]) -> crate::CurlOut {
        let url = self.https(path);
        let cacert = self.setup.cert.display().to_string();
        let mut args = vec!["--cacert", cacert.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        crate::curl(&args)
    }

    /// A JSON-RPC POST to /mcp over TLS (revision 2025-11-25 headers), plus `extra` curl args.
    pub fn mcp_post(&self, extra: &[&str], body: &str) -> crate::CurlOut {
        let mut args = vec![
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "-H",
            "mcp-protocol-version: 2025-11-25",
            "--data-binary",
            body,
        ];
        args.extend_from_slice(extra);
        self.curl_https("/mcp", &args)
    }

    /// The admin /status document.
    pub fn status(&self) -> serde_json::Value {
        crate::curl(&[&self.admin("/status")]).json()
    }

    /// Backend entry of /status for `port` in `pool`.
    pub fn backend_status(&self, pool: &str, port: u16) -> Option<serde_json::Value> {
        let st = self.status();
        st["pools"].as_array()?.iter().find(|p| p["name"] == pool)?["backends"]
            .as_array()?
            .iter()
            .find(|b| {
                b["address"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&format!(":{port}")))
            })
            .cloned()
    }

    /// Wait until `cond` on /status holds (health changes are asynchronous).
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status();
            if cond(&st) {
                return;
            }
            if Instant::now() > deadline {
                self.proc
                    .fail(&format!("timed out waiting for {what}; /status: {st}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Start the gateway binary on `setup` with extra arguments (e.g. `-u`).
pub fn spawn_gateway(setup: &GatewaySetup, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("gateway"));
    cmd.arg("-c").arg(&setup.config_path).args(extra);
    cmd.env("RUST_LOG", "info");
    Proc::spawn("gateway", cmd)
}

/// A purpose-built Python upstream (tests/python/upstreams.py).
pub struct Upstream {
    pub proc: Proc,
    pub port: u16,
    pub name: String,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Upstream::start_on(name, free_port(), "normal")
    }

    /// Accepts TCP connections and never answers.
    pub fn start_stall(name: &str) -> Upstream {
        Upstream::start_on(name, free_port(), "stall")
    }

    pub fn start_on(name: &str, port: u16, mode: &str) -> Upstream {
        let script = repo_root().join("tests/python/upstreams.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", &port.to_string(), "--name", name, "--mode", mode]);
        let mut proc = Proc::spawn(&format!("upstream-{name}"), cmd);
        if !wait_for_port(port, Duration::from_secs(10)) {
            let _ = proc.is_running();
            proc.fail("upstream did not listen");
        }
        Upstream {
            proc,
            port,
            name: name.to_string(),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The upstream's own counters (/stats), read directly, not through the gateway.
    pub fn stats(&self) -> serde_json::Value {
        crate::curl(&[&format!("http://127.0.0.1:{}/stats", self.port)]).json()
    }
}

/// A `[pools.NAME]` section over `servers` with an active health check.
pub fn pool_toml(name: &str, balance: &str, servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[pools.{name}]\nbalance = \"{balance}\"\nservers = [{}]\n{extra}\n",
        list.join(", ")
    )
}

impl Gateway {
    /// Poll `cond` until it holds; past `timeout`, fail with the gateway log and /status.
    pub fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > deadline {
                let st = crate::curl(&[&self.admin("/status")]).body;
                self.proc
                    .fail(&format!("timed out waiting for {what}; /status: {st}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How a [`CountingPeer`] treats what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// Reads requests and never answers (a hung replica): every connection stays open until
    /// the gateway gives up on it.
    Stall,
    /// Answers health checks 503 and closes every other connection without an answer (the
    /// address of a dead replica that something unhealthy took over).
    Unhealthy,
    /// Answers every request `200 ok` on a kept-alive connection and records who closed each
    /// connection and when ([`CountingPeer::connections`]); with `close_idle_after` it closes a
    /// connection left idle that long, as a backend with a short keep-alive timeout does.
    KeepAlive { close_idle_after: Option<Duration> },
}

/// What a [`CountingPeer`] has received so far.
#[derive(Default)]
struct PeerCounts {
    health_checks: usize,
    requests: usize,
    /// One per connection, in accept order: kept in [`PeerMode::KeepAlive`] only.
    connections: Vec<PeerConn>,
}

/// What a [`CountingPeer`] in [`PeerMode::KeepAlive`] saw of one connection.
#[derive(Clone, Debug)]
pub struct PeerConn {
    pub requests: usize,
    pub last_response: Instant,
    /// When the gateway closed it (the peer read end of stream while it was idle).
    pub closed_by_gateway: Option<Instant>,
    /// When the peer closed it itself, after `close_idle_after` without a request.
    pub closed_by_peer: Option<Instant>,
}

/// A peer in the test process on 127.0.0.1:`port` that counts every HTTP request that reaches
/// it, health checks (`/healthz`) apart, so a test can tell whether the gateway still sends
/// traffic to a replica it reports down (retries would hide that from clients). It serves
/// nothing but in [`PeerMode::KeepAlive`]. Stops listening and closes its connections on drop.
pub struct CountingPeer {
    pub port: u16,
    counts: std::sync::Arc<std::sync::Mutex<PeerCounts>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl CountingPeer {
    pub fn start(port: u16, mode: PeerMode) -> CountingPeer {
        use std::sync::{atomic::AtomicBool, Arc, Mutex};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("counting peer cannot listen on 127.0.0.1:{port}: {e}"));
        let counts = Arc::new(Mutex::new(PeerCounts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (counts2, stop2, conns2) = (counts.clone(), stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(clone) = stream.try_clone() {
                    conns2.lock().unwrap_or_else(|e| e.into_inner()).push(clone);
                }
                let counts = counts2.clone();
                std::thread::spawn(move || peer_connection(stream, mode, &counts));
            }
        });
        CountingPeer {
            port,
            counts,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests other than health checks received so far.
    pub fn requests(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
    }

    /// Health checks (`/healthz`) received so far.
    pub fn health_checks(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .health_checks
    }

    /// The connections accepted so far, in order ([`PeerMode::KeepAlive`]).
    pub fn connections(&self) -> Vec<PeerConn> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .clone()
    }
}

/// Read requests from one connection, counting each as its head arrives.
fn peer_connection(
    stream: std::net::TcpStream,
    mode: PeerMode,
    counts: &std::sync::Mutex<PeerCounts>,
) {
    use std::io::{BufReader, Read, Write};
    let lock = || counts.lock().unwrap_or_else(|e| e.into_inner());
    let (Ok(mut writer), Ok(probe)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let keepalive = match mode {
        PeerMode::KeepAlive { close_idle_after } => {
            let mut c = lock();
            c.connections.push(PeerConn {
                requests: 0,
                last_response: Instant::now(),
                closed_by_gateway: None,
                closed_by_peer: None,
            });
            Some((c.connections.len() - 1, close_idle_after))
        }
        _ => None,
    };
    let mut reader = BufReader::new(stream);
    loop {
        if let Some((index, close_idle_after)) = keepalive {
            // Requests come one at a time, so nothing is left in the reader's buffer here: a
            // peek on the socket says whether the next one comes, the gateway closed, or the
            // idle wait ran out.
            let _ = probe.set_read_timeout(close_idle_after);
            match probe.peek(&mut [0u8; 1]) {
                Ok(0) => {
                    lock().connections[index].closed_by_gateway = Some(Instant::now());
                    return;
                }
                Ok(_) => {}
                Err(_) => {
                    lock().connections[index].closed_by_peer = Some(Instant::now());
                    let _ = writer.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        }
        let Some(head) = crate::http1::read_head(&mut reader) else {
            return;
        };
        let (path, body_len) = (head.path.as_str(), head.content_length());
        let health = path == "/healthz" || path.starts_with("/healthz?");
        {
            let mut c = lock();
            if health {
                c.health_checks += 1;
            } else {
                c.requests += 1;
            }
        }
        let mut body = vec![0u8; body_len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match (mode, keepalive) {
            (PeerMode::Unhealthy, _) => {
                if health {
                    let _ = writer.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            (_, Some((index, _))) => {
                let ok =
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
                if writer.write_all(ok).is_err() {
                    return;
                }
                let mut c = lock();
                c.connections[index].requests += 1;
                c.connections[index].last_response = Instant::now();
            }
            _ => {}
        }
    }
}

impl Drop for CountingPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees `stop` and drops the listener.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for c in self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}
