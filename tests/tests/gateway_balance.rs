//! Balancing and health through the real gateway: least-conn sends new work to the replica with
//! fewer open streams; a replica killed or stalled under load does not fail calls, is marked
//! down, and takes traffic again after it recovers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use e2e::gateway::{pool_toml, Gateway, Upstream};

const HEALTH: &str = "[pools.p.health_check]\npath = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n";

fn gateway(servers: &[String], route_extra: &str) -> Gateway {
    let body = format!(
        "{}\n{HEALTH}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\nretries = 2\nread_timeout = \"1s\"\n{route_extra}\n",
        pool_toml("p", "least_conn", servers, "max_fails = 2\nfail_timeout = \"2s\"")
    );
    Gateway::start(&body)
}

/// Open a long stream through the gateway and wait for its first byte. The reader is returned
/// too: dropping it would close curl's stdout and end the stream.
fn open_stream(gw: &Gateway) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new("curl")
        .args(["-sSN", "--cacert"])
        .arg(&gw.setup.cert)
        .arg(gw.https("/hold?ms=60000"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with(": open"), "{first:?}");
    (child, reader)
}

fn whoami(gw: &Gateway) -> String {
    let out = gw.curl_https("/whoami", &[]);
    assert_eq!(out.status, 200, "{out:?}");
    out.json()["name"].as_str().unwrap().to_string()
}

#[test]
fn least_conn_sends_new_work_to_the_replica_with_fewer_streams() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = gateway(&[a.addr(), b.addr()], "");
    let mut streams = vec![open_stream(&gw)];
    let busy = if a.stats()["open_streams"] == 1 {
        "a"
    } else {
        "b"
    };
    let idle = if busy == "a" { "b" } else { "a" };
    // While one replica holds a stream, every short call goes to the other.
    for _ in 0..10 {
        assert_eq!(whoami(&gw), idle);
    }
    // The second stream goes to the idle one; then they alternate, two each.
    streams.push(open_stream(&gw));
    assert_eq!(a.stats()["open_streams"], 1);
    assert_eq!(b.stats()["open_streams"], 1);
    streams.push(open_stream(&gw));
    streams.push(open_stream(&gw));
    assert_eq!(a.stats()["open_streams"], 2);
    assert_eq!(b.stats()["open_streams"], 2);
    let st = gw.status();
    let in_flight: Vec<i64> = st["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["in_flight"].as_i64().unwrap())
        .collect();
    assert_eq!(in_flight, vec![2, 2], "{st}");
    for (mut s, _reader) in streams {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// Run GETs from `threads` loops until stopped; returns (ok, failed) counters.
fn load(
    gw: &Gateway,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Vec<thread::JoinHandle<()>>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        let url = gw.https("/whoami");
        let cacert = gw.setup.cert.display().to_string();
        handles.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = e2e::curl(&["--cacert", &cacert, "--max-time", "10", &url]);
                if out.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("failed call: {} {}", out.status, out.body);
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    (ok, failed, handles)
}

#[test]
fn killed_replica_under_load_calls_keep_succeeding_and_it_returns() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = gateway(&[a.addr(), b.addr()], "");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, handles) = load(&gw, 4, stop.clone());
    thread::sleep(Duration::from_millis(700));
    let port = b.port;
    drop(b); // SIGKILL
    gw.wait_status("b marked down", Duration::from_secs(10), |_| {
        gw.backend_status("p", port)
            .is_some_and(|s| s["up"] == false)
    });
    thread::sleep(Duration::from_millis(500));
    // Recovery: a new process on the same address passes `rise` checks and gets traffic.
    let b2 = Upstream::start_on("b2", port, "normal");
    gw.wait_status("b back up", Duration::from_secs(10), |_| {
        gw.backend_status("p", port)
            .is_some_and(|s| s["up"] == true)
    });
    thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed while a replica died"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert!(
        b2.stats()["requests"].as_i64().unwrap() > 0,
        "recovered replica got no traffic"
    );
    drop(a);
}

#[test]
fn stalled_replica_under_load_is_marked_down_and_loses_its_share() {
    let a = Upstream::start("a");
    let stalled = Upstream::start_stall("stalled");
    let gw = gateway(&[a.addr(), stalled.addr()], "");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, handles) = load(&gw, 4, stop.clone());
    // The active check's timeout fails it (it accepts TCP but never answers).
    gw.wait_status(
        "stalled replica marked down",
        Duration::from_secs(10),
        |_| {
            gw.backend_status("p", stalled.port)
                .is_some_and(|s| s["active_check_up"] == false && s["up"] == false)
        },
    );
    let before = ok.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(1));
    assert!(
        ok.load(Ordering::Relaxed) > before,
        "no call succeeded after the stall was detected"
    );
    // Replace the stalled process with a healthy one on the same port: it comes back.
    let port = stalled.port;
    drop(stalled);
    let healed = Upstream::start_on("healed", port, "normal");
    gw.wait_status("healed replica up", Duration::from_secs(10), |_| {
        gw.backend_status("p", port)
            .is_some_and(|s| s["up"] == true)
    });
    thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "GETs failed while a replica stalled"
    );
    assert!(healed.stats()["requests"].as_i64().unwrap() > 0);
    // Retries were counted.
    let metrics = e2e::curl(&[&gw.admin("/metrics")]).body;
    assert!(
        metrics.contains("gateway_retries_total{pool=\"p\"}"),
        "{metrics}"
    );
    drop(a);
}

#[test]
fn hash_keeps_a_client_on_one_replica_and_round_robin_alternates() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let servers = format!("\"{}\", \"{}\"", a.addr(), b.addr());
    let body = format!(
        "[pools.h]\nbalance = \"hash\"\nhash_key = \"header:X-Client\"\nservers = [{servers}]\n\n\
         [pools.r]\nbalance = \"round_robin\"\nservers = [{servers}]\n\n\
         [[routes]]\nname = \"hash\"\npath = \"/\"\npool = \"h\"\n\n\
         [[routes]]\nname = \"rr\"\npath = \"/\"\nhost = \"rr.test\"\npool = \"r\"\n"
    );
    let gw = Gateway::start(&body);
    let mut owners = std::collections::HashMap::new();
    for client in 0..16 {
        let header = format!("X-Client: client-{client}");
        let first = gw.curl_https("/whoami", &["-H", &header]).json()["name"].clone();
        // The legacy SSE transport's GET /sse and POST /messages of one client stay together.
        for _ in 0..3 {
            assert_eq!(
                gw.curl_https("/echo", &["-H", &header]).json()["name"],
                first
            );
        }
        owners.insert(client, first);
    }
    let on_a = owners.values().filter(|n| *n == "a").count();
    assert!(
        on_a > 0 && on_a < 16,
        "hash sent every client to one replica: {owners:?}"
    );
    let names: Vec<String> = (0..4)
        .map(|_| {
            gw.curl_https("/whoami", &["-H", "Host: rr.test"]).json()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_ne!(names[0], names[1], "{names:?}");
    assert_eq!(names[0], names[2], "{names:?}");
}
