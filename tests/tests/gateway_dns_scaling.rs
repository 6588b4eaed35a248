//! DNS re-resolution through the real gateway: replicas that appear in or vanish from a
//! name's answer (a compose `--scale`) join and leave the pool without a restart, and a failed
//! lookup keeps the last good set.
//!
//! The gateway runs in its own mount namespace where /etc/hosts is a bind-mounted file this test
//! rewrites, so the name `replicas.test` resolves through glibc exactly as in production, while
//! the host's /etc/hosts stays untouched. Replicas are real `backend` processes on the same port
//! of different loopback addresses (127.0.0.2, 127.0.0.3: all of 127/8 is loopback on Linux).
//! Needs root and util-linux `unshare`; without them the test fails and says what is missing.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use e2e::gateway::{Gateway, GatewaySetup};
use e2e::{bin, free_port, http_get_status, wait_for_port, workspace_copy, Proc};

const NAME: &str = "replicas.test";
/// Generous bound for anything asynchronous (a 1 s resolve tick plus a loaded 2-core box).
const DEADLINE: Duration = Duration::from_secs(20);

/// One `backend` replica on `ip:port`.
struct Replica {
    proc: Proc,
    addr: SocketAddr,
}

impl Replica {
    fn start(ip: &str, port: u16, workspace: &Path) -> Replica {
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("replica address");
        let mut cmd = Command::new(bin("backend"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("HOST", ip)
            .env("WORKING_DIRECTORY", workspace)
            .env("LOG_LEVEL", "info");
        let mut proc = Proc::spawn(&format!("backend@{addr}"), cmd);
        let deadline = Instant::now() + Duration::from_secs(15);
        while get(addr, "/healthz").map(|r| r.0) != Some(200) {
            if !proc.is_running() {
                proc.fail("backend exited during start-up");
            }
            if Instant::now() > deadline {
                proc.fail("backend did not answer /healthz within 15 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Replica { proc, addr }
    }

    /// GET /tools requests this replica served, from its own /metrics (not through the gateway).
    fn tools_served(&self) -> u64 {
        let Some((200, text)) = get(self.addr, "/metrics") else {
            self.proc.fail("replica /metrics did not answer 200");
        };
        text.lines()
            .filter(|l| l.starts_with("http_server_requests_total{") && l.contains("/tools"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// Minimal HTTP/1.1 GET to any loopback address: (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Rewrite the hosts file in place (truncate + one write): the bind mount pins the inode, so a
/// rename would leave the gateway reading the old file. One write() also means a concurrent
/// reader sees either an empty file (a failed lookup, which keeps the last set) or the whole one.
fn write_hosts(path: &Path, ips: &[&str]) {
    let mut text = String::from("127.0.0.1 localhost\n");
    for ip in ips {
        text.push_str(&format!("{ip} {NAME}\n"));
    }
    fs::write(path, text).expect("rewrite hosts file");
}

/// Whether this box lets us bind-mount over /etc/hosts in a private mount namespace.
fn namespaces_usable(dir: &Path) -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not running as root".into());
    }
    let probe = dir.join("probe-hosts");
    fs::write(&probe, "127.0.0.9 probe.test\n").map_err(|e| e.to_string())?;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && cat /etc/hosts")
        .arg("sh")
        .arg(&probe)
        .output()
        .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("probe.test") {
        return Err(format!(
            "unshare/mount --bind failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The gateway inside its own mount namespace, seeing `hosts` as /etc/hosts.
fn start_gateway(setup: GatewaySetup, hosts: &Path) -> Gateway {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        // `exec` keeps one pid (unshare execs sh, sh execs the gateway): Proc's kill reaches it.
        .arg("mount --bind \"$1\" /etc/hosts && exec \"$2\" -c \"$3\"")
        .arg("sh")
        .arg(hosts)
        .arg(bin("gateway"))
        .arg(&setup.config_path)
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn("gateway", cmd);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if !proc.is_running() {
            proc.fail("gateway exited during start-up");
        }
        if http_get_status(setup.admin_port, "/healthz") == Some(200)
            && wait_for_port(setup.https_port, Duration::from_millis(100))
        {
            break;
        }
        if Instant::now() > deadline {
            proc.fail("gateway did not come up within 15 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Gateway { proc, setup }
}

/// Backend addresses /status lists for the pool, sorted.
fn pool_addresses(st: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = st["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "replicas"))
        .and_then(|p| p["backends"].as_array())
        .map(|bs| {
            bs.iter()
                .filter_map(|b| b["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn wait_pool(gw: &Gateway, want: &[&Replica]) {
    let mut want: Vec<String> = want.iter().map(|r| r.addr.to_string()).collect();
    want.sort();
    gw.wait_status(&format!("pool = {want:?}"), DEADLINE, |st| {
        pool_addresses(st) == want
    });
}

/// Poll `cond` until it holds or the deadline passes.
fn wait_until(gw: &Gateway, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() > deadline {
            gw.proc.fail(&format!("timed out waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Requests through the gateway from one thread until stopped (bounded by a count cap too).
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(gw: &Gateway) -> Load {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok2, failed2, stop2) = (ok.clone(), failed.clone(), stop.clone());
        let url = gw.https("/tools");
        let cacert = gw.setup.cert.display().to_string();
        let handle = thread::spawn(move || {
            let mut failures = Vec::new();
            for _ in 0..20_000 {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let out = e2e::curl(&["--cacert", &cacert, "--max-time", "10", &url]);
                if out.status == 200 {
                    ok2.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed2.fetch_add(1, Ordering::Relaxed);
                    failures.push(format!("{} {} {}", out.status, out.body, out.stderr));
                }
            }
            failures
        });
        Load {
            ok,
            failed,
            stop,
            handle: Some(handle),
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Wait until `n` more requests have succeeded.
    fn wait_more(&self, gw: &Gateway, n: usize) {
        let target = self.ok() + n;
        wait_until(gw, &format!("{n} more successful requests"), || {
            self.ok() >= target
        });
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .handle
            .take()
            .map(|h| h.join().expect("load thread"))
            .unwrap_or_default();
        (self.failed.load(Ordering::Relaxed), failures)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn replicas_join_and_leave_the_pool_as_dns_changes_and_a_failed_lookup_keeps_the_last_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A test that cannot run fails: passing without having checked anything would hide it.
    if let Err(why) = namespaces_usable(dir.path()) {
        panic!(
            "gateway_dns_scaling cannot run: it needs root and unshare(1) from util-linux to \
             make a private /etc/hosts (a mount namespace with a file bind-mounted over it): {why}"
        );
    }
    let workspace = workspace_copy();
    let port = free_port();
    let r2 = Replica::start("127.0.0.2", port, workspace.path());
    let r3 = Replica::start("127.0.0.3", port, workspace.path());

    let hosts = dir.path().join("hosts");
    write_hosts(&hosts, &["127.0.0.2"]);
    let body = format!(
        "[pools.replicas]\nbalance = \"round_robin\"\nservers = [\"{NAME}:{port}\"]\n\
         resolve_interval = \"1s\"\n\n\
         [pools.replicas.health_check]\npath = \"/healthz\"\ninterval = \"300ms\"\n\
         timeout = \"1s\"\nrise = 1\nfall = 2\n\n\
         [[routes]]\nname = \"all\"\npath = \"/\"\npool = \"replicas\"\nretries = 2\n"
    );
    let gw = start_gateway(GatewaySetup::new(&body, ""), &hosts);

    // 1. One address for the name: one backend, and it gets all the traffic.
    wait_pool(&gw, &[&r2]);
    let load = Load::start(&gw);
    load.wait_more(&gw, 20);
    // The replica counts a request once its response is fully written, a moment after the
    // client has read it: wait for its counter rather than reading it once.
    wait_until(&gw, "the only replica to count the traffic", || {
        r2.tools_served() >= 20
    });
    assert_eq!(
        r3.tools_served(),
        0,
        "a replica not in DNS got traffic; /status: {}",
        gw.status()
    );

    // 2. Scale up: a second address joins without a restart and takes a share.
    write_hosts(&hosts, &["127.0.0.2", "127.0.0.3"]);
    wait_pool(&gw, &[&r2, &r3]);
    let before2 = r2.tools_served();
    wait_until(&gw, "the new replica to take traffic", || {
        r3.tools_served() >= 10
    });
    wait_until(&gw, "the first replica to keep its share", || {
        r2.tools_served() >= before2 + 10
    });

    // 3. Scale down: the first address leaves the pool (still running, so only DNS moved it).
    write_hosts(&hosts, &["127.0.0.3"]);
    wait_pool(&gw, &[&r3]);
    // Let a request picked just before the swap land before taking the snapshot.
    load.wait_more(&gw, 5);
    let gone = r2.tools_served();
    let before3 = r3.tools_served();
    load.wait_more(&gw, 20);
    wait_until(&gw, "the remaining replica to count the traffic", || {
        r3.tools_served() >= before3 + 20
    });
    assert_eq!(
        r2.tools_served(),
        gone,
        "a replica removed from DNS still got traffic"
    );

    // 4. The name stops resolving: the last good set stays, requests keep succeeding.
    // Failed lookups, logged by the discovery (periodic re-resolution and reloads alike).
    let warned = |log: &str| {
        log.matches(&format!(
            "gateway::upstream::discovery] cannot resolve {NAME}:{port}"
        ))
        .count()
    };
    let warnings_before = warned(&gw.proc.log());
    write_hosts(&hosts, &[]);
    wait_until(&gw, "a failed lookup to be logged", || {
        warned(&gw.proc.log()) > warnings_before
    });
    let before3 = r3.tools_served();
    load.wait_more(&gw, 20);
    assert_eq!(
        pool_addresses(&gw.status()),
        vec![r3.addr.to_string()],
        "a failed lookup changed the pool"
    );
    wait_until(&gw, "traffic after a failed lookup", || {
        r3.tools_served() >= before3 + 20
    });
    assert!(
        gw.proc.log().contains("keeping 1 known address(es)"),
        "{}",
        gw.proc.log()
    );

    // 4b. A config reload while the name still does not resolve keeps the set too (the reload
    // re-resolves, and the new pool's DNS loop starts with no memory of its own).
    gw.proc.signal("HUP");
    gw.wait_status("the reload", DEADLINE, |st| st["generation"] == 2);
    let warnings_before = warned(&gw.proc.log());
    wait_until(&gw, "a failed lookup after the reload", || {
        warned(&gw.proc.log()) > warnings_before
    });
    let before3 = r3.tools_served();
    load.wait_more(&gw, 20);
    assert_eq!(
        pool_addresses(&gw.status()),
        vec![r3.addr.to_string()],
        "a reload during a DNS outage changed the pool"
    );
    wait_until(&gw, "traffic after a reload during a DNS outage", || {
        r3.tools_served() >= before3 + 20
    });

    // 5. The name resolves again: the returning address rejoins.
    write_hosts(&hosts, &["127.0.0.2", "127.0.0.3"]);
    wait_pool(&gw, &[&r2, &r3]);
    wait_until(&gw, "the returning replica to take traffic", || {
        r2.tools_served() > gone
    });

    let (failed, failures) = load.finish();
    assert_eq!(
        failed, 0,
        "requests failed while the pool changed: {failures:?}"
    );
    drop(r2);
    drop(r3);
}
