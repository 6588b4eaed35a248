//! RATE_LIMIT shared across replicas through Redis (REDIS_URL): three real backends share one
//! `redis-server` on loopback, one token calls them round-robin, and the minute's allowance is
//! spent once, not once per replica. Then Redis is stopped (by pid) and restarted on the same
//! port: RATE_LIMIT_REDIS_FAILURE=open lets calls through and counts them, closed refuses them
//! at once with 503 UNAVAILABLE, and limiting resumes when Redis is back.

use e2e::{free_port, wait_for_port, workspace_copy, Backend, Proc};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const TOKEN: &str = "rl-e2e-secret-token";
const CALL: &str = r#"{"tool":"spec.open","args":{"capability":"auth"}}"#;

fn start_redis(port: u16) -> Proc {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    let redis = Proc::spawn(&format!("redis:{port}"), cmd);
    if !wait_for_port(port, Duration::from_secs(10)) {
        redis.fail("redis-server did not listen");
    }
    redis
}

fn stop(mut p: Proc) {
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(5));
}

fn replicas(ws: &std::path::Path, extra: &[(&str, &str)]) -> Vec<Backend> {
    let mut env = vec![("AUTH_TOKENS", TOKEN), ("RATE_LIMIT", "60")];
    env.extend_from_slice(extra);
    (0..3).map(|_| Backend::start(ws, &env)).collect()
}

/// One POST /tools/execute with the token over a fresh connection: (status, head, time taken).
fn call(port: u16) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect backend");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /tools/execute HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{CALL}",
        CALL.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read answer");
    let text = String::from_utf8_lossy(&out).to_string();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text, started.elapsed())
}

/// `n` calls spread round-robin over the replicas, as fast as they answer.
fn burst(backends: &[Backend], n: usize) -> Vec<(u16, String, Duration)> {
    (0..n)
        .map(|i| call(backends[i % backends.len()].port))
        .collect()
}

fn count(answers: &[(u16, String, Duration)], status: u16) -> usize {
    answers.iter().filter(|a| a.0 == status).count()
}

fn assert_limited(answers: &[(u16, String, Duration)], what: &str) {
    let ok = count(answers, 200);
    let limited = count(answers, 429);
    assert!(
        (59..=61).contains(&ok),
        "{what}: {ok} of {} allowed, expected 60±1",
        answers.len()
    );
    assert_eq!(ok + limited, answers.len(), "{what}: only 200 and 429");
    for (status, text, _) in answers {
        if *status == 429 {
            assert!(
                text.to_ascii_lowercase().contains("\r\nretry-after: "),
                "{what}: 429 without Retry-After: {text}"
            );
            assert!(text.contains("RATE_LIMITED"), "{what}: {text}");
        }
    }
}

