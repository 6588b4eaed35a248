//! The process: SIGTERM drains a stream in flight and exits 0 without waiting the whole grace
//! period; Pingora's graceful upgrade (`gateway -u` + SIGQUIT to the old one) keeps serving;
//! SIGHUP reloads the routes, and an invalid file changes nothing; --help, --version.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use e2e::gateway::{pool_toml, spawn_gateway, Gateway, GatewaySetup, Upstream};
use e2e::{bin, http_get_status};

fn routes(up: &Upstream) -> String {
    format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\n",
        pool_toml("p", "least_conn", &[up.addr()], "")
    )
}

#[test]
fn sigterm_drains_an_open_stream_then_exits() {
    let up = Upstream::start("d");
    let mut gw = Gateway::start_setup(GatewaySetup::new(&routes(&up), "grace_period = \"60s\""));
    let mut child = Command::new("curl")
        .args(["-sSN", "--cacert"])
        .arg(&gw.setup.cert)
        .arg(gw.https("/sse?n=6&gap_ms=500"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("data: "), "{first}");
    gw.proc.signal("TERM");
    // New connections are refused once listeners close.
    thread::sleep(Duration::from_millis(500));
    let refused = e2e::curl(&[
        "--cacert",
        &gw.setup.cert.display().to_string(),
        "--max-time",
        "2",
        &gw.https("/whoami"),
    ]);
    assert_ne!(
        refused.status, 200,
        "a new request was served after SIGTERM"
    );
    // The stream in flight runs to its end.
    let rest: Vec<String> = lines
        .map_while(Result::ok)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(rest.len(), 5, "stream cut during drain: {rest:?}");
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| gw.proc.fail("no exit after drain"));
    assert!(status.success(), "exit status {status:?}");
    let _ = child.wait();
}

#[test]
fn graceful_upgrade_hands_over_without_failed_requests() {
    let up = Upstream::start("u");
    let mut old = Gateway::start_setup(GatewaySetup::new(&routes(&up), "grace_period = \"10s\""));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = old.https("/whoami");
        let cacert = old.setup.cert.display().to_string();
        handles.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = e2e::curl(&["--cacert", &cacert, "--max-time", "5", &url]);
                if out.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("failed: {out:?}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    thread::sleep(Duration::from_millis(500));
    // The documented sequence: start the new binary with -u, then SIGQUIT the old one.
    let mut new = spawn_gateway(&old.setup, &["-u"]);
    thread::sleep(Duration::from_millis(500));
    old.proc.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get_status(old.setup.admin_port, "/healthz") != Some(200) || !new.is_running() {
        assert!(Instant::now() < deadline, "new gateway not serving");
        thread::sleep(Duration::from_millis(100));
    }
    let status = old.proc.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "old process did not exit cleanly: {status:?}"
    );
    let served_before = ok.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert!(new.is_running(), "new gateway died: {}", new.log());
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the upgrade"
    );
    assert!(
        ok.load(Ordering::Relaxed) > served_before,
        "nothing served after the handover"
    );
}

#[test]
fn sighup_reloads_routes_and_rejects_a_broken_file() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&routes(&a));
    assert_eq!(gw.curl_https("/whoami", &[]).json()["name"], "a");
    let text = std::fs::read_to_string(&gw.setup.config_path).unwrap();
    let extra = format!(
        "\n{}\n[[routes]]\nname = \"b\"\npath = \"/whoami\"\npool = \"q\"\n",
        pool_toml("q", "least_conn", &[b.addr()], "")
    );
    std::fs::write(&gw.setup.config_path, format!("{text}{extra}")).unwrap();
    gw.proc.signal("HUP");
    gw.wait_status("generation 2", Duration::from_secs(10), |st| {
        st["generation"] == 2
    });
    assert_eq!(gw.curl_https("/whoami", &[]).json()["name"], "b");
    // A broken file is refused; the running routes stay.
    std::fs::write(
        &gw.setup.config_path,
        format!("{text}{extra}\n[[routes]]\npath = 12\n"),
    )
    .unwrap();
    gw.proc.signal("HUP");
    thread::sleep(Duration::from_millis(800));
    assert_eq!(gw.status()["generation"], 2);
    assert_eq!(gw.curl_https("/whoami", &[]).json()["name"], "b");
    assert!(
        gw.proc.log().contains("reload refused"),
        "{}",
        gw.proc.log()
    );
    let metrics = e2e::curl(&[&gw.admin("/metrics")]).body;
    assert!(
        metrics.contains("gateway_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_config_generation 2"), "{metrics}");
}

#[test]
fn help_and_version() {
    let out = Command::new(bin("gateway")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-t") && text.contains("-u") && text.contains("SIGQUIT"),
        "{text}"
    );
    let out = Command::new(bin("gateway"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gateway "));
    let out = Command::new(bin("gateway"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert!(!out.status.success());
}
