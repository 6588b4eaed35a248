//! `gateway -d`: runs in the background like nginx's default, writes its pid file, serves,
//! and is controlled with `gateway -s reload|stop -c FILE` through that pid file.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::gateway::{pool_toml, GatewaySetup, Upstream};
use e2e::{bin, curl, http_get_status};

/// Kills the daemon by the pid from its pid file if the test fails half-way.
struct DaemonGuard(Option<u32>);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .arg("-0")
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        // A zombie still answers kill -0: look at its state too.
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(false)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gateway(args: &[&str], setup: &GatewaySetup) -> std::process::Output {
    Command::new(bin("gateway"))
        .args(args)
        .arg("-c")
        .arg(&setup.config_path)
        .output()
        .expect("run gateway")
}

#[test]
fn daemon_writes_its_pid_file_serves_reloads_and_stops() {
    let up = Upstream::start("daemon-up");
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"up\"\n",
        pool_toml("up", "round_robin", &[up.addr()], "")
    );
    // Without an error log, -d is refused: a daemon has no terminal to log to.
    let bare = GatewaySetup::new(&body, "");
    let out = gateway(&["-d"], &bare);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[server].error_log"), "{err}");

    let setup = GatewaySetup::new(&body, "error_log = \"error.log\"");
    let error_log = setup.dir.path().join("error.log");
    let pid_file = setup.dir.path().join("gateway.pid");
    let mut guard = DaemonGuard(None);

    // The launcher returns once the daemon is on its own; the daemon keeps serving.
    let out = gateway(&["-d"], &setup);
    assert!(
        out.status.success(),
        "gateway -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the pid file", Duration::from_secs(15), || {
        fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .is_some()
    });
    let pid: u32 = fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    guard.0 = Some(pid);
    assert!(
        alive(pid),
        "the pid in the pid file is not a running process"
    );
    wait_until("the admin port", Duration::from_secs(15), || {
        http_get_status(setup.admin_port, "/healthz") == Some(200)
    });
    let r = curl(&[
        "--cacert",
        setup.cert.to_str().expect("utf-8 path"),
        &format!("https://localhost:{}/whoami", setup.https_port),
    ]);
    assert_eq!(r.status, 200, "{r:?}");

    // Reload through the pid file: the generation goes up and the daemon stays the same process.
    let generation = || {
        let m = curl(&[&format!("http://127.0.0.1:{}/metrics", setup.admin_port)]);
        m.body
            .lines()
            .find(|l| l.starts_with("gateway_config_generation "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = generation();
    let out = gateway(&["-s", "reload"], &setup);
    assert!(
        out.status.success(),
        "-s reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the reload", Duration::from_secs(10), || {
        generation() > before
    });
    assert!(alive(pid));

    // Stop through the pid file: the process goes away and the ports close.
    let out = gateway(&["-s", "stop"], &setup);
    assert!(
        out.status.success(),
        "-s stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the daemon to exit", Duration::from_secs(40), || {
        !alive(pid)
    });
    guard.0 = None;
    assert_eq!(http_get_status(setup.admin_port, "/healthz"), None);
    // Its log went to the error log file, reload included.
    let log = fs::read_to_string(&error_log).unwrap_or_default();
    assert!(log.contains("reload"), "error log:\n{log}");
}
