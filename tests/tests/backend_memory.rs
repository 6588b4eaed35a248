//! The memory tool family (TOOLS=memory) with two backend replicas on one store, SQLite and
//! PostgreSQL: every tool over MCP, ownership between two named callers, expiry, search by
//! text and tags, concurrent remembers of one key from both replicas (no lost version), input
//! errors naming the field; and the memory server's REST form exactly as its documentation
//! shows it with curl (`POST /tools/memory_remember`, `/tools/memory_recall`,
//! `/tools/execute`, `GET /servers`).

use e2e::stores::{Db, Kind};
use e2e::tool_calls::{err, ok, tool_names};
use e2e::{curl, workspace_copy, Backend};
use serde_json::{json, Value};
use std::time::Duration;

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-9876543210";

fn two_replicas(ws: &std::path::Path, db: &Db) -> (Backend, Backend) {
    let tokens = format!("alice:{ALICE},bob:{BOB}");
    db.two_replicas(ws, &[("AUTH_TOKENS", &tokens), ("TOOLS", "memory,todo")])
}

e2e::on_both_stores!(
    every_memory_tool_across_two_replicas_with_ownership,
    memories_expire,
    concurrent_remembers_from_two_replicas_lose_no_version,
    invalid_memory_input_names_the_field,
);

