//! The todo tool family (TOOLS=openspec,todo) with two backend replicas sharing one store,
//! SQLite (a file in the workspace) and PostgreSQL (a server of the test's own, see
//! `e2e::postgres`), each test of the suite run on both (`sqlite::*`, `postgres::*`): every
//! tool, ownership between two named callers, concurrent updates from both replicas without a
//! lost update, invalid input naming the field, and TOOLS choosing what tools/list shows; and
//! an unusable SQLite file. PostgreSQL's own failures are in backend_todo_postgres.rs.

use e2e::stores::{Db, Kind};
use e2e::tool_calls::{call, err, ok, tool_names};
use e2e::{workspace_copy, Backend};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-9876543210";

fn tokens() -> String {
    format!("alice:{ALICE},bob:{BOB}")
}

/// Two replicas on one workspace and store, started together (so both may migrate at once).
fn two_replicas(ws: &std::path::Path, db: &Db) -> (Backend, Backend) {
    let tokens = tokens();
    db.two_replicas(ws, &[("TOOLS", "openspec,todo"), ("AUTH_TOKENS", &tokens)])
}

e2e::on_both_stores!(
    every_tool_across_two_replicas_with_ownership,
    concurrent_updates_from_two_replicas_lose_nothing,
    invalid_input_names_the_field,
    tools_env_chooses_the_families,
    a_legacy_sse_session_calls_as_its_opener,
);

fn every_tool_across_two_replicas_with_ownership(kind: Kind) {
    let db = Db::start(kind);
    let ws = workspace_copy();
    let (a, b) = two_replicas(ws.path(), &db);
    let names = tool_names(&a.url, ALICE);
    for t in [
        "list_tasks",
        "create_task",
        "mark_task_completed",
        "update_task",
        "delete_task",
        "change.open",
    ] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }

    // Created on replica A, seen and changed on replica B: one database.
    let t = ok(
        &a.url,
        ALICE,
        "create_task",
        json!({"title": "write the report", "description": "Q3", "due": "2027-01-31"}),
    )["task"]
        .clone();
    assert_eq!(t["owner"], "alice");
    assert_eq!(t["version"], 1);
    assert_eq!(t["completed"], false);
    let id = t["id"].as_str().unwrap().to_string();
    let second = ok(
        &b.url,
        ALICE,
        "create_task",
        json!({"title": "second", "due": "2027-02-01T17:00:00+01:00"}),
    )["task"]
        .clone();

    let listed = ok(&b.url, ALICE, "list_tasks", json!({}));
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str(), second["id"].as_str().unwrap()]);
    assert!(listed["next_cursor"].is_null());

    // Pagination: one per page, the cursor leads to the second.
    let p1 = ok(&a.url, ALICE, "list_tasks", json!({"limit": 1}));
    assert_eq!(p1["tasks"][0]["id"], id.as_str());
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let p2 = ok(
        &b.url,
        ALICE,
        "list_tasks",
        json!({"limit": 1, "cursor": cursor}),
    );
    assert_eq!(p2["tasks"][0]["id"], second["id"]);
    assert!(p2["next_cursor"].is_null());

    let u = ok(
        &b.url,
        ALICE,
        "update_task",
        json!({"task_id": id, "title": "write the Q3 report", "description": null,
               "expected_version": 1}),
    )["task"]
        .clone();
    assert_eq!(u["title"], "write the Q3 report");
    assert!(u["description"].is_null());
    assert_eq!(u["due"], "2027-01-31");
    assert_eq!(u["version"], 2);
    let stale = err(
        &a.url,
        ALICE,
        "update_task",
        json!({"task_id": id, "title": "x", "expected_version": 1}),
    );
    assert!(
        stale.starts_with("CONFLICT: input.expected_version"),
        "{stale}"
    );

    let done = ok(&a.url, ALICE, "mark_task_completed", json!({"task_id": id}));
    assert_eq!(done["changed"], true);
    assert_eq!(done["task"]["completed"], true);
    assert_eq!(done["task"]["version"], 3);
    let again = ok(&b.url, ALICE, "mark_task_completed", json!({"task_id": id}));
    assert_eq!(again["changed"], false);
    let open = ok(&a.url, ALICE, "list_tasks", json!({"status": "open"}));
    assert_eq!(open["tasks"].as_array().unwrap().len(), 1);
    let completed = ok(&a.url, ALICE, "list_tasks", json!({"status": "completed"}));
    assert_eq!(completed["tasks"][0]["id"], id.as_str());

    // Bob sees none of Alice's tasks and cannot touch them: NOT_FOUND, as for no task.
    let bobs = ok(&b.url, BOB, "list_tasks", json!({"status": "all"}));
    assert!(bobs["tasks"].as_array().unwrap().is_empty(), "{bobs}");
    for (tool, args) in [
        ("update_task", json!({"task_id": id, "title": "mine now"})),
        ("mark_task_completed", json!({"task_id": second["id"]})),
        ("delete_task", json!({"task_id": id})),
    ] {
        let e = err(&a.url, BOB, tool, args);
        assert!(e.starts_with("NOT_FOUND"), "{tool}: {e}");
    }
    let bob_task = ok(&a.url, BOB, "create_task", json!({"title": "bob's"}))["task"].clone();
    assert_eq!(bob_task["owner"], "bob");
    assert_eq!(
        ok(&b.url, ALICE, "list_tasks", json!({}))["tasks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let d = ok(&b.url, ALICE, "delete_task", json!({"task_id": id}));
    assert_eq!(d["deleted"], true);
    let gone = err(&a.url, ALICE, "delete_task", json!({"task_id": id}));
    assert!(gone.starts_with("NOT_FOUND"), "{gone}");

    // Readiness reports the store.
    let ready = e2e::curl(&[&format!("{}/health/ready", a.url)]);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["store"], "ok");
    // Both replicas started together: each migration applied once.
    if let Some(pg) = &db.pg {
        let applied =
            pg.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version");
        assert_eq!(applied, "1,2");
    }
}

