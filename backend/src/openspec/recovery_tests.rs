use super::*;

/// `openspec/` with specs a and b (old), change c, and temps holding the new content.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    intent: Intent,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let mut specs = Vec::new();
    for cap in ["a", "b"] {
        std::fs::create_dir_all(root.join("specs").join(cap)).unwrap();
        std::fs::write(root.join(format!("specs/{cap}/spec.md")), "old").unwrap();
        let temp = format!("specs/{cap}/{}", fsio::temp_name("spec.md"));
        std::fs::write(root.join(&temp), format!("new {cap}")).unwrap();
        specs.push(SpecWrite {
            target: format!("specs/{cap}/spec.md"),
            temp,
            bytes: 5,
            sha256: sha256_hex(format!("new {cap}").as_bytes()),
        });
    }
    std::fs::create_dir_all(root.join("changes/c")).unwrap();
    std::fs::create_dir_all(root.join("changes/archive")).unwrap();
    let intent = Intent {
        version: 1,
        op: "change.archive".into(),
        slug: "c".into(),
        host: "h".into(),
        pid: 1,
        created_ms: 0,
        specs,
        created_dirs: vec![],
        change_move: Move {
            from: "changes/c".into(),
            to: "changes/archive/2025-01-01-c".into(),
        },
    };
    write_intent(&root.join("changes"), &intent).unwrap();
    Fixture {
        _dir: dir,
        root,
        intent,
    }
}

fn spec(f: &Fixture, cap: &str) -> String {
    std::fs::read_to_string(f.root.join(format!("specs/{cap}/spec.md"))).unwrap()
}

fn leftovers(f: &Fixture) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["changes", "specs/a", "specs/b"] {
        for e in std::fs::read_dir(f.root.join(dir)).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') {
                out.push(format!("{dir}/{n}"));
            }
        }
    }
    out
}

fn assert_new(f: &Fixture) {
    assert_eq!(spec(f, "a"), "new a");
    assert_eq!(spec(f, "b"), "new b");
    assert!(!f.root.join("changes/c").exists());
    assert!(f.root.join("changes/archive/2025-01-01-c").is_dir());
    assert_eq!(leftovers(f), Vec::<String>::new());
}

#[test]
fn committed_with_nothing_renamed_rolls_forward() {
    let f = fixture();
    recover(&f.root.join("changes")).unwrap();
    assert_new(&f);
}

#[test]
fn killed_between_renames_rolls_forward() {
    let f = fixture();
    let s = &f.intent.specs[0];
    std::fs::rename(f.root.join(&s.temp), f.root.join(&s.target)).unwrap();
    recover(&f.root.join("changes")).unwrap();
    assert_new(&f);
}

#[test]
fn killed_after_the_move_only_removes_the_record() {
    let f = fixture();
    roll_forward(&f.root, &f.intent, &|_, _| {}).unwrap();
    write_intent(&f.root.join("changes"), &f.intent).unwrap();
    recover(&f.root.join("changes")).unwrap();
    assert_new(&f);
    // Idempotent: recovering again changes nothing.
    recover(&f.root.join("changes")).unwrap();
    assert_new(&f);
}

#[test]
fn a_temp_missing_before_any_rename_is_undone() {
    let f = fixture();
    std::fs::remove_file(f.root.join(&f.intent.specs[1].temp)).unwrap();
    recover(&f.root.join("changes")).unwrap();
    assert_eq!(spec(&f, "a"), "old");
    assert_eq!(spec(&f, "b"), "old");
    assert!(f.root.join("changes/c").is_dir());
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

#[test]
fn renamed_and_lost_mixed_is_refused_naming_the_file() {
    let f = fixture();
    let s = &f.intent.specs[0];
    std::fs::rename(f.root.join(&s.temp), f.root.join(&s.target)).unwrap();
    std::fs::remove_file(f.root.join(&f.intent.specs[1].temp)).unwrap();
    let err = recover(&f.root.join("changes")).unwrap_err();
    assert!(err.message.contains("specs/b/spec.md"), "{}", err.message);
}

#[test]
fn strays_without_a_record_are_swept() {
    let f = fixture();
    std::fs::remove_file(f.root.join("changes").join(INTENT_FILE)).unwrap();
    request_sweep();
    recover(&f.root.join("changes")).unwrap();
    assert_eq!(spec(&f, "a"), "old");
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

#[test]
fn record_paths_must_stay_inside() {
    let f = fixture();
    let mut bad = f.intent.clone();
    bad.specs[0].target = "../outside".into();
    write_intent(&f.root.join("changes"), &bad).unwrap();
    let err = recover(&f.root.join("changes")).unwrap_err();
    assert!(
        err.message.contains("plain relative path"),
        "{}",
        err.message
    );
}