fn keys(found: &Value) -> Vec<String> {
    found["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect()
}

fn every_memory_tool_across_two_replicas_with_ownership(kind: Kind) {
    let ws = workspace_copy();
    let db = Db::start(kind);
    let (a, b) = two_replicas(ws.path(), &db);
    let names = tool_names(&a.url, ALICE);
    for t in [
        "memory_remember",
        "memory_recall",
        "memory_forget",
        "create_task",
    ] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }

    // Remembered on one replica, recalled on the other.
    let r = ok(
        &a.url,
        ALICE,
        "memory_remember",
        json!({"key": "session_1", "value": "Important information", "tags": ["work", "urgent", "work"]}),
    );
    assert_eq!(r["created"], true);
    assert_eq!(r["memory"]["version"], 1);
    assert_eq!(r["memory"]["owner"], "alice");
    assert_eq!(r["memory"]["tags"], json!(["urgent", "work"]));
    assert_eq!(r["memory"]["expires_at"], Value::Null);
    let got = ok(&b.url, ALICE, "memory_recall", json!({"key": "session_1"}));
    assert_eq!(got["memories"][0]["value"], "Important information");

    // Replaced: same key, version 2, created_at kept; seed clients' `content` works too.
    let r = ok(
        &b.url,
        ALICE,
        "memory_remember",
        json!({"key": "session_1", "content": "Updated information"}),
    );
    assert_eq!(r["created"], false);
    assert_eq!(r["memory"]["version"], 2);
    assert_eq!(r["memory"]["tags"], json!([]));
    assert_eq!(
        r["memory"]["created_at"], got["memories"][0]["created_at"],
        "a replaced memory keeps its creation time"
    );

    // Bob sees none of Alice's memories, and cannot forget or overwrite them.
    assert!(
        err(&a.url, BOB, "memory_recall", json!({"key": "session_1"})).starts_with("NOT_FOUND")
    );
    assert!(
        err(&a.url, BOB, "memory_forget", json!({"key": "session_1"})).starts_with("NOT_FOUND")
    );
    let bobs = ok(
        &b.url,
        BOB,
        "memory_remember",
        json!({"key": "session_1", "value": "bob's"}),
    );
    assert_eq!(
        bobs["created"], true,
        "the same key of another caller is a new memory"
    );
    let again = ok(&a.url, ALICE, "memory_recall", json!({"key": "session_1"}));
    assert_eq!(again["memories"][0]["value"], "Updated information");

    // Search: substring of key or value (ASCII case-insensitive), all tags, newest first.
    for (key, value, tags) in [
        ("recipe/bread", "Flour, water, SALT", json!(["food"])),
        ("recipe/soup", "Leeks and salt", json!(["food", "winter"])),
        ("travel", "Pack the salt lamp", json!(["winter"])),
    ] {
        ok(
            &a.url,
            ALICE,
            "memory_remember",
            json!({"key": key, "value": value, "tags": tags}),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let found = ok(&b.url, ALICE, "memory_recall", json!({"query": "salt"}));
    assert_eq!(keys(&found), ["travel", "recipe/soup", "recipe/bread"]);
    let found = ok(
        &b.url,
        ALICE,
        "memory_recall",
        json!({"query": "RECIPE", "tags": ["winter"]}),
    );
    assert_eq!(keys(&found), ["recipe/soup"]);
    let found = ok(
        &b.url,
        ALICE,
        "memory_recall",
        json!({"tags": ["food"], "limit": 1}),
    );
    assert_eq!(keys(&found), ["recipe/soup"]);
    let found = ok(&b.url, BOB, "memory_recall", json!({"query": "salt"}));
    assert_eq!(
        keys(&found),
        Vec::<String>::new(),
        "bob's search sees only bob's"
    );

    // Forget: gone on both replicas; forgetting again is NOT_FOUND naming the key.
    assert_eq!(
        ok(&a.url, ALICE, "memory_forget", json!({"key": "travel"}))["forgotten"],
        "travel"
    );
    let e = err(&b.url, ALICE, "memory_recall", json!({"key": "travel"}));
    assert!(
        e.starts_with("NOT_FOUND") && e.contains("\"travel\""),
        "{e}"
    );
    let e = err(&b.url, ALICE, "memory_forget", json!({"key": "travel"}));
    assert!(e.starts_with("NOT_FOUND"), "{e}");
}

fn memories_expire(kind: Kind) {
    let ws = workspace_copy();
    let db = Db::start(kind);
    let (a, b) = two_replicas(ws.path(), &db);
    let r = ok(
        &a.url,
        ALICE,
        "memory_remember",
        json!({"key": "otp", "value": "123456", "ttl_seconds": 1, "tags": ["short"]}),
    );
    assert!(r["memory"]["expires_at"].is_string(), "{r}");
    ok(
        &a.url,
        ALICE,
        "memory_remember",
        json!({"key": "keep", "value": "kept", "tags": ["short"]}),
    );
    assert_eq!(
        ok(&b.url, ALICE, "memory_recall", json!({"key": "otp"}))["memories"][0]["value"],
        "123456"
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert!(err(&b.url, ALICE, "memory_recall", json!({"key": "otp"})).starts_with("NOT_FOUND"));
    assert_eq!(
        keys(&ok(
            &a.url,
            ALICE,
            "memory_recall",
            json!({"tags": ["short"]})
        )),
        ["keep"]
    );
    assert!(err(&a.url, ALICE, "memory_forget", json!({"key": "otp"})).starts_with("NOT_FOUND"));
    // Remembered again after it expired: a new memory.
    let r = ok(
        &b.url,
        ALICE,
        "memory_remember",
        json!({"key": "otp", "value": "654321"}),
    );
    assert_eq!(r["created"], true);
    assert_eq!(r["memory"]["version"], 1);
}

fn concurrent_remembers_from_two_replicas_lose_no_version(kind: Kind) {
    let ws = workspace_copy();
    let db = Db::start(kind);
    let (a, b) = two_replicas(ws.path(), &db);
    ok(
        &a.url,
        ALICE,
        "memory_remember",
        json!({"key": "counter", "value": "0"}),
    );
    const EACH: usize = 15;
    let threads: Vec<_> = [a.url.clone(), b.url.clone(), a.url.clone(), b.url.clone()]
        .into_iter()
        .enumerate()
        .map(|(t, url)| {
            std::thread::spawn(move || {
                for i in 0..EACH {
                    ok(
                        &url,
                        ALICE,
                        "memory_remember",
                        json!({"key": "counter", "value": format!("{t}-{i}")}),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = &ok(&b.url, ALICE, "memory_recall", json!({"key": "counter"}))["memories"][0];
    assert_eq!(
        m["version"],
        1 + 4 * EACH as i64,
        "every remember counted once: {m}"
    );
}

fn invalid_memory_input_names_the_field(kind: Kind) {
    let ws = workspace_copy();
    let db = Db::start(kind);
    let (a, _b) = two_replicas(ws.path(), &db);
    let long_key = "k".repeat(257);
    let big = "v".repeat(64 * 1024 + 1);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "memory_remember",
            json!({"value": "x"}),
            "input.key: required",
        ),
        (
            "memory_remember",
            json!({"key": "k"}),
            "input.value: required",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": "a", "content": "b"}),
            "input.content: give value or content",
        ),
        (
            "memory_remember",
            json!({"key": "", "value": "x"}),
            "input.key: must not be empty",
        ),
        (
            "memory_remember",
            json!({"key": long_key, "value": "x"}),
            "input.key: longer than 256",
        ),
        (
            "memory_remember",
            json!({"key": "a\u{7}b", "value": "x"}),
            "input.key: must not contain control",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": big}),
            "input.value: longer than 65536 bytes",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": 3}),
            "input.value: must be a string",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": "a\u{0}b"}),
            "input.value: must not contain NUL",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": "x", "tags": "a"}),
            "input.tags: must be an array",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": "x", "tags": ["ok", 1]}),
            "input.tags[1]: must be a string",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": "x", "tags": [" "]}),
            "input.tags[0]: must not be empty",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": "x", "ttl_seconds": 0}),
            "input.ttl_seconds: must be between 1",
        ),
        (
            "memory_remember",
            json!({"key": "k", "value": "x", "ttl": 5}),
            "input.ttl: unknown field",
        ),
        ("memory_recall", json!({}), "input.key: required"),
        (
            "memory_recall",
            json!({"key": "k", "query": "q"}),
            "input.key: give key alone",
        ),
        (
            "memory_recall",
            json!({"query": ""}),
            "input.query: must not be empty",
        ),
        (
            "memory_recall",
            json!({"query": "q", "limit": 101}),
            "input.limit: must be between 1 and 100",
        ),
        ("memory_forget", json!({}), "input.key: required"),
    ];
    for (tool, args, expected) in cases {
        let e = err(&a.url, ALICE, tool, args.clone());
        assert!(
            e.starts_with("INVALID_INPUT") && e.contains(expected),
            "{tool} {args}: expected {expected:?}, got {e:?}"
        );
    }
}

/// The memory server's documentation, run as written (no token: a backend without
/// AUTH_TOKENS, as in that documentation's local set-up).
#[test]
fn the_memory_servers_curl_examples_work_as_written() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("TOOLS", "memory")]);
    let log = b.proc.log();
    for t in ["memory_remember", "memory_recall", "memory_forget"] {
        assert!(log.contains(&format!("Registered tool: {t}")), "{log}");
    }
    let remember = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/memory_remember", b.url),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"content": "Important information", "key": "session_1"}"#,
    ]);
    assert_eq!(remember.status, 200, "{}", remember.body);
    let body = remember.json();
    assert_eq!(body["tool"], "memory_remember");
    assert_eq!(body["result"]["memory"]["value"], "Important information");
    assert_eq!(body["result"]["memory"]["owner"], "anonymous");

    let recall = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/memory_recall", b.url),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"key": "session_1"}"#,
    ]);
    assert_eq!(recall.status, 200, "{}", recall.body);
    assert_eq!(
        recall.json()["result"]["memories"][0]["value"],
        "Important information"
    );

    let servers = curl(&[&format!("{}/servers", b.url)]);
    assert_eq!(servers.status, 200, "{}", servers.body);
    let servers = servers.json();
    assert_eq!(servers["servers"].as_array().unwrap().len(), 1, "{servers}");
    assert_eq!(servers["servers"][0]["name"], "memory");
    let tools: Vec<&str> = servers["servers"][0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["memory_remember", "memory_recall", "memory_forget"]);

    let listed = curl(&[&format!("{}/tools", b.url)]).json();
    assert_eq!(listed["tools"].as_array().unwrap().len(), 3);

    let exec = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", b.url),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"tool": "memory_recall", "args": {"key": "session_1"}}"#,
    ]);
    assert_eq!(exec.status, 200, "{}", exec.body);
    assert_eq!(
        exec.json()["result"]["memories"][0]["value"],
        "Important information"
    );

    // Errors keep the envelope and its status.
    let missing = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/memory_recall", b.url),
        "-d",
        r#"{"key": "nope"}"#,
    ]);
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.json()["error"]["code"], "NOT_FOUND");
    let bad = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/memory_recall", b.url),
        "-d",
        "[1]",
    ]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error"]["code"], "INVALID_INPUT");
    let unknown = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/memory_dream", b.url),
        "-d",
        "{}",
    ]);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.json()["error"]["code"], "UNKNOWN_TOOL");
}