fn concurrent_updates_from_two_replicas_lose_nothing(kind: Kind) {
    let db = Db::start(kind);
    let ws = workspace_copy();
    let (a, b) = two_replicas(ws.path(), &db);
    let urls = Arc::new([a.url.clone(), b.url.clone()]);
    let t = ok(&a.url, ALICE, "create_task", json!({"title": "0"}))["task"].clone();
    let id = Arc::new(t["id"].as_str().unwrap().to_string());

    // 50 increments of a counter in the title, by read + compare-and-set with retries, from
    // 10 threads alternating between the replicas.
    const THREADS: usize = 10;
    const PER_THREAD: usize = 5;
    let conflicts = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (urls, id, conflicts) = (urls.clone(), id.clone(), conflicts.clone());
            std::thread::spawn(move || {
                let url = &urls[i % 2];
                let mut done = 0;
                while done < PER_THREAD {
                    let page = ok(url, ALICE, "list_tasks", json!({"limit": 1}));
                    let cur = &page["tasks"][0];
                    let n: u64 = cur["title"].as_str().unwrap().parse().unwrap();
                    let r = call(
                        url,
                        ALICE,
                        "update_task",
                        json!({"task_id": *id, "title": (n + 1).to_string(),
                               "expected_version": cur["version"]}),
                    );
                    if r["isError"] == false {
                        done += 1;
                    } else {
                        let text = r["content"][0]["text"].as_str().unwrap_or("");
                        assert!(text.starts_with("CONFLICT"), "{text}");
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let last = ok(&b.url, ALICE, "list_tasks", json!({}))["tasks"][0].clone();
    let successes = (THREADS * PER_THREAD) as u64;
    assert_eq!(last["title"], successes.to_string(), "{last}");
    // Created at version 1; each successful update adds exactly one.
    assert_eq!(last["version"], successes + 1, "{last}");
    eprintln!(
        "{successes} updates, {} conflicts retried",
        conflicts.load(Ordering::Relaxed)
    );

    // Without expected_version: concurrent updates of different fields all apply.
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (urls, id) = (urls.clone(), id.clone());
            std::thread::spawn(move || {
                let args = if i % 2 == 0 {
                    json!({"task_id": *id, "description": "described"})
                } else {
                    json!({"task_id": *id, "due": "2027-03-01"})
                };
                ok(&urls[i % 2], ALICE, "update_task", args);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let last = ok(&a.url, ALICE, "list_tasks", json!({}))["tasks"][0].clone();
    assert_eq!(last["version"], successes + 1 + 20, "{last}");
    assert_eq!(last["description"], "described");
    assert_eq!(last["due"], "2027-03-01");
    assert_eq!(last["title"], successes.to_string());
}

fn invalid_input_names_the_field(kind: Kind) {
    let db = Db::start(kind);
    let ws = workspace_copy();
    let (a, _b) = two_replicas(ws.path(), &db);
    let id = ok(&a.url, ALICE, "create_task", json!({"title": "t"}))["task"]["id"].clone();
    for (tool, args, prefix) in [
        (
            "create_task",
            json!({}),
            "INVALID_INPUT: input.title: required",
        ),
        (
            "create_task",
            json!({"title": "  "}),
            "INVALID_INPUT: input.title",
        ),
        (
            "create_task",
            json!({"title": 3}),
            "INVALID_INPUT: input.title",
        ),
        (
            "create_task",
            json!({"title": "t", "due": "tomorrow"}),
            "INVALID_INPUT: input.due",
        ),
        (
            "create_task",
            json!({"title": "t", "owner": "bob"}),
            "INVALID_INPUT: input.owner: unknown field",
        ),
        (
            "list_tasks",
            json!({"limit": 0}),
            "INVALID_INPUT: input.limit",
        ),
        (
            "list_tasks",
            json!({"limit": 101}),
            "INVALID_INPUT: input.limit",
        ),
        (
            "list_tasks",
            json!({"status": "done"}),
            "INVALID_INPUT: input.status",
        ),
        (
            "list_tasks",
            json!({"cursor": "nope"}),
            "INVALID_INPUT: input.cursor",
        ),
        (
            "mark_task_completed",
            json!({"task_id": "42"}),
            "INVALID_INPUT: input.task_id",
        ),
        (
            "delete_task",
            json!({}),
            "INVALID_INPUT: input.task_id: required",
        ),
        (
            "update_task",
            json!({"task_id": id}),
            "INVALID_INPUT: input: nothing to update",
        ),
        (
            "update_task",
            json!({"task_id": id, "completed": "yes"}),
            "INVALID_INPUT: input.completed",
        ),
        (
            "update_task",
            json!({"task_id": id, "title": "x", "expected_version": 0}),
            "INVALID_INPUT: input.expected_version",
        ),
        (
            "update_task",
            json!({"task_id": id, "title": null}),
            "INVALID_INPUT: input.title",
        ),
    ] {
        let e = err(&a.url, ALICE, tool, args.clone());
        assert!(e.starts_with(prefix), "{tool} {args}: {e}");
    }
    // The existing Task API carries the same errors in its envelope.
    let out = e2e::curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", a.url),
        "-H",
        &format!("authorization: Bearer {BOB}"),
        "-H",
        "content-type: application/json",
        "--data-binary",
        &json!({"tool": "delete_task", "args": {"task_id": id}}).to_string(),
    ]);
    assert_eq!(out.status, 404, "{}", out.body);
    assert_eq!(out.json()["error"]["code"], "NOT_FOUND");
    // Both Task API shapes call as the token's caller.
    let out = e2e::curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", a.url),
        "-H",
        &format!("authorization: Bearer {BOB}"),
        "-H",
        "content-type: application/json",
        "--data-binary",
        &json!({"tool": "create_task", "args": {"title": "b"}}).to_string(),
    ]);
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.json()["result"]["task"]["owner"], "bob", "{}", out.body);
    let out = e2e::curl(&[
        "-X",
        "POST",
        &format!("{}/mcp", a.url),
        "-H",
        &format!("authorization: Bearer {ALICE}"),
        "-H",
        "content-type: application/json",
        "--data-binary",
        &json!({"tool": "create_task", "input": {"title": "a"}}).to_string(),
    ]);
    assert_eq!(out.status, 200, "{}", out.body);
    let result: Value = out
        .body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("no result line: {}", out.body));
    assert_eq!(result["result"]["task"]["owner"], "alice", "{result}");
}

