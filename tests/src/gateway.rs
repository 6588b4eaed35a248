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