/// With tokens configured the REST form needs one like every other route, and acts as the
/// token's caller.
#[test]
fn the_rest_form_authenticates_and_keeps_callers_apart() {
    let ws = workspace_copy();
    let tokens = format!("alice:{ALICE},bob:{BOB}");
    let b = Backend::start(ws.path(), &[("TOOLS", "memory"), ("AUTH_TOKENS", &tokens)]);
    let url = format!("{}/tools/memory_remember", b.url);
    let anon = curl(&["-X", "POST", &url, "-d", r#"{"key": "k", "value": "v"}"#]);
    assert_eq!(anon.status, 401, "{}", anon.body);
    let servers = curl(&[&format!("{}/servers", b.url)]);
    assert_eq!(servers.status, 401, "{}", servers.body);
    let alice = format!("authorization: Bearer {ALICE}");
    let r = curl(&[
        "-X",
        "POST",
        &url,
        "-H",
        &alice,
        "-d",
        r#"{"key": "k", "value": "v"}"#,
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["memory"]["owner"], "alice");
    let bob = format!("authorization: Bearer {BOB}");
    let r = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/memory_recall", b.url),
        "-H",
        &bob,
        "-d",
        r#"{"key": "k"}"#,
    ]);
    assert_eq!(r.status, 404, "{}", r.body);
}
