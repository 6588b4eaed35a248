//! Archive rules against a temp copy of examples/workspace: every delta kind, apply order,
//! new capabilities, refusals that leave every byte as it was, and exactly-once archiving
//! across threads and across processes.

mod common;
use common::*;

use backend::openspec::archive::{self, Counts};
use backend::openspec::delta;
use backend::openspec::Workspace;
use backend::tools::{ErrorCode, Progress, Registry};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};

fn os(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("openspec")
}

/// Every file under `root` with its bytes, to prove "nothing changed".
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `### Requirement:` names of a spec file, in order.
fn requirement_names(spec: &str) -> Vec<String> {
    spec.lines()
        .filter_map(|l| l.strip_prefix("### Requirement: "))
        .map(str::to_string)
        .collect()
}

/// The text of one requirement block as written (header to the next block or section).
fn block<'a>(doc: &'a str, name: &str) -> &'a str {
    let start = doc
        .find(&format!("### Requirement: {name}\n"))
        .unwrap_or_else(|| panic!("no {name}"));
    let rest = &doc[start + 4..];
    let end = [rest.find("\n### Requirement:"), rest.find("\n## ")]
        .into_iter()
        .flatten()
        .min()
        .map(|e| e + 4)
        .unwrap_or(rest.len() + 4);
    doc[start..start + end].trim_end()
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(f64, Option<f64>, String)>>);

impl Progress for Recorder {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        self.0
            .lock()
            .unwrap()
            .push((progress, total, message.unwrap_or("").to_string()));
    }
}

#[test]
fn archive_applies_every_delta_kind_and_moves_the_change() {
    let (dir, reg) = workspace();
    let root = os(&dir);
    let auth_before = read(root.join("specs/auth/spec.md"));
    let audit_before = read(root.join("specs/audit-log/spec.md"));
    let auth_delta = read(root.join("changes/add-two-factor-auth/specs/auth/spec.md"));
    let audit_delta = read(root.join("changes/add-two-factor-auth/specs/audit-log/spec.md"));

    let progress = Recorder::default();
    let out = reg
        .call(
            "change.archive",
            json!({"slug": "add-two-factor-auth"}),
            &progress,
        )
        .unwrap();
    let archived_as = format!("{}-add-two-factor-auth", today());
    assert_eq!(out.structured["archivedAs"], json!(archived_as));
    assert_eq!(
        out.structured["specs"],
        json!([
            {"capability": "audit-log", "created": false, "added": 2, "modified": 0, "removed": 1, "renamed": 0},
            {"capability": "auth", "created": false, "added": 1, "modified": 2, "removed": 0, "renamed": 1},
        ])
    );

    // auth: RENAMED kept the block's place, MODIFIED replaced it (under the new name) and
    // Session Expiry, ADDED appended; untouched blocks are byte-identical.
    let auth = read(root.join("specs/auth/spec.md"));
    assert_eq!(
        requirement_names(&auth),
        [
            "Password Sign-In",
            "Session Expiry",
            "Account Lockout",
            "Password Reset",
            "Two-Factor Authentication"
        ]
    );
    assert_eq!(
        block(&auth, "Password Sign-In"),
        block(&auth_delta, "Password Sign-In")
    );
    assert_eq!(
        block(&auth, "Session Expiry"),
        block(&auth_delta, "Session Expiry")
    );
    assert!(!auth.contains("12 hours"));
    assert_eq!(
        block(&auth, "Account Lockout"),
        block(&auth_before, "Account Lockout")
    );
    assert_eq!(
        block(&auth, "Password Reset"),
        block(&auth_before, "Password Reset")
    );
    assert_eq!(
        block(&auth, "Two-Factor Authentication"),
        block(&auth_delta, "Two-Factor Authentication")
    );
    let head = auth_before.split("## Requirements").next().unwrap();
    assert!(auth.starts_with(head), "title and Purpose are kept");
    assert!(!auth.contains("Password Login"));

    // audit-log: REMOVED dropped, two ADDED appended in order.
    let audit = read(root.join("specs/audit-log/spec.md"));
    assert_eq!(
        requirement_names(&audit),
        [
            "Audit Event Recording",
            "Audit Log Search",
            "Security Event Logging",
            "Signed Audit Export"
        ]
    );
    assert!(!audit.contains("Plaintext Log Export"));
    assert_eq!(
        block(&audit, "Audit Log Search"),
        block(&audit_before, "Audit Log Search")
    );
    assert_eq!(
        block(&audit, "Signed Audit Export"),
        block(&audit_delta, "Signed Audit Export")
    );

    // Moved, with its files intact.
    assert!(!root.join("changes/add-two-factor-auth").exists());
    assert_eq!(
        read(
            root.join("changes/archive")
                .join(&archived_as)
                .join("specs/auth/spec.md")
        ),
        auth_delta
    );
    let listed = call(&reg, "change.list", json!({"include_archived": true}))
        .unwrap()
        .structured;
    assert!(!listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["slug"] == "add-two-factor-auth"));
    assert!(listed["archived"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == json!(archived_as)));

    // Progress: validate, one step per capability, move; increasing, ending at total.
    let steps = progress.0.lock().unwrap().clone();
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert!(steps.windows(2).all(|w| w[0].0 < w[1].0), "{steps:?}");
    assert_eq!(steps.last().unwrap().0, steps.last().unwrap().1.unwrap());
    assert!(
        steps.iter().any(|s| s.2.contains("applied auth")),
        "{steps:?}"
    );
    assert!(
        steps
            .last()
            .unwrap()
            .2
            .contains("moved to changes/archive/"),
        "{steps:?}"
    );
}

