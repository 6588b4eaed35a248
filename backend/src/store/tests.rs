use super::sqlite::SqliteStore;
use super::*;
use std::sync::Arc;
use std::time::Duration;

fn store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::new(
        dir.path().join(".mcp/store.sqlite3"),
        Duration::from_secs(5),
    )
}

fn new(title: &str) -> NewTask {
    NewTask {
        title: title.into(),
        ..NewTask::default()
    }
}

#[test]
fn create_list_update_complete_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.check().unwrap();
    let a = s
        .create(
            "alice",
            &NewTask {
                title: "one".into(),
                description: Some("d".into()),
                due: Some("2027-01-02".into()),
            },
        )
        .unwrap();
    assert_eq!((a.version, a.completed), (1, false));
    let b = s.create("alice", &new("two")).unwrap();
    s.create("bob", &new("bob's")).unwrap();

    let page = s.list("alice", StatusFilter::All, 20, None).unwrap();
    assert_eq!(page.tasks, vec![a.clone(), b.clone()]);
    assert!(page.next_cursor.is_none());

    let patch = TaskPatch {
        title: Some("one!".into()),
        description: Some(None),
        ..TaskPatch::default()
    };
    let a2 = s.update("alice", &a.id, &patch, Some(1)).unwrap();
    assert_eq!(
        (a2.title.as_str(), a2.description.as_deref(), a2.version),
        ("one!", None, 2)
    );
    assert_eq!(a2.due.as_deref(), Some("2027-01-02"));
    assert_eq!(
        s.update("alice", &a.id, &patch, Some(1)),
        Err(StoreError::Conflict { current: 2 })
    );

    let (done, changed) = s.complete("alice", &a.id).unwrap();
    assert!(changed && done.completed && done.version == 3);
    let (again, changed) = s.complete("alice", &a.id).unwrap();
    assert!(!changed && again.version == 3);

    let open = s.list("alice", StatusFilter::Open, 20, None).unwrap();
    assert_eq!(open.tasks.len(), 1);
    assert_eq!(open.tasks[0].id, b.id);
    let completed = s.list("alice", StatusFilter::Completed, 20, None).unwrap();
    assert_eq!(completed.tasks[0].id, a.id);

    s.delete("alice", &a.id).unwrap();
    assert_eq!(s.delete("alice", &a.id), Err(StoreError::NotFound));
}

#[test]
fn owners_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let t = s.create("alice", &new("secret")).unwrap();
    let patch = TaskPatch {
        title: Some("x".into()),
        ..TaskPatch::default()
    };
    assert_eq!(
        s.update("bob", &t.id, &patch, None),
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.update("bob", &t.id, &patch, Some(1)),
        Err(StoreError::NotFound)
    );
    assert_eq!(s.complete("bob", &t.id), Err(StoreError::NotFound));
    assert_eq!(s.delete("bob", &t.id), Err(StoreError::NotFound));
    assert!(s
        .list("bob", StatusFilter::All, 20, None)
        .unwrap()
        .tasks
        .is_empty());
    assert_eq!(
        s.list("alice", StatusFilter::All, 20, None).unwrap().tasks[0],
        t
    );
}

#[test]
fn cursor_pages_are_stable_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let ids: Vec<String> = (0..25)
        .map(|i| s.create("alice", &new(&format!("t{i}"))).unwrap().id)
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = s
            .list("alice", StatusFilter::All, 7, cursor.as_ref())
            .unwrap();
        seen.extend(page.tasks.iter().map(|t| t.id.clone()));
        match page.next_cursor {
            Some(c) => {
                // Through its text form, as a client sends it back.
                cursor = Some(Cursor::decode(&c.encode()).unwrap());
            }
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert!(Cursor::decode("zz").is_none());
    assert!(Cursor::decode(&hex::encode("x\nnot-a-uuid")).is_none());
}

#[test]
fn two_stores_on_one_file_lose_no_update() {
    // Two stores are two replicas: separate connections to the same file.
    let dir = tempfile::tempdir().unwrap();
    let replicas = [Arc::new(store(&dir)), Arc::new(store(&dir))];
    let t = replicas[0].create("alice", &new("counter")).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = replicas[i % 2].clone();
            let id = t.id.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while done < 10 {
                    let page = s.list("alice", StatusFilter::All, 1, None).unwrap();
                    let cur = &page.tasks[0];
                    let n: i64 = cur.title.trim_start_matches("counter").parse().unwrap_or(0);
                    let patch = TaskPatch {
                        title: Some(format!("counter{}", n + 1)),
                        ..TaskPatch::default()
                    };
                    match s.update("alice", &id, &patch, Some(cur.version)) {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let last = replicas[1]
        .list("alice", StatusFilter::All, 1, None)
        .unwrap();
    assert_eq!(last.tasks[0].title, "counter80");
    assert_eq!(last.tasks[0].version, 81);
}

#[test]
fn field_wise_updates_without_version_all_apply() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(store(&dir));
    let b = Arc::new(store(&dir));
    let t = a.create("alice", &new("x")).unwrap();
    let (id1, id2) = (t.id.clone(), t.id.clone());
    let (a2, b2) = (a.clone(), b.clone());
    let t1 = std::thread::spawn(move || {
        for i in 0..20 {
            let p = TaskPatch {
                description: Some(Some(format!("d{i}"))),
                ..TaskPatch::default()
            };
            a2.update("alice", &id1, &p, None).unwrap();
        }
    });
    let t2 = std::thread::spawn(move || {
        for i in 0..20 {
            let p = TaskPatch {
                due: Some(Some(format!("2027-01-{:02}", i + 1))),
                ..TaskPatch::default()
            };
            b2.update("alice", &id2, &p, None).unwrap();
        }
    });
    t1.join().unwrap();
    t2.join().unwrap();
    let last = &a.list("alice", StatusFilter::All, 1, None).unwrap().tasks[0];
    assert_eq!(last.version, 41);
    assert_eq!(last.description.as_deref(), Some("d19"));
    assert_eq!(last.due.as_deref(), Some("2027-01-20"));
    assert_eq!(last.title, "x");
}

#[test]
fn migrations_are_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    store(&dir).check().unwrap();
    store(&dir).check().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(".mcp/store.sqlite3")).unwrap();
    // One row per migration (tasks, then memories), none applied twice.
    let (rows, distinct, max): (i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM schema_version",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((rows, distinct, max), (2, 2, 2));
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn an_unopenable_database_is_unavailable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: SQLite cannot open it.
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    let s = SqliteStore::new(&path, Duration::from_secs(5));
    let started = std::time::Instant::now();
    assert!(matches!(s.check(), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        s.create("alice", &new("x")),
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_lock_held_past_busy_timeout_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let s = SqliteStore::new(&path, Duration::from_millis(200));
    s.check().unwrap();
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let started = std::time::Instant::now();
    match s.create("alice", &new("x")) {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("locked"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(tx);
    s.create("alice", &new("x")).unwrap();
}