/// The sum over the replicas of `rate_limit_redis_errors_total{outcome="..."}`.
fn redis_errors(backends: &[Backend], outcome: &str) -> u64 {
    let series = format!("rate_limit_redis_errors_total{{outcome=\"{outcome}\"}} ");
    backends
        .iter()
        .map(|b| {
            let out = e2e::curl(&[&format!("{}/metrics", b.url)]);
            out.body
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", out.body))
        })
        .sum()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn three_replicas_share_one_allowance_fail_open_and_resume() {
    let ws = workspace_copy();
    let redis_port = free_port();
    let redis = start_redis(redis_port);
    let url = format!("redis://127.0.0.1:{redis_port}");
    let backends = replicas(ws.path(), &[("REDIS_URL", &url)]);

    let answers = burst(&backends, 100);
    assert_limited(&answers, "3 replicas sharing Redis");
    eprintln!(
        "shared: {} allowed, {} limited of 100",
        count(&answers, 200),
        count(&answers, 429)
    );

    // One bucket, named by a hash of the token, expiring.
    let keys = redis_cli(redis_port, &["--scan", "--pattern", "mcp:rl:*"]);
    assert_eq!(keys.lines().count(), 1, "one key for one token: {keys}");
    assert!(
        !keys.contains(TOKEN),
        "the token itself is not stored: {keys}"
    );
    let ttl: i64 = redis_cli(redis_port, &["TTL", keys.trim()])
        .parse()
        .unwrap();
    assert!((1..=120).contains(&ttl), "expires: TTL {ttl}");

    // Redis gone, fail-open (the default): calls go through, quickly, and are counted.
    stop(redis);
    let before = redis_errors(&backends, "allowed");
    let answers = burst(&backends, 30);
    assert_eq!(
        count(&answers, 200),
        30,
        "fail-open lets every call through"
    );
    for (_, _, took) in &answers {
        assert!(*took < Duration::from_secs(1), "answered in {took:?}");
    }
    assert!(
        redis_errors(&backends, "allowed") >= before + 30,
        "every unchecked call is counted"
    );
    assert_eq!(redis_errors(&backends, "refused"), 0);

    // Redis back on the same port (empty: a full bucket): limiting resumes.
    let redis = start_redis(redis_port);
    thread::sleep(Duration::from_millis(700)); // past the reconnect pause
    let answers = burst(&backends, 100);
    assert_limited(&answers, "after Redis restarted");
    let logs: String = backends.iter().map(|b| b.proc.log()).collect();
    assert!(logs.contains("answers again"), "recovery logged:\n{logs}");
    assert!(logs.contains("WARN"), "failure logged at warn:\n{logs}");
    stop(redis);
}

#[test]
fn fail_closed_refuses_quickly_then_resumes() {
    let ws = workspace_copy();
    let redis_port = free_port();
    let redis = start_redis(redis_port);
    let url = format!("redis://127.0.0.1:{redis_port}");
    let backends = replicas(
        ws.path(),
        &[("REDIS_URL", &url), ("RATE_LIMIT_REDIS_FAILURE", "closed")],
    );
    assert_eq!(count(&burst(&backends, 6), 200), 6);

    // Redis frozen (SIGSTOP): connected but silent. Each check gives up after
    // REDIS_TIMEOUT_MS (200 ms by default).
    redis.signal("STOP");
    for (status, text, took) in &burst(&backends, 6) {
        assert_eq!(*status, 503, "a silent Redis is a failure too: {text}");
        assert!(*took < Duration::from_secs(1), "answered in {took:?}");
    }
    redis.signal("CONT");

    stop(redis);
    let answers = burst(&backends, 30);
    for (status, text, took) in &answers {
        assert_eq!(*status, 503, "fail-closed refuses: {text}");
        assert!(text.contains("\"UNAVAILABLE\""), "{text}");
        assert!(*took < Duration::from_secs(1), "answered in {took:?}");
    }
    assert!(redis_errors(&backends, "refused") >= 36);
    assert_eq!(redis_errors(&backends, "allowed"), 0);

    let redis = start_redis(redis_port);
    thread::sleep(Duration::from_millis(700));
    let answers = burst(&backends, 100);
    assert_limited(&answers, "fail-closed, after Redis restarted");
    stop(redis);
}

/// The control: without REDIS_URL each replica counts alone, so the same token gets three
/// minutes' worth. This is what the shared test above would see if Redis were not used.
#[test]
fn without_redis_each_replica_counts_alone() {
    let ws = workspace_copy();
    let backends = replicas(ws.path(), &[]);
    let answers = burst(&backends, 240);
    let ok = count(&answers, 200);
    eprintln!("local: {ok} allowed of 240");
    assert!((178..=186).contains(&ok), "{ok} allowed, expected ~180");
}

/// ENABLE_DISTRIBUTED_RATE_LIMIT=true needs REDIS_URL: start-up stops, naming both.
#[test]
fn distributed_without_redis_url_is_a_config_error() {
    let ws = workspace_copy();
    let out = Command::new(e2e::bin("backend"))
        .env_clear()
        .env("WORKING_DIRECTORY", ws.path())
        .env("PORT", free_port().to_string())
        .env("RATE_LIMIT", "60")
        .env("ENABLE_DISTRIBUTED_RATE_LIMIT", "true")
        .output()
        .expect("run backend");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ENABLE_DISTRIBUTED_RATE_LIMIT") && err.contains("REDIS_URL"),
        "{err}"
    );
}

/// A password (percent-encoded in the URL) and a database number are honoured.
#[test]
fn password_and_database_from_the_url() {
    let ws = workspace_copy();
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "s3cr@t",
        ]);
    let redis = Proc::spawn(&format!("redis:{port}"), cmd);
    assert!(
        wait_for_port(port, Duration::from_secs(10)),
        "redis listens"
    );
    let url = format!("redis://:s3cr%40t@127.0.0.1:{port}/3");
    let backend = Backend::start(
        ws.path(),
        &[
            ("AUTH_TOKENS", TOKEN),
            ("RATE_LIMIT", "60"),
            ("REDIS_URL", &url),
            ("RATE_LIMIT_REDIS_FAILURE", "closed"),
        ],
    );
    assert_limited(&burst(std::slice::from_ref(&backend), 70), "password, db 3");
    let keys = redis_cli(port, &["-a", "s3cr@t", "-n", "3", "--scan"]);
    assert_eq!(keys.lines().count(), 1, "the bucket is in db 3: {keys}");
    stop(redis);
}