#[test]
fn archiving_again_is_a_conflict_naming_the_archive() {
    // Two replicas whose calls do not overlap in time must still see one success and
    // one conflict, not a conflict for one timing and "not found" for another.
    let (_dir, reg) = workspace();
    call(&reg, "change.archive", json!({"slug": "add-webhooks"})).unwrap();
    let err = call(&reg, "change.archive", json!({"slug": "add-webhooks"})).unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(
        err.message
            .contains(&format!("changes/archive/{}-add-webhooks", today())),
        "{}",
        err.message
    );
    // Reading it is still "not found among the active changes", pointing to the archive.
    let err = call(&reg, "change.open", json!({"slug": "add-webhooks"})).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(err
        .hint
        .unwrap_or_default()
        .contains(&format!("{}-add-webhooks", today())));
}

#[test]
fn new_capability_gets_a_new_spec_file() {
    let (dir, reg) = workspace();
    let root = os(&dir);
    assert!(!root.join("specs/webhooks").exists());
    let out = call(&reg, "change.archive", json!({"slug": "add-webhooks"})).unwrap();
    assert_eq!(out.structured["specs"][0]["created"], json!(true));
    let spec = read(root.join("specs/webhooks/spec.md"));
    assert!(
        spec.starts_with("# webhooks Specification\n\n## Purpose\n"),
        "{spec}"
    );
    assert_eq!(
        requirement_names(&spec),
        [
            "Webhook Registration",
            "Signed Delivery",
            "Delivery Retries"
        ]
    );
    let listed = call(&reg, "spec.list", json!({})).unwrap().structured;
    assert!(listed["specs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["capability"] == "webhooks"));
    let opened = call(&reg, "spec.open", json!({"capability": "webhooks"}))
        .unwrap()
        .structured;
    assert_eq!(
        opened["requirements"][1]["scenarios"],
        json!(["Receiver verifies the signature"])
    );
}

#[test]
fn invalid_delta_names_the_requirement_and_changes_nothing() {
    let (dir, reg) = workspace();
    let before = snapshot(dir.path());
    let err = call(
        &reg,
        "change.archive",
        json!({"slug": "rework-notification-digest"}),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(err.message.contains("notifications"), "{}", err.message);
    assert!(
        err.message
            .contains("MODIFIED requirement \"Daily Digest Email\" does not exist"),
        "{}",
        err.message
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "every file byte-identical, nothing added"
    );
}

#[test]
fn unchecked_tasks_refuse_until_forced() {
    let (dir, reg) = workspace();
    let before = snapshot(dir.path());
    let err = call(
        &reg,
        "change.archive",
        json!({"slug": "add-task-due-dates"}),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(
        err.message
            .contains("4 of 6 tasks unchecked (1.3, 2.1, 2.2, 3.1)"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap_or_default().contains("force"));
    assert_eq!(snapshot(dir.path()), before);

    let out = call(
        &reg,
        "change.archive",
        json!({"slug": "add-task-due-dates", "force": true}),
    )
    .unwrap();
    assert_eq!(out.structured["forced"], json!(true));
    assert_eq!(out.structured["uncheckedTasks"], json!(4));
    let tasks = read(os(&dir).join("specs/task-api/spec.md"));
    assert!(tasks.contains("### Requirement: Task Due Dates"));
    assert!(tasks.contains("`sort=due`"));
}

#[test]
fn failure_after_writing_restores_every_spec() {
    let (dir, reg) = workspace();
    let root = os(&dir);
    // Make the final move impossible: changes/archive is a file, not a folder. The specs are
    // written first, so this proves they are put back.
    std::fs::remove_dir_all(root.join("changes/archive")).unwrap();
    std::fs::write(root.join("changes/archive"), "not a folder").unwrap();
    let before = snapshot(dir.path());
    let err = call(
        &reg,
        "change.archive",
        json!({"slug": "add-two-factor-auth"}),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal, "{err:?}");
    assert_eq!(snapshot(dir.path()), before);

    // Same for a new capability: its new folder and file are removed again.
    let err = call(&reg, "change.archive", json!({"slug": "add-webhooks"})).unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal, "{err:?}");
    assert_eq!(snapshot(dir.path()), before);
    assert!(!root.join("specs/webhooks").exists());
}

// ---- delta validation, on synthetic specs --------------------------------------------------

const MAIN: &str = "# demo Specification\n\n## Purpose\nDemo.\n\n## Requirements\n\n\
### Requirement: Alpha\nThe system SHALL alpha.\n\n#### Scenario: a\n- **WHEN** a\n- **THEN** a\n\n\
### Requirement: Beta\nThe system SHALL beta.\n\n#### Scenario: b\n- **WHEN** b\n- **THEN** b\n\n\
### Requirement: Gamma\nThe system SHALL gamma.\n\n#### Scenario: g\n- **WHEN** g\n- **THEN** g\n";

fn req(name: &str, body: &str) -> String {
    format!("### Requirement: {name}\n{body}\n\n#### Scenario: s\n- **WHEN** x\n- **THEN** y\n")
}

fn apply(delta_text: &str, current: Option<&str>) -> Result<(String, Counts), String> {
    archive::apply("demo", "chg", &delta::parse(delta_text), current).map_err(|e| e.message)
}

#[test]
fn apply_order_is_renamed_removed_modified_added() {
    // MODIFIED names the post-rename header, ADDED reuses nothing; REMOVED before ADDED means
    // the block list is Alpha' (renamed + modified in place), Gamma, then the addition.
    let delta_text = format!(
        "## ADDED Requirements\n\n{}\n## MODIFIED Requirements\n\n{}\n## REMOVED Requirements\n\n### Requirement: Beta\n\n\
## RENAMED Requirements\n\n- FROM: `### Requirement: Alpha`\n- TO: `### Requirement: Alpha Prime`\n",
        req("Delta", "The system SHALL delta."),
        req("Alpha Prime", "The system SHALL alpha, better.")
    );
    let (out, counts) = apply(&delta_text, Some(MAIN)).unwrap();
    assert_eq!(
        counts,
        Counts {
            added: 1,
            modified: 1,
            removed: 1,
            renamed: 1
        }
    );
    let expected = format!(
        "# demo Specification\n\n## Purpose\nDemo.\n\n## Requirements\n\n{}\n{}\n{}",
        req("Alpha Prime", "The system SHALL alpha, better."),
        "### Requirement: Gamma\nThe system SHALL gamma.\n\n#### Scenario: g\n- **WHEN** g\n- **THEN** g\n",
        req("Delta", "The system SHALL delta."),
    );
    assert_eq!(out, expected);
}

#[test]
fn renamed_keeps_the_body_in_place() {
    let delta_text = "## RENAMED Requirements\n- FROM: `### Requirement: Beta`\n- TO: `### Requirement: Bravo`\n";
    let (out, _) = apply(delta_text, Some(MAIN)).unwrap();
    assert_eq!(
        out,
        MAIN.replace("### Requirement: Beta", "### Requirement: Bravo")
    );
}

#[test]
fn delta_errors_name_the_requirement() {
    let cases: Vec<(String, &str)> = vec![
        (format!("## ADDED Requirements\n\n{}", req("Alpha", "dup")), "ADDED requirement \"Alpha\" already exists"),
        (format!("## MODIFIED Requirements\n\n{}", req("Omega", "x")), "MODIFIED requirement \"Omega\" does not exist"),
        ("## REMOVED Requirements\n\n### Requirement: Omega\n".into(), "REMOVED requirement \"Omega\" does not exist"),
        (
            "## RENAMED Requirements\n- FROM: `### Requirement: Omega`\n- TO: `### Requirement: Psi`\n".into(),
            "RENAMED requirement \"Omega\" does not exist",
        ),
        (
            "## RENAMED Requirements\n- FROM: `### Requirement: Alpha`\n- TO: `### Requirement: Beta`\n".into(),
            "RENAMED target \"Beta\" already exists",
        ),
        (
            format!("## ADDED Requirements\n\n{}\n{}", req("New", "a"), req("New", "b")),
            "requirement \"New\" appears twice in ADDED",
        ),
        (
            format!("## MODIFIED Requirements\n\n{}\n## REMOVED Requirements\n### Requirement: Beta\n", req("Beta", "x")),
            "requirement \"Beta\" is both MODIFIED and REMOVED",
        ),
        (
            format!(
                "## RENAMED Requirements\n- FROM: `### Requirement: Alpha`\n- TO: `### Requirement: A2`\n\n## MODIFIED Requirements\n\n{}",
                req("Alpha", "x")
            ),
            "MODIFIED must use the new name",
        ),
        (
            "## ADDED Requirements\n\n### Requirement: Bare\nThe system SHALL have no scenario.\n".into(),
            "ADDED requirement \"Bare\" has no `#### Scenario:`",
        ),
        ("# nothing here\n".into(), "no ADDED, MODIFIED, REMOVED or RENAMED"),
    ];
    for (delta_text, want) in cases {
        let err = apply(&delta_text, Some(MAIN)).unwrap_err();
        assert!(
            err.contains(want),
            "want {want:?} in {err:?}\nfor delta:\n{delta_text}"
        );
        assert!(err.starts_with("demo: "), "names the capability: {err}");
    }
}

#[test]
fn new_capability_takes_only_added() {
    let err = apply(
        &format!("## MODIFIED Requirements\n\n{}", req("Alpha", "x")),
        None,
    )
    .unwrap_err();
    assert!(err.contains("a new capability takes only ADDED"), "{err}");
    let err = apply("## REMOVED Requirements\n### Requirement: Alpha\n", None).unwrap_err();
    assert!(err.contains("REMOVED requirement \"Alpha\""), "{err}");
    let (out, counts) = apply(
        &format!("## ADDED Requirements\n\n{}", req("First", "x")),
        None,
    )
    .unwrap();
    assert_eq!(counts.added, 1);
    assert!(out.starts_with("# demo Specification\n\n## Purpose\n"));
    assert!(
        out.ends_with(&format!("## Requirements\n\n{}", req("First", "x"))),
        "{out}"
    );
}

// ---- exactly once, across threads and processes ---------------------------------------------

#[test]
fn two_threads_archiving_the_same_change_one_wins() {
    let (dir, reg) = workspace();
    let reg = Arc::new(reg);
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (reg, barrier) = (reg.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                call(
                    &reg,
                    "change.archive",
                    json!({"slug": "add-two-factor-auth"}),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflicts: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 1, "{results:?}");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].code, ErrorCode::Conflict, "{:?}", conflicts[0]);
    // Applied once: the ADDED requirement appears once.
    let auth = read(os(&dir).join("specs/auth/spec.md"));
    assert_eq!(
        auth.matches("### Requirement: Two-Factor Authentication")
            .count(),
        1
    );
}

const CHILD_ENV: &str = "OPENSPEC_ARCHIVE_CHILD_WS";

/// Not a test on its own: the body of each child process of the next test (the test binary
/// re-executes itself with this test's name and the workspace in the environment).
#[test]
#[ignore = "run as a child process by two_processes_archiving_the_same_change_one_wins"]
fn archive_child_process() {
    let ws = PathBuf::from(std::env::var(CHILD_ENV).expect("child runs with the workspace env"));
    let ready = ws.join(format!("ready-{}", std::process::id()));
    std::fs::write(&ready, "").unwrap();
    // Start together: wait for the parent's go file.
    while !ws.join("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let reg = Registry::new(Workspace::open(&ws).unwrap());
    match call(
        &reg,
        "change.archive",
        json!({"slug": "add-two-factor-auth"}),
    ) {
        Ok(out) => println!("CHILD-RESULT ok {}", out.structured["archivedAs"]),
        Err(e) => println!("CHILD-RESULT {} {}", e.code.as_str(), e.message),
    }
}

#[test]
fn two_processes_archiving_the_same_change_one_wins() {
    let (dir, _reg) = workspace();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "archive_child_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ready = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("ready-")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ready() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::write(dir.path().join("go"), "").unwrap();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            // The harness prints "test name ... " before the child's own line.
            stdout
                .lines()
                .find_map(|l| l.find("CHILD-RESULT").map(|i| l[i..].to_string()))
                .unwrap_or_else(|| panic!("{stdout}"))
        })
        .collect();
    assert_eq!(
        outputs
            .iter()
            .filter(|l| l.starts_with("CHILD-RESULT ok"))
            .count(),
        1,
        "{outputs:?}"
    );
    assert_eq!(
        outputs
            .iter()
            .filter(|l| l.starts_with("CHILD-RESULT CONFLICT"))
            .count(),
        1,
        "{outputs:?}"
    );
    let auth = read(os(&dir).join("specs/auth/spec.md"));
    assert_eq!(
        auth.matches("### Requirement: Two-Factor Authentication")
            .count(),
        1
    );
    assert!(
        !os(&dir).join("changes/.openspec.lock").exists(),
        "lock released"
    );
}

#[test]
fn delta_folder_with_an_invalid_name_is_refused_not_skipped() {
    let (dir, reg) = workspace();
    let specs = os(&dir).join("changes/add-webhooks/specs");
    std::fs::create_dir(specs.join("Billing_API")).unwrap();
    std::fs::write(specs.join("Billing_API/spec.md"), "## ADDED Requirements\n").unwrap();
    let before = snapshot(dir.path());
    let err = call(&reg, "change.archive", json!({"slug": "add-webhooks"})).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(err.message.contains("Billing_API"), "{}", err.message);
    assert_eq!(snapshot(dir.path()), before);
}
