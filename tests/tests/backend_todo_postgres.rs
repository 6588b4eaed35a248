//! The todo family's PostgreSQL store when the database fails, with two replicas (or one)
//! serving and DATABASE_TIMEOUT_MS=1000: the server stopped mid-run and started again, a
//! server that hangs, a table locked past the timeout, a server that is not there; every
//! call answers UNAVAILABLE (isError, naming the database without its password) within
//! seconds, readiness says 503, and once the database is back the same replicas serve again
//! with nothing lost. Then sslmode=require and sslmode=disable, as the server sees them, and
//! a schema newer than the backend knows, refused.

use e2e::postgres::Postgres;
use e2e::tool_calls::{call, err, ok};
use e2e::{workspace_copy, Backend, Proc};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Two replicas on one workspace and database, started together.
fn pg_replicas(ws: &std::path::Path, url: &str) -> (Backend, Backend) {
    let env = [
        ("TOOLS", "openspec,todo"),
        ("DATABASE_URL", url),
        ("DATABASE_TIMEOUT_MS", "1000"),
    ];
    std::thread::scope(|s| {
        let a = s.spawn(|| Backend::start(ws, &env));
        let b = Backend::start(ws, &env);
        (a.join().expect("replica A started"), b)
    })
}

/// A call that fails with UNAVAILABLE, in less than 5 s (DATABASE_TIMEOUT_MS is 1 s), naming
/// the database without its password.
fn unavailable(url: &str, tool: &str, args: Value) -> String {
    let started = Instant::now();
    let e = err(url, "unused", tool, args);
    let took = started.elapsed();
    assert!(e.starts_with("UNAVAILABLE"), "{tool}: {e}");
    assert!(took < Duration::from_secs(5), "{tool} took {took:?}: {e}");
    assert!(e.contains("postgres://mcp@127.0.0.1:"), "{e}");
    assert!(!e.contains("secret"), "{e}");
    e
}

fn ready_status(url: &str) -> (u16, Value) {
    let ready = e2e::curl(&[&format!("{url}/health/ready")]);
    (ready.status, ready.json())
}

fn titles(url: &str) -> Vec<String> {
    ok(url, "unused", "list_tasks", json!({"status": "all"}))["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn stopped_mid_run_answers_unavailable_then_recovers() {
    let mut pg = Postgres::start();
    let ws = workspace_copy();
    let (a, b) = pg_replicas(ws.path(), &pg.url());
    ok(&a.url, "unused", "create_task", json!({"title": "before"}));
    assert_eq!(titles(&b.url), ["before"]);

    pg.stop();
    for r in [&a, &b] {
        unavailable(&r.url, "create_task", json!({"title": "while down"}));
        unavailable(&r.url, "list_tasks", json!({}));
        let (status, body) = ready_status(&r.url);
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["store"], "unavailable", "{body}");
        assert!(!body.to_string().contains("secret"), "{body}");
        // The OpenSpec tools keep working.
        let listed = call(&r.url, "unused", "change.list", json!({}));
        assert_eq!(listed["isError"], false, "{listed}");
    }

    // Back: both replicas use it again without a restart, and nothing was lost.
    pg.start_again();
    for (r, title) in [(&a, "after on A"), (&b, "after on B")] {
        ok(&r.url, "unused", "create_task", json!({"title": title}));
        let (status, body) = ready_status(&r.url);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(titles(&a.url), ["before", "after on A", "after on B"]);
    assert_eq!(titles(&b.url), titles(&a.url));
}

/// A server that hangs (every process stopped) costs a call DATABASE_TIMEOUT_MS, on a pooled
/// connection as on a new one, then UNAVAILABLE; once it runs again, so do the calls.
#[test]
fn hanging_answers_unavailable_within_the_timeout() {
    let pg = Postgres::start();
    let ws = workspace_copy();
    let (a, b) = pg_replicas(ws.path(), &pg.url());
    ok(&a.url, "unused", "create_task", json!({"title": "one"}));
    pg.freeze();
    let thaw = Thaw(&pg);
    // A's pooled connection, then a new one; B's pool; readiness.
    unavailable(&a.url, "list_tasks", json!({}));
    unavailable(&a.url, "create_task", json!({"title": "while hung"}));
    unavailable(&b.url, "list_tasks", json!({}));
    let (status, body) = ready_status(&b.url);
    assert_eq!(status, 503, "{body}");
    drop(thaw);
    ok(&b.url, "unused", "create_task", json!({"title": "two"}));
    assert_eq!(titles(&a.url), ["one", "two"]);
}

/// Resumes a frozen server also when the test fails.
struct Thaw<'a>(&'a Postgres);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.thaw();
    }
}