fn tools_env_chooses_the_families(kind: Kind) {
    let db = Db::start(kind);
    let ws = workspace_copy();
    let openspec_only = Backend::start(ws.path(), &db.env(&[]));
    let names = tool_names(&openspec_only.url, "unused");
    assert!(names.iter().any(|n| n == "change.open"));
    assert!(!names.iter().any(|n| n == "list_tasks"), "{names:?}");
    let e = err(
        &openspec_only.url,
        "unused",
        "change.open",
        json!({"slug": "nope"}),
    );
    assert!(e.starts_with("NOT_FOUND"), "{e}");

    let todo_only = Backend::start(ws.path(), &db.env(&[("TOOLS", "todo")]));
    let names = tool_names(&todo_only.url, "unused");
    assert_eq!(
        names,
        vec![
            "list_tasks",
            "create_task",
            "mark_task_completed",
            "update_task",
            "delete_task"
        ]
    );
    // Auth off: the caller is "anonymous".
    let t = ok(
        &todo_only.url,
        "unused",
        "create_task",
        json!({"title": "t"}),
    );
    assert_eq!(t["task"]["owner"], "anonymous");
    let listed = e2e::curl(&[&format!("{}/tools", todo_only.url)]);
    assert_eq!(listed.json()["tools"].as_array().unwrap().len(), 5);
}

