//! `backend backup` and `backend restore` as an operator runs them: a backup taken under the
//! workspace lock, restored over a changed workspace (also one a running backend serves),
//! damaged archives refused with the workspace left as it was, stdin/stdout, and restoring
//! into an empty WORKING_DIRECTORY.

use e2e::{bin, curl, workspace_copy, Backend};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `backend <args>` with only WORKING_DIRECTORY set (and PATH), stdin from `input` if given.
fn run(wd: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin("backend"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WORKING_DIRECTORY", wd)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start backend");
    if let Some(data) = input {
        let mut stdin = child.stdin.take().unwrap();
        // The reader may stop early (a refused archive): a broken pipe is fine then.
        let _ = stdin.write_all(data);
    }
    child.wait_with_output().expect("wait for backend")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn backup_file(wd: &Path, file: &Path) {
    let out = run(wd, &["backup", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "backup: {}", stderr(&out));
}

/// Every file (with its bytes) and folder (None) under `root`, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ty = entry.file_type().unwrap();
            if ty.is_dir() {
                out.insert(rel.clone(), None);
                walk(&entry.path(), &rel, out);
            } else {
                assert!(ty.is_file(), "{rel}: not a file or folder");
                out.insert(rel, Some(fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn pipe(cmd: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} {args:?} failed");
    out.stdout
}

/// Member names, with GNU tar.
fn members(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar tzf: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A ustar header (and its data, padded) for hand-made hostile members.
fn tar_member(name: &str, typeflag: u8, data: &[u8], link: &str) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// The tar with `member` inserted just before the manifest (the last member).
fn insert_before_manifest(tar: &[u8], member: &[u8]) -> Vec<u8> {
    let at = (0..tar.len())
        .step_by(512)
        .find(|&i| tar[i..].starts_with(b"backup-manifest.json\0"))
        .expect("manifest header");
    [&tar[..at], member, &tar[at..]].concat()
}

fn tick(b: &Backend, slug: &str, id: &str, done: bool) {
    let body =
        format!(r#"{{"tool":"task.update","args":{{"slug":"{slug}","id":"{id}","done":{done}}}}}"#);
    let out = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", b.url),
        "-H",
        "content-type: application/json",
        "--data-binary",
        &body,
    ]);
    assert_eq!(out.status, 200, "task.update: {}", out.body);
}

/// Takes the workspace lock as another replica would (format of backend/src/openspec/lock.rs;
/// host "e2e-test" so it is never judged a dead local pid).
fn hold_lock(root: &Path) -> PathBuf {
    let lock = root.join("openspec/changes/.openspec.lock");
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    fs::write(
        &lock,
        format!("pid=1\nhost=e2e-test\ncreated_ms={millis}\ntoken=held-by-the-test\n"),
    )
    .unwrap();
    lock
}

fn no_staging_left(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".openspec-restore-"),
            "staging folder {name} left in {}",
            dir.display()
        );
    }
}

#[test]
fn help_names_both_subcommands_and_bad_arguments_exit_2() {
    let out = Command::new(bin("backend")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backend backup") && text.contains("backend restore"),
        "{text}"
    );
    let ws = workspace_copy();
    for args in [
        &["backup", "a", "b"][..],
        &["backup", "--force"],
        &["restore"],
        &["restore", "--wait", "soon", "-"],
    ] {
        let out = run(ws.path(), args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let out = run(ws.path(), &["backup", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--wait"));
}

#[test]
fn restore_brings_back_the_backed_up_tree_under_a_running_backend() {
    let ws = workspace_copy();
    let root = ws.path().join("openspec");
    let b = Backend::start(ws.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ws.tar.gz");
    // A stray temp file of an interrupted write is not workspace content.
    let stray = root.join("changes/add-task-due-dates/.tasks.md.tmp-99-0");
    fs::write(&stray, "half").unwrap();
    let before = snapshot(&root);
    backup_file(ws.path(), &archive);
    let names = members(&archive);
    assert!(
        names.iter().any(|n| n == "openspec/project.md"),
        "{names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("backup-manifest.json")
    );
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    fs::remove_file(&stray).unwrap();
    let before: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(k, _)| !k.contains(".tmp-"))
        .collect();

    // Change it: a task ticked through the API, a file edited, one added, one removed.
    tick(&b, "add-task-due-dates", "1.3", true);
    fs::write(root.join("project.md"), "rewritten\n").unwrap();
    fs::write(root.join("specs/notes.md"), "new\n").unwrap();
    fs::remove_file(root.join("changes/add-webhooks/tasks.md")).unwrap();
    assert_ne!(snapshot(&root), before);

    let out = run(ws.path(), &["restore", archive.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "restore: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("restored") && err.contains(" files"),
        "summary: {err}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "the backed-up tree is back exactly"
    );
    no_staging_left(ws.path());

    // The running backend serves the restored state, and can write to it.
    let out = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", b.url),
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"tool":"task.list","args":{"slug":"add-task-due-dates"}}"#,
    ]);
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.body.contains("\"1.3\""), "{}", out.body);
    let tasks = fs::read_to_string(root.join("changes/add-task-due-dates/tasks.md")).unwrap();
    assert!(tasks.contains("- [ ] 1.3"), "{tasks}");
    tick(&b, "add-task-due-dates", "1.3", true);
    let tasks = fs::read_to_string(root.join("changes/add-task-due-dates/tasks.md")).unwrap();
    assert!(tasks.contains("- [x] 1.3"), "{tasks}");
}

#[test]
fn restore_works_when_working_directory_is_the_openspec_folder_itself() {
    let ws = workspace_copy();
    let root = ws.path().join("openspec");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ws.tar.gz");
    backup_file(&root, &archive);
    let before = snapshot(&root);
    fs::write(root.join("extra.md"), "x").unwrap();
    fs::remove_dir_all(root.join("specs")).unwrap();
    let out = run(&root, &["restore", archive.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "restore: {}", stderr(&out));
    assert_eq!(snapshot(&root), before);
}

#[test]
fn backup_waits_for_the_lock_and_never_contains_it() {
    let ws = workspace_copy();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("b.tar.gz");
    let lock = hold_lock(ws.path());

    // Held past --wait: exit 1 naming the holder, nothing written.
    let started = Instant::now();
    let out = run(
        ws.path(),
        &["backup", "--wait", "1", archive.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");
    let err = stderr(&out);
    assert!(err.contains("locked") && err.contains("e2e-test"), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left");

    // Released while it waits: it goes on and succeeds.
    let mut child = Command::new(bin("backend"))
        .env_clear()
        .env("WORKING_DIRECTORY", ws.path())
        .args(["backup", "--wait", "20", archive.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "backup waits while the lock is held"
    );
    assert!(!archive.exists());
    fs::remove_file(&lock).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let names = members(&archive);
    assert!(
        !names.iter().any(|n| n.contains(".openspec.lock")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("openspec/changes/")));

    // Restore takes the same lock: held past --wait, it refuses and changes nothing.
    fs::write(ws.path().join("openspec/project.md"), "changed\n").unwrap();
    hold_lock(ws.path());
    let before = snapshot(ws.path());
    let out = run(
        ws.path(),
        &["restore", "--wait", "1", archive.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("e2e-test"), "{}", stderr(&out));
    assert_eq!(snapshot(ws.path()), before, "workspace unchanged");
    no_staging_left(ws.path());
}

#[test]
fn damaged_or_hostile_archives_are_refused_and_the_workspace_is_unchanged() {
    let ws = workspace_copy();
    let root = ws.path().join("openspec");
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.tar.gz");
    backup_file(ws.path(), &good_path);
    let good = fs::read(&good_path).unwrap();
    // The workspace now differs from the backup, so a wrongly accepted restore would show.
    fs::write(root.join("project.md"), "changed since the backup\n").unwrap();
    let before = snapshot(ws.path());

    let tar = pipe("gzip", &["-dc"], &good);
    let mut flipped_member = tar.clone();
    let at = flipped_member
        .windows(10)
        .position(|w| w == b"## Purpose")
        .expect("a spec's text in the tar");
    flipped_member[at + 3] ^= 0x20;
    let mut flipped_gz = good.clone();
    let mid = flipped_gz.len() / 2;
    flipped_gz[mid] ^= 0x01;
    let evil = tar_member("../evil", b'0', b"pwned\n", "");
    let inner_evil = tar_member("openspec/../../evil", b'0', b"pwned\n", "");
    let link = tar_member("openspec/passwd", b'2', b"", "/etc/passwd");
    let outside = tar_member("etc/cron.d/x", b'0', b"x\n", "");
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), &["truncated"]),
        (
            "cut before the trailer",
            good[..good.len() - 4].to_vec(),
            &["gzip"],
        ),
        (
            "a byte flipped in the gzip stream",
            flipped_gz,
            // Where the flip lands decides which check sees it first.
            &["corrupt", "checksum", "SHA-256", "truncated"],
        ),
        (
            "a byte flipped inside a member",
            pipe("gzip", &["-c"], &flipped_member),
            &["SHA-256"],
        ),
        (
            "a ../evil entry",
            pipe("gzip", &["-c"], &insert_before_manifest(&tar, &evil)),
            &["`..`"],
        ),
        (
            "an openspec/../../evil entry",
            pipe("gzip", &["-c"], &insert_before_manifest(&tar, &inner_evil)),
            &["`..`"],
        ),
        (
            "a symlink",
            pipe("gzip", &["-c"], &insert_before_manifest(&tar, &link)),
            &["link"],
        ),
        (
            "an entry outside openspec/",
            pipe("gzip", &["-c"], &insert_before_manifest(&tar, &outside)),
            &["outside openspec/"],
        ),
        (
            "not gzip at all",
            b"hello, this is not an archive\n".to_vec(),
            &["gzip"],
        ),
    ];
    for (what, bytes, expect) in cases {
        let path = dir.path().join("bad.tar.gz");
        fs::write(&path, &bytes).unwrap();
        let out = run(ws.path(), &["restore", path.to_str().unwrap()], None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            expect.iter().any(|e| err.contains(e)) && err.contains("workspace unchanged"),
            "{what}: message should name the problem ({expect:?}): {err}"
        );
        assert_eq!(snapshot(ws.path()), before, "{what}: workspace unchanged");
        assert!(!dir.path().join("evil").exists() && !ws.path().join("evil").exists());
        no_staging_left(ws.path());
    }
    // The same through stdin.
    let out = run(ws.path(), &["restore", "-"], Some(&good[..good.len() / 3]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(snapshot(ws.path()), before);
}

#[test]
fn backup_to_a_file_leaves_no_temp_and_restore_reads_stdin() {
    let ws = workspace_copy();
    let root = ws.path().join("openspec");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("b.tar.gz");
    let out = run(ws.path(), &["backup", archive.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("files") && err.contains("bytes") && err.contains("b.tar.gz"),
        "summary line: {err}"
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["b.tar.gz"], "only the archive, no temp file");

    // A folder that does not exist: exit 1 naming it, nothing created.
    let missing = dir.path().join("nope/b.tar.gz");
    let out = run(ws.path(), &["backup", missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));

    // Backup to stdout (the default), restore from stdin.
    let out = run(ws.path(), &["backup"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("stdout"));
    let streamed = out.stdout;
    assert_eq!(&streamed[..2], &[0x1f, 0x8b], "gzip on stdout");
    let before = snapshot(&root);
    fs::write(root.join("project.md"), "changed\n").unwrap();
    let out = run(ws.path(), &["restore", "-"], Some(&streamed));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("stdin"), "{}", stderr(&out));
    assert_eq!(snapshot(&root), before);
}

#[test]
fn restore_into_an_empty_working_directory_makes_a_servable_workspace() {
    let ws = workspace_copy();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("b.tar.gz");
    backup_file(ws.path(), &archive);
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path(), &["restore", archive.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        snapshot(&empty.path().join("openspec")),
        snapshot(&ws.path().join("openspec"))
    );
    no_staging_left(empty.path());
    let b = Backend::start(empty.path(), &[]);
    let out = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", b.url),
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"tool":"spec.list","args":{}}"#,
    ]);
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.body.contains("\"auth\""), "{}", out.body);
}

/// `POST /tools/NAME {args}` on a backend without tokens; the `result`.
fn rest(b: &Backend, tool: &str, args: &str) -> serde_json::Value {
    let out = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/{tool}", b.url),
        "-H",
        "content-type: application/json",
        "--data-binary",
        args,
    ]);
    assert_eq!(out.status, 200, "{tool}: {}", out.body);
    out.json()["result"].clone()
}

#[test]
fn backup_and_restore_carry_the_item_database_while_replicas_write() {
    let ws = workspace_copy();
    let env = [("TOOLS", "openspec,todo,memory")];
    let b = Backend::start(ws.path(), &env);
    let other = Backend::start(ws.path(), &env);
    let task = rest(&b, "create_task", r#"{"title":"kept by the backup"}"#);
    let task_id = task["task"]["id"].as_str().unwrap().to_string();
    rest(
        &b,
        "memory_remember",
        r#"{"key":"before","value":"in the backup"}"#,
    );

    // Another replica keeps writing while the backup copies the database online.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = other.url.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 500 {
                let out = curl(&[
                    "-X",
                    "POST",
                    &format!("{url}/tools/memory_remember"),
                    "--data-binary",
                    &format!(r#"{{"key":"busy-{n}","value":"x"}}"#),
                ]);
                assert_eq!(out.status, 200, "{}", out.body);
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("all.tar.gz");
    let out = run(ws.path(), &["backup", archive.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "backup: {}", stderr(&out));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    assert!(
        stderr(&out).contains("database "),
        "summary: {}",
        stderr(&out)
    );
    let names = members(&archive);
    assert!(
        names.iter().any(|n| n == "database/store.sqlite3"),
        "{names:?}"
    );
    let db_dir = ws.path().join(".mcp");
    let leftovers: Vec<_> = fs::read_dir(&db_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".backup-"))
        .collect();
    assert!(leftovers.is_empty(), "snapshot left behind: {leftovers:?}");

    // Changed after the backup: the task deleted, the memory replaced, a new one added.
    rest(&b, "delete_task", &format!(r#"{{"task_id":"{task_id}"}}"#));
    rest(
        &b,
        "memory_remember",
        r#"{"key":"before","value":"changed"}"#,
    );
    rest(
        &other,
        "memory_remember",
        r#"{"key":"after","value":"not in the backup"}"#,
    );

    let out = run(ws.path(), &["restore", archive.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "restore: {}", stderr(&out));
    assert!(
        stderr(&out).contains("database") && stderr(&out).contains("restored"),
        "summary: {}",
        stderr(&out)
    );

    // Both running replicas serve the restored items at once, and keep writing.
    for r in [&b, &other] {
        let tasks = rest(r, "list_tasks", "{}");
        assert!(tasks.to_string().contains(&task_id), "{tasks}");
        let m = rest(r, "memory_recall", r#"{"key":"before"}"#);
        assert_eq!(m["memories"][0]["value"], "in the backup");
        let gone = curl(&[
            "-X",
            "POST",
            &format!("{}/tools/memory_recall", r.url),
            "--data-binary",
            r#"{"key":"after"}"#,
        ]);
        assert_eq!(gone.status, 404, "{}", gone.body);
    }
    rest(
        &other,
        "memory_remember",
        r#"{"key":"after-restore","value":"ok"}"#,
    );
    let m = rest(&b, "memory_recall", r#"{"key":"after-restore"}"#);
    assert_eq!(m["memories"][0]["value"], "ok");

    // A damaged database member is refused and nothing changes.
    let tar = pipe("gzip", &["-dc"], &fs::read(&archive).unwrap());
    let at = tar
        .windows(b"SQLite format 3".len())
        .position(|w| w == b"SQLite format 3")
        .expect("the database member");
    let mut bad = tar.clone();
    bad[at + 200] ^= 0xff;
    let bad_gz = pipe("gzip", &["-c"], &bad);
    let out = run(ws.path(), &["restore", "-"], Some(&bad_gz));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("database/store.sqlite3") && stderr(&out).contains("unchanged"),
        "{}",
        stderr(&out)
    );
    let m = rest(&b, "memory_recall", r#"{"key":"after-restore"}"#);
    assert_eq!(m["memories"][0]["value"], "ok");
}
