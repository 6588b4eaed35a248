//! Balancing and health through the real gateway: least-conn sends new work to the replica with
//! fewer open streams; a replica killed or stalled under load does not fail calls, is marked
//! down, receives no call from the moment /status reports it down (counted at its address, since
//! retries would hide misrouted calls from clients), and takes traffic again after it recovers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use e2e::free_port;
use e2e::gateway::{pool_toml, CountingPeer, Gateway, PeerMode, Upstream};

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

/// GETs of /whoami from a few threads until stopped: how many succeeded, how many failed, and
/// which replica answered (the `name` in the body) how often.
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    answered_by: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(gw: &Gateway, threads: usize) -> Load {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let answered_by = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (ok, failed, answered_by, stop) = (
                ok.clone(),
                failed.clone(),
                answered_by.clone(),
                stop.clone(),
            );
            let url = gw.https("/whoami");
            let cacert = gw.setup.cert.display().to_string();
            handles.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = e2e::curl(&["--cacert", &cacert, "--max-time", "10", &url]);
                    let name = serde_json::from_str::<serde_json::Value>(&out.body)
                        .ok()
                        .and_then(|v| v["name"].as_str().map(str::to_string));
                    match (out.status, name) {
                        (200, Some(name)) => {
                            *answered_by.lock().unwrap().entry(name).or_default() += 1;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            eprintln!("failed call: {} {} {}", out.status, out.body, out.stderr);
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Load {
            ok,
            failed,
            answered_by,
            stop,
            handles,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Calls `name` answered so far.
    fn answered_by(&self, name: &str) -> usize {
        self.answered_by
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Stop the threads; the number of failed calls.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            h.join().unwrap();
        }
        self.failed.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Generous bound for anything asynchronous on a loaded 2-core box.
const DEADLINE: Duration = Duration::from_secs(30);

/// Calls that must succeed while a replica is reported down before the test looks at what that
/// replica received: at 4 threads, several health-check intervals' worth of traffic.
const CALLS_WHILE_DOWN: usize = 40;

/// /status of the gateway reports the backend on `port` down, and its active check too (so the
/// state lasts: a passive penalty alone would expire after `fail_timeout`).
fn reported_down(gw: &Gateway, port: u16) -> bool {
    gw.backend_status("p", port)
        .is_some_and(|s| s["up"] == false && s["active_check_up"] == false)
}

fn reported_up(gw: &Gateway, port: u16) -> bool {
    gw.backend_status("p", port)
        .is_some_and(|s| s["up"] == true)
}

/// While the gateway reports `peer` down and the load goes on, the peer gets health checks and
/// nothing else: not one call after the moment /status said down. `at_down` is what it had
/// received at that moment.
fn assert_no_traffic_while_down(gw: &Gateway, load: &Load, peer: &CountingPeer, at_down: usize) {
    let ok_before = load.ok();
    let checks_before = peer.health_checks();
    gw.wait_until(
        "calls to succeed and health checks to reach the replica reported down",
        DEADLINE,
        || load.ok() >= ok_before + CALLS_WHILE_DOWN && peer.health_checks() >= checks_before + 5,
    );
    assert!(reported_down(gw, peer.port), "{}", gw.status());
    assert_eq!(
        peer.requests() - at_down,
        0,
        "the replica reported down by /status still received calls ({} calls succeeded \
         meanwhile, retries hid it from clients)",
        load.ok() - ok_before
    );
}

#[test]
fn killed_replica_under_load_calls_keep_succeeding_it_gets_nothing_while_down_and_returns() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = gateway(&[a.addr(), b.addr()], "");
    let load = Load::start(&gw, 4);
    gw.wait_until("both replicas to answer calls", DEADLINE, || {
        load.answered_by("a") >= 5 && load.answered_by("b") >= 5
    });
    let port = b.port;
    drop(b); // SIGKILL
    gw.wait_status("b marked down", DEADLINE, |_| reported_down(&gw, port));
    // From now on b's address counts what reaches it (health checks get 503, so it stays
    // down; any other request is dropped unanswered, which retries would hide from clients).
    let dead = CountingPeer::start(port, PeerMode::Unhealthy);
    assert_no_traffic_while_down(&gw, &load, &dead, 0);
    drop(dead);
    // Recovery: a new process on the same address passes `rise` checks and answers calls.
    let b2 = Upstream::start_on("b2", port, "normal");
    gw.wait_status("b back up", DEADLINE, |_| reported_up(&gw, port));
    gw.wait_until("the recovered replica to answer calls", DEADLINE, || {
        load.answered_by("b2") >= 5
    });
    assert_eq!(load.finish(), 0, "calls failed while a replica died");
    drop(b2);
    drop(a);
}

#[test]
fn stalled_replica_under_load_is_marked_down_gets_nothing_while_down_and_returns() {
    let a = Upstream::start("a");
    let stalled = CountingPeer::start(free_port(), PeerMode::Stall);
    let gw = gateway(&[a.addr(), stalled.addr()], "");
    let load = Load::start(&gw, 4);
    // The active check's timeout fails it (it accepts TCP but never answers).
    gw.wait_status("stalled replica marked down", DEADLINE, |_| {
        reported_down(&gw, stalled.port)
    });
    let at_down = stalled.requests();
    assert_no_traffic_while_down(&gw, &load, &stalled, at_down);
    // Replace the stalled peer with a healthy one on the same port: it comes back.
    let port = stalled.port;
    drop(stalled);
    let healed = Upstream::start_on("healed", port, "normal");
    gw.wait_status("healed replica up", DEADLINE, |_| reported_up(&gw, port));
    gw.wait_until("the healed replica to answer calls", DEADLINE, || {
        load.answered_by("healed") >= 5
    });
    assert_eq!(load.finish(), 0, "GETs failed while a replica stalled");
    // Calls sent to the stalled replica before it was marked down were retried, and counted.
    if at_down > 0 {
        let metrics = e2e::curl(&[&gw.admin("/metrics")]).body;
        assert!(
            metrics.contains("gateway_retries_total{pool=\"p\"}"),
            "{metrics}"
        );
    }
    drop(healed);
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

/// nginx counts a timed-out request in `max_fails` whatever connection carried it. Two reads
/// that time out on a replica mark it down, the first of them on a kept-alive connection the
/// pool handed out again (a reused connection found dead at once, on the other hand, says
/// nothing about the replica). Passive health only: no active check to mark it down instead.
#[test]
fn timeouts_on_reused_upstream_connections_count_toward_max_fails() {
    let b = Upstream::start("b");
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\nretries = 0\nread_timeout = \"500ms\"\n",
        pool_toml("p", "least_conn", &[b.addr()], "max_fails = 2\nfail_timeout = \"30s\"")
    );
    let gw = Gateway::start(&body);
    let before = b.stats()["connections"].as_u64().unwrap_or(0);
    // Sequential calls: the second and later ride the first one's pooled connection.
    for _ in 0..3 {
        assert_eq!(whoami(&gw), "b");
    }
    // The gateway's one pooled connection, and this read of /stats itself.
    let opened = b.stats()["connections"].as_u64().unwrap_or(0) - before;
    assert_eq!(opened, 2, "calls did not reuse one upstream connection");
    for i in 0..2 {
        let out = gw.curl_https("/slow?ms=1500", &[]);
        assert_eq!(out.status, 504, "slow call {i}: {out:?}");
        if i == 0 {
            assert!(
                gw.backend_status("p", b.port)
                    .is_some_and(|s| s["up"] == true),
                "one timeout marked the replica down: {}",
                gw.status()
            );
        }
    }
    assert!(
        gw.backend_status("p", b.port)
            .is_some_and(|s| s["up"] == false),
        "two timeouts (max_fails = 2) left the replica up: {}",
        gw.status()
    );
}

/// A [`PeerMode::KeepAlive`] peer, and below a gateway in front of it with no health check (its
/// connections would be counted too).
fn keepalive_peer(close_idle_after: Option<Duration>) -> CountingPeer {
    CountingPeer::start(free_port(), PeerMode::KeepAlive { close_idle_after })
}

fn keepalive_gateway(peer: &CountingPeer, route_extra: &str) -> Gateway {
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\nretries = 0\n{route_extra}\n",
        pool_toml("p", "least_conn", &[peer.addr()], "")
    );
    Gateway::start(&body)
}

/// nginx's upstream `keepalive_timeout`: a kept-alive upstream connection is reused while it is
/// idle for less than the route's `idle_timeout` and closed by the gateway once it has been idle
/// longer (the pool looks at idle connections once a second).
#[test]
fn upstream_connections_are_reused_then_closed_past_their_idle_timeout() {
    let peer = keepalive_peer(None);
    let gw = keepalive_gateway(&peer, "idle_timeout = \"1s\"");
    for _ in 0..3 {
        assert_eq!(gw.curl_https("/x", &[]).status, 200);
        thread::sleep(Duration::from_millis(200));
    }
    let conns = peer.connections();
    assert_eq!(
        conns.len(),
        1,
        "calls 200 ms apart did not reuse one connection: {conns:?}"
    );
    assert_eq!(conns[0].requests, 3);
    let deadline = Instant::now() + Duration::from_secs(6);
    while peer.connections()[0].closed_by_gateway.is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let conn = &peer.connections()[0];
    let closed = conn
        .closed_by_gateway
        .unwrap_or_else(|| panic!("the idle upstream connection was never closed: {conn:?}"));
    let idle = closed - conn.last_response;
    assert!(
        idle >= Duration::from_millis(900),
        "closed after {idle:?} idle, before its 1 s idle timeout"
    );
    // The next call opens a new connection and succeeds.
    assert_eq!(gw.curl_https("/x", &[]).status, 200);
    assert_eq!(peer.connections().len(), 2);
}

/// A backend whose own keep-alive timeout is shorter than the gateway's closes idle connections
/// under it: the gateway never sends a request on one of those (with `retries = 0` that request
/// would fail), it opens a new connection.
#[test]
fn an_upstream_closing_its_idle_connections_costs_no_request() {
    let peer = keepalive_peer(Some(Duration::from_millis(150)));
    let gw = keepalive_gateway(&peer, "");
    for i in 0..3 {
        let out = gw.curl_https("/x", &[]);
        assert_eq!(out.status, 200, "call {i}: {out:?}");
        thread::sleep(Duration::from_millis(400));
    }
    let conns = peer.connections();
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert!(
        conns
            .iter()
            .all(|c| c.requests == 1 && c.closed_by_peer.is_some()),
        "{conns:?}"
    );
}
