//! `gateway -s reload -c FILE` as an nginx operator uses it: a reload makes the running gateway
//! re-read the file it runs from, so a reload naming another file is refused with both names
//! (it used to exit 0 while nothing of FILE applied); the same file through a symlink reloads;
//! `-s` without `-c` says the default file was read; a pid file left by a stopped gateway says
//! that no gateway is running.

use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::gateway::{pool_toml, Gateway, GatewaySetup, Upstream};
use e2e::{bin, curl};

fn gateway(args: &[&str]) -> Output {
    Command::new(bin("gateway"))
        .args(args)
        .output()
        .expect("run gateway")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn generation(gw: &Gateway) -> f64 {
    curl(&[&gw.admin("/metrics")])
        .body
        .lines()
        .find(|l| l.starts_with("gateway_config_generation "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn wait_generation(gw: &Gateway, above: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(gw) <= above {
        if Instant::now() > deadline {
            gw.proc.fail(&format!("the generation stayed at {above}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_names_the_running_file_and_refuses_another() {
    let up = Upstream::start("signal-up");
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"up\"\n",
        pool_toml("up", "round_robin", &[up.addr()], "")
    );
    let setup = GatewaySetup::new(&body, "");
    let running = setup.config_path.clone();
    // Another valid file with the same pid file, as conf/examples/canary.toml shares make run's
    // run/gateway.pid with conf/local.toml.
    let other = setup.dir.path().join("canary.toml");
    let text = fs::read_to_string(&running).expect("read config");
    fs::write(
        &other,
        text.replace("name = \"all\"", "name = \"everything\""),
    )
    .expect("write");
    let link = setup.dir.path().join("current.toml");
    std::os::unix::fs::symlink(&running, &link).expect("symlink");
    let (running_s, other_s, link_s) = (
        running.display().to_string(),
        other.display().to_string(),
        link.display().to_string(),
    );
    let mut gw = Gateway::start_setup(setup);

    // The other file is valid (-t passes) but is not what the gateway runs: refused, both named.
    let t = gateway(&["-t", "-c", &other_s]);
    assert!(t.status.success(), "{}", stderr(&t));
    let out = gateway(&["-s", "reload", "-c", &other_s]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not reloading"), "{err}");
    assert!(err.contains(&running_s) && err.contains(&other_s), "{err}");
    assert!(gw.proc.is_running());

    // Its own file, by path and through a symlink: reloaded.
    for file in [&running_s, &link_s] {
        let before = generation(&gw);
        let out = gateway(&["-s", "reload", "-c", file]);
        assert!(
            out.status.success(),
            "-s reload -c {file}: {}",
            stderr(&out)
        );
        wait_generation(&gw, before);
    }

    // No -c: the default file is read, and the message says to name one.
    if !std::path::Path::new("/etc/gateway/gateway.toml").exists() {
        let out = gateway(&["-s", "reload"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("no -c FILE given"), "{err}");
    }

    // Stopped, the gateway leaves its pid file behind: the signaller says nobody runs.
    gw.proc.signal("TERM");
    assert!(
        gw.proc.wait_exit(Duration::from_secs(40)).is_some(),
        "the gateway did not exit"
    );
    let out = gateway(&["-s", "reload", "-c", &running_s]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no gateway is running as pid"), "{err}");
    assert!(err.contains("stale pid file"), "{err}");
}