#[test]
fn a_table_locked_past_the_timeout_answers_unavailable() {
    let pg = Postgres::start();
    let ws = workspace_copy();
    let (a, b) = pg_replicas(ws.path(), &pg.url());
    ok(&a.url, "unused", "create_task", json!({"title": "one"}));
    let mut cmd = pg.psql_command(
        "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;",
    );
    cmd.env("PGAPPNAME", "locker");
    let mut locker = Proc::spawn("psql-locker", cmd);
    let locked = "SELECT count(*) FROM pg_locks WHERE relation = 'tasks'::regclass \
                  AND mode = 'AccessExclusiveLock' AND granted";
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.psql(locked) != "1" {
        assert!(
            locker.is_running() && Instant::now() < deadline,
            "{}",
            locker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Waiting for the lock ends at DATABASE_TIMEOUT_MS: an answer, not a hang.
    unavailable(&a.url, "create_task", json!({"title": "blocked"}));
    unavailable(&b.url, "list_tasks", json!({}));

    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'",
    );
    locker
        .wait_exit(Duration::from_secs(10))
        .expect("the locker ended");
    ok(&b.url, "unused", "create_task", json!({"title": "two"}));
    assert_eq!(titles(&a.url), ["one", "two"]);
}

/// Nothing listens there: UNAVAILABLE at once, and the password is in no answer.
#[test]
fn an_unreachable_server_answers_unavailable_quickly() {
    let ws = workspace_copy();
    let url = format!("postgres://mcp:secret@127.0.0.1:{}/mcp", e2e::free_port());
    let b = Backend::start(
        ws.path(),
        &[
            ("TOOLS", "openspec,todo"),
            ("DATABASE_URL", &url),
            ("DATABASE_TIMEOUT_MS", "1000"),
        ],
    );
    unavailable(&b.url, "create_task", json!({"title": "t"}));
    let (status, body) = ready_status(&b.url);
    assert_eq!(status, 503, "{body}");
    let health = e2e::curl(&[&format!("{}/health", b.url)]);
    assert!(
        health.body.contains("postgres://mcp@127.0.0.1:"),
        "{}",
        health.body
    );
    assert!(!health.body.contains("secret"), "{}", health.body);
    assert!(!b.proc.log().contains("secret"), "{}", b.proc.log());
}

/// sslmode=require encrypts the replica's connections, sslmode=disable does not; the server
/// (with TLS on) sees which.
#[test]
fn sslmode_require_and_disable() {
    let pg = Postgres::start();
    let ws = workspace_copy();
    let ssl_of_mcp = "SELECT string_agg(DISTINCT s.ssl::text, ',') FROM pg_stat_ssl s \
                      JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'mcp'";
    for (mode, encrypted) in [("require", "true"), ("disable", "false")] {
        let url = format!("{}?sslmode={mode}", pg.url());
        let b = Backend::start(ws.path(), &[("TOOLS", "todo"), ("DATABASE_URL", &url)]);
        ok(&b.url, "unused", "create_task", json!({"title": mode}));
        assert_eq!(pg.psql(ssl_of_mcp), encrypted, "sslmode={mode}");
        drop(b);
        // Its sessions end with it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pg.psql(ssl_of_mcp).is_empty() {
            assert!(
                Instant::now() < deadline,
                "sessions of sslmode={mode} linger"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let b = Backend::start(ws.path(), &[("TOOLS", "todo"), ("DATABASE_URL", &pg.url())]);
    assert_eq!(titles(&b.url), ["require", "disable"]);
}

/// A database migrated by a newer backend (schema version 3) is refused, not used.
#[test]
fn a_newer_schema_is_refused() {
    let pg = Postgres::start();
    let ws = workspace_copy();
    let url = pg.url();
    let env = [("TOOLS", "todo"), ("DATABASE_URL", url.as_str())];
    let old = Backend::start(ws.path(), &env);
    ok(&old.url, "unused", "create_task", json!({"title": "t"}));
    pg.psql("INSERT INTO schema_version (version) VALUES (3)");
    let b = Backend::start(ws.path(), &env);
    let e = unavailable(&b.url, "list_tasks", json!({}));
    assert!(
        e.contains("schema version 3 is newer than this backend knows (2)"),
        "{e}"
    );
}
