//! The read tools, task.update, input validation and path safety, through the registry as the
//! server calls it, against a temp copy of examples/workspace.

mod common;
use common::*;

use backend::openspec::Workspace;
use backend::tools::{ErrorCode, Registry, ToolError};
use serde_json::{json, Value};

fn err(reg: &Registry, tool: &str, input: Value) -> ToolError {
    match call(reg, tool, input.clone()) {
        Ok(out) => panic!("{tool} {input} succeeded: {}", out.text),
        Err(e) => e,
    }
}

#[test]
fn registry_lists_the_seven_tools_with_object_schemas() {
    let (_dir, reg) = workspace();
    let names: Vec<&str> = reg.list().iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        [
            "change.list",
            "change.open",
            "change.archive",
            "task.list",
            "task.update",
            "spec.list",
            "spec.open"
        ]
    );
    for def in reg.list() {
        assert_eq!(def.input_schema["type"], "object", "{}", def.name);
        assert!(!def.description.is_empty());
    }
    assert_eq!(
        reg.get("task.update").unwrap().input_schema["required"],
        json!(["slug", "id", "done"])
    );
    assert!(reg.get("nope").is_none());
}

#[test]
fn workspace_opens_from_project_root_or_openspec_folder() {
    let (dir, _reg) = workspace();
    let a = Workspace::open(dir.path()).unwrap();
    let b = Workspace::open(&dir.path().join("openspec")).unwrap();
    assert_eq!(a.root(), b.root());
    assert!(a.check_readable().is_ok());
    let empty = tempfile::tempdir().unwrap();
    let e = Workspace::open(empty.path()).unwrap_err().to_string();
    assert!(
        e.contains(&empty.path().display().to_string()) && e.contains("no openspec/"),
        "{e}"
    );
    let e = Workspace::open(&empty.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn change_list_shows_titles_and_progress() {
    let (_dir, reg) = workspace();
    let out = call(&reg, "change.list", json!({})).unwrap();
    assert_eq!(
        out.structured["changes"],
        json!([
            {"slug": "add-task-due-dates", "title": "Add due dates to tasks", "tasks": {"done": 2, "total": 6}},
            {"slug": "add-two-factor-auth", "title": "Add two-factor authentication", "tasks": {"done": 8, "total": 8}},
            {"slug": "add-webhooks", "title": "Add outgoing webhooks", "tasks": {"done": 5, "total": 5}},
            {"slug": "rework-notification-digest", "title": "Rework the notification digest", "tasks": {"done": 3, "total": 3}},
        ])
    );
    assert!(out.structured.get("archived").is_none());
    assert!(
        out.text
            .contains("add-task-due-dates: Add due dates to tasks [2/6 tasks]"),
        "{}",
        out.text
    );

    let out = call(&reg, "change.list", json!({"include_archived": true})).unwrap();
    assert_eq!(
        out.structured["archived"],
        json!([
            {"name": "2025-01-14-add-task-labels", "slug": "add-task-labels", "date": "2025-01-14", "title": "Add task labels"},
            {"name": "2025-02-03-add-audit-log", "slug": "add-audit-log", "date": "2025-02-03", "title": "Add an audit log"},
        ])
    );
}

#[test]
fn change_open_returns_proposal_design_tasks_and_deltas() {
    let (_dir, reg) = workspace();
    let out = call(&reg, "change.open", json!({"slug": "add-two-factor-auth"}))
        .unwrap()
        .structured;
    assert_eq!(out["title"], "Add two-factor authentication");
    assert!(out["proposal"]
        .as_str()
        .unwrap()
        .starts_with("# Change: Add two-factor authentication"));
    assert!(out["design"]
        .as_str()
        .unwrap()
        .contains("TOTP (RFC 6238) first"));
    assert_eq!(
        out["tasks"][2],
        json!({"id": "1.3", "text": "Challenge step after password sign-in, with a 5 minute Redis TTL", "done": true, "section": "1. Second factor"})
    );
    assert_eq!(out["progress"], json!({"done": 8, "total": 8}));
    let deltas = out["deltas"].as_array().unwrap();
    assert_eq!(deltas.len(), 2);
    let audit = &deltas[0];
    assert_eq!(audit["capability"], "audit-log");
    assert_eq!(audit["removed"][0]["name"], "Plaintext Log Export");
    assert!(audit["removed"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("**Reason**: Plain text exports"));
    let auth = &deltas[1];
    assert_eq!(
        auth["renamed"],
        json!([{"from": "Password Login", "to": "Password Sign-In"}])
    );
    assert_eq!(auth["modified"][1]["name"], "Session Expiry");
    assert_eq!(
        auth["modified"][1]["scenarios"],
        json!(["Idle session", "Absolute limit"])
    );
    assert!(auth["added"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("The system SHALL support time-based one-time passwords"));

    let no_design = call(&reg, "change.open", json!({"slug": "add-webhooks"}))
        .unwrap()
        .structured;
    assert_eq!(no_design["design"], Value::Null);
}

#[test]
fn task_list_and_update_tick_one_checkbox_atomically() {
    let (dir, reg) = workspace();
    let path = dir
        .path()
        .join("openspec/changes/add-task-due-dates/tasks.md");
    let before = std::fs::read_to_string(&path).unwrap();
    let listed = call(&reg, "task.list", json!({"slug": "add-task-due-dates"}))
        .unwrap()
        .structured;
    assert_eq!(listed["progress"], json!({"done": 2, "total": 6}));
    assert_eq!(listed["tasks"][2]["id"], "1.3");
    assert_eq!(listed["tasks"][2]["done"], false);

    let out = call(
        &reg,
        "task.update",
        json!({"slug": "add-task-due-dates", "id": "1.3", "done": true}),
    )
    .unwrap();
    assert_eq!(out.structured["changed"], true);
    assert_eq!(out.structured["task"]["done"], true);
    assert_eq!(out.structured["progress"], json!({"done": 3, "total": 6}));
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        after,
        before.replacen("- [ ] 1.3 Sort", "- [x] 1.3 Sort", 1),
        "only that checkbox changed"
    );

    // Idempotent, then back.
    let again = call(
        &reg,
        "task.update",
        json!({"slug": "add-task-due-dates", "id": "1.3", "done": true}),
    )
    .unwrap();
    assert_eq!(again.structured["changed"], false);
    call(
        &reg,
        "task.update",
        json!({"slug": "add-task-due-dates", "id": "1.3", "done": false}),
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    // No temp files or lock left behind.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!dir.path().join("openspec/changes/.openspec.lock").exists());

    let e = err(
        &reg,
        "task.update",
        json!({"slug": "add-task-due-dates", "id": "9.9", "done": true}),
    );
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("task 9.9"), "{}", e.message);
}

#[test]
fn concurrent_task_updates_lose_nothing() {
    let (dir, reg) = workspace();
    let reg = std::sync::Arc::new(reg);
    let ids = ["1.3", "2.1", "2.2", "3.1"];
    let handles: Vec<_> = ids
        .iter()
        .map(|id| {
            let reg = reg.clone();
            let id = id.to_string();
            std::thread::spawn(move || {
                call(
                    &reg,
                    "task.update",
                    json!({"slug": "add-task-due-dates", "id": id, "done": true}),
                )
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let text = std::fs::read_to_string(
        dir.path()
            .join("openspec/changes/add-task-due-dates/tasks.md"),
    )
    .unwrap();
    assert!(!text.contains("- [ ]"), "{text}");
}

#[test]
fn spec_list_and_open() {
    let (_dir, reg) = workspace();
    let out = call(&reg, "spec.list", json!({})).unwrap().structured;
    assert_eq!(
        out["specs"],
        json!([
            {"capability": "audit-log", "title": "audit-log Specification", "requirements": 3},
            {"capability": "auth", "title": "auth Specification", "requirements": 4},
            {"capability": "notifications", "title": "notifications Specification", "requirements": 3},
            {"capability": "task-api", "title": "task-api Specification", "requirements": 4},
        ])
    );
    let auth = call(&reg, "spec.open", json!({"capability": "auth"})).unwrap();
    assert!(auth.structured["purpose"]
        .as_str()
        .unwrap()
        .starts_with("How people prove who they are"));
    assert_eq!(auth.structured["requirements"][0]["name"], "Password Login");
    assert_eq!(
        auth.structured["requirements"][0]["scenarios"],
        json!(["Valid credentials", "Wrong password"])
    );
    assert!(auth.text.starts_with("# auth Specification"));
    let e = err(&reg, "spec.open", json!({"capability": "billing"}));
    assert_eq!(e.code, ErrorCode::NotFound);
}

#[test]
fn unknown_tool_lists_the_tools() {
    let (_dir, reg) = workspace();
    let e = err(&reg, "change.delete", json!({}));
    assert_eq!(e.code, ErrorCode::UnknownTool);
    assert_eq!(
        (e.code.as_str(), e.code.http_status()),
        ("UNKNOWN_TOOL", 404)
    );
    assert!(e
        .hint
        .unwrap()
        .contains("change.list, change.open, change.archive"));
}

#[test]
fn invalid_input_names_the_field() {
    let (_dir, reg) = workspace();
    let cases = [
        ("change.open", json!({}), "input.slug: required"),
        (
            "change.open",
            json!({"slug": 7}),
            "input.slug: must be a string",
        ),
        (
            "change.open",
            json!({"slug": "Add_Thing"}),
            "input.slug: must match ^[a-z0-9][a-z0-9-]{0,63}$",
        ),
        (
            "change.open",
            json!({"slug": "x", "slgu": 1}),
            "input.slgu: unknown field",
        ),
        (
            "change.archive",
            json!({"slug": "add-webhooks", "force": "yes"}),
            "input.force: must be a boolean",
        ),
        (
            "task.update",
            json!({"slug": "add-webhooks", "id": "one", "done": true}),
            "input.id: must match",
        ),
        (
            "task.update",
            json!({"slug": "add-webhooks", "id": "1.1"}),
            "input.done: required",
        ),
        ("change.list", json!([1]), "input: must be an object"),
        (
            "spec.open",
            json!({"capability": ""}),
            "input.capability: must match",
        ),
    ];
    for (tool, input, want) in cases {
        let e = err(&reg, tool, input.clone());
        assert_eq!(e.code, ErrorCode::InvalidInput, "{tool} {input}");
        assert!(
            e.message.starts_with(want),
            "{tool} {input}: {:?} does not start with {want:?}",
            e.message
        );
    }
    // Absent input is an empty object.
    call(&reg, "spec.list", Value::Null).unwrap();
}

#[test]
fn path_escapes_are_refused() {
    let (dir, reg) = workspace();
    let root = dir.path().join("openspec");
    for slug in ["../specs", "..", "/etc", "a/../../b", "changes/../x"] {
        let e = err(&reg, "change.open", json!({"slug": slug}));
        assert_eq!(e.code, ErrorCode::InvalidInput, "{slug}");
        assert!(
            e.message.starts_with("input.slug: must match"),
            "{slug}: {}",
            e.message
        );
    }
    let e = err(&reg, "spec.open", json!({"capability": "../../etc"}));
    assert!(e.message.contains("`..` are not allowed"), "{}", e.message);
    let e = err(&reg, "change.open", json!({"slug": "archive"}));
    assert_eq!(e.code, ErrorCode::InvalidInput);

    // Symlinks that lead out of the workspace are refused, not followed.
    std::os::unix::fs::symlink("/etc", root.join("changes/evil")).unwrap();
    let e = err(&reg, "change.open", json!({"slug": "evil"}));
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.contains("outside the workspace"), "{}", e.message);
    let e = err(&reg, "change.archive", json!({"slug": "evil"}));
    assert!(e.message.contains("outside the workspace"), "{}", e.message);
    // ... and skipped by the listing.
    let listed = call(&reg, "change.list", json!({})).unwrap().structured;
    assert!(!listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["slug"] == "evil"));

    std::fs::create_dir(root.join("specs/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("specs/passwd/spec.md")).unwrap();
    let e = err(&reg, "spec.open", json!({"capability": "passwd"}));
    assert!(e.message.contains("outside the workspace"), "{}", e.message);

    let tasks = root.join("changes/add-webhooks/tasks.md");
    std::fs::remove_file(&tasks).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &tasks).unwrap();
    let e = err(&reg, "task.list", json!({"slug": "add-webhooks"}));
    assert!(e.message.contains("outside the workspace"), "{}", e.message);
    let e = err(
        &reg,
        "task.update",
        json!({"slug": "add-webhooks", "id": "1.1", "done": false}),
    );
    assert!(e.message.contains("outside the workspace"), "{}", e.message);

    // A delta folder linked outside cannot be applied either.
    let delta = root.join("changes/add-webhooks/specs/webhooks");
    std::fs::remove_dir_all(&delta).unwrap();
    std::os::unix::fs::symlink("/etc", &delta).unwrap();
    let e = err(
        &reg,
        "change.archive",
        json!({"slug": "add-webhooks", "force": true}),
    );
    assert!(e.message.contains("outside the workspace"), "{}", e.message);

    // A symlink that stays inside the workspace is fine.
    std::os::unix::fs::symlink(
        root.join("changes/add-task-due-dates"),
        root.join("changes/due-dates-alias"),
    )
    .unwrap();
    let out = call(&reg, "change.open", json!({"slug": "due-dates-alias"})).unwrap();
    assert_eq!(out.structured["title"], "Add due dates to tasks");
}

#[test]
fn change_open_sees_every_kind_of_write_despite_its_cache() {
    let (dir, reg) = workspace();
    let change = dir.path().join("openspec/changes/add-webhooks");
    let open = |reg: &Registry| {
        call(reg, "change.open", json!({"slug": "add-webhooks"}))
            .unwrap()
            .structured
    };
    // Files younger than the settle window are never cached; let the fresh copy age past it.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let first = open(&reg);
    assert_eq!(open(&reg), first);

    // In-place edit of the same size (no rename, no new inode).
    let proposal = change.join("proposal.md");
    let text = std::fs::read_to_string(&proposal).unwrap();
    let edited = text.replacen("Add outgoing webhooks", "Add outgoing WEBHOOKS", 1);
    assert_eq!(edited.len(), text.len());
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&proposal)
            .unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(edited.as_bytes()).unwrap();
    }
    assert_eq!(open(&reg)["title"], "Add outgoing WEBHOOKS");

    // Atomic replace by another "replica" (a second registry over the same folder).
    let other = Registry::new(Workspace::open(dir.path()).unwrap());
    call(
        &other,
        "task.update",
        json!({"slug": "add-webhooks", "id": "1.1", "done": false}),
    )
    .unwrap();
    assert_eq!(open(&reg)["progress"], json!({"done": 4, "total": 5}));

    // A file appearing.
    std::fs::write(change.join("design.md"), "# Design\n\nOutbox pattern.\n").unwrap();
    assert_eq!(open(&reg)["design"], "# Design\n\nOutbox pattern.\n");

    // The change moving away.
    call(
        &other,
        "change.archive",
        json!({"slug": "add-webhooks", "force": true}),
    )
    .unwrap();
    assert_eq!(
        err(&reg, "change.open", json!({"slug": "add-webhooks"})).code,
        ErrorCode::NotFound
    );
}