#[test]
fn an_unusable_database_answers_unavailable_quickly() {
    let ws = workspace_copy();
    // A directory where the database file should be: it cannot be opened.
    let bad = ws.path().join("not-a-file");
    std::fs::create_dir(&bad).unwrap();
    let b = Backend::start(
        ws.path(),
        &[
            ("TOOLS", "openspec,todo"),
            ("DATABASE_PATH", bad.to_str().unwrap()),
        ],
    );
    let e = err(&b.url, "unused", "create_task", json!({"title": "t"}));
    assert!(e.starts_with("UNAVAILABLE"), "{e}");
    let ready = e2e::curl(&[&format!("{}/health/ready", b.url)]);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["store"], "unavailable");
    // The OpenSpec tools keep working.
    let r = call(&b.url, "unused", "change.list", json!({}));
    assert_eq!(r["isError"], false, "{r}");
}

/// The 2024-11-05 HTTP+SSE transport: the session's caller is the one that opened it.
fn a_legacy_sse_session_calls_as_its_opener(kind: Kind) {
    use std::io::{BufRead, BufReader, Write};
    let db = Db::start(kind);
    let ws = workspace_copy();
    let tokens = tokens();
    let b = Backend::start(
        ws.path(),
        &db.env(&[("TOOLS", "todo"), ("AUTH_TOKENS", &tokens)]),
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {BOB}\r\n\
         Accept: text/event-stream\r\n\r\n",
        b.port
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut next_data = || loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        if let Some(d) = line.trim_end().strip_prefix("data:") {
            return d.trim().to_string();
        }
    };
    let endpoint = next_data();
    assert!(endpoint.starts_with("/messages?sessionId="), "{endpoint}");
    let post = |body: Value| {
        let out = e2e::curl(&[
            "-X",
            "POST",
            &format!("{}{endpoint}", b.url),
            "-H",
            &format!("authorization: Bearer {BOB}"),
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body.to_string(),
        ]);
        assert_eq!(out.status, 202, "{}", out.body);
    };
    post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}),
    );
    let init: Value = serde_json::from_str(&next_data()).unwrap();
    assert_eq!(init["id"], 1, "{init}");
    post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "create_task", "arguments": {"title": "over sse"}}}),
    );
    let reply: Value = serde_json::from_str(&next_data()).unwrap();
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(
        reply["result"]["structuredContent"]["task"]["owner"], "bob",
        "{reply}"
    );
    // And Alice, over Streamable HTTP, does not see it.
    let alices = ok(&b.url, ALICE, "list_tasks", json!({}));
    assert!(alices["tasks"].as_array().unwrap().is_empty(), "{alices}");
}
