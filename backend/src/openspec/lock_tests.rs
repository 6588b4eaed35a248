use super::*;
use std::time::Instant;

fn write_lock(dir: &Path, text: &str) {
    std::fs::write(dir.join(LOCK_FILE), text).unwrap();
}

fn age_file(path: &Path, by: Duration) {
    let t = SystemTime::now() - by;
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn exclusive_then_released() {
    let dir = tempfile::tempdir().unwrap();
    let a = WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
    let err = WorkspaceLock::acquire(dir.path(), Duration::from_millis(30)).unwrap_err();
    assert_eq!(err.kind, super::super::ErrorKind::Conflict);
    assert!(
        err.message.contains(&format!("pid {}", std::process::id())),
        "{}",
        err.message
    );
    drop(a);
    assert!(!dir.path().join(LOCK_FILE).exists());
    WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
}

#[test]
fn start_time_of_this_process_is_read() {
    let start = process_start(std::process::id()).unwrap();
    assert!(start > 0);
    assert_eq!(process_start(u32::MAX - 7), None);
}

#[test]
fn dead_holder_on_this_host_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let dead = Holder {
        pid: u32::MAX - 7,
        ..Holder::me()
    };
    write_lock(dir.path(), &dead.render());
    WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
}

#[test]
fn reused_pid_is_taken_over_live_holder_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // This very process with its real start time: alive, held.
    write_lock(dir.path(), &Holder::me().render());
    assert!(WorkspaceLock::acquire(dir.path(), Duration::from_millis(50)).is_err());
    // The same pid with another start time: the pid was reused.
    let me = Holder::me();
    let reused = Holder {
        start: me.start + 1,
        ..me
    };
    write_lock(dir.path(), &reused.render());
    WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
}

#[test]
fn unreadable_lock_is_taken_over_once_old() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "garbage\x00\x01", "pid=12\n"] {
        write_lock(dir.path(), text);
        assert!(
            WorkspaceLock::acquire(dir.path(), Duration::ZERO).is_err(),
            "fresh {text:?} is a writer between create and write"
        );
        age_file(&dir.path().join(LOCK_FILE), Duration::from_secs(3));
        drop(WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap());
    }
}

#[test]
fn other_host_is_respected_until_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Holder {
        pid: 1,
        host: "elsewhere".into(),
        ..Holder::me()
    };
    write_lock(dir.path(), &fresh.render());
    assert!(WorkspaceLock::acquire(dir.path(), Duration::ZERO).is_err());
    let expired = Holder {
        renewed_ms: now_ms() - LEASE.as_millis() as u64 - 1000,
        ..fresh
    };
    write_lock(dir.path(), &expired.render());
    WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
}

#[test]
fn two_contenders_for_one_stale_lock_never_both_win() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let dead = Holder {
            pid: u32::MAX - 7,
            ..Holder::me()
        };
        write_lock(dir.path(), &dead.render());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let holding = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (dir, barrier, holding) =
                    (dir.path().to_path_buf(), barrier.clone(), holding.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let lock = WorkspaceLock::acquire(&dir, Duration::from_secs(5)).unwrap();
                    let n = holding.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    holding.fetch_sub(1, Ordering::SeqCst);
                    drop(lock);
                    n
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 0, "two holders at once");
        }
    }
}

#[test]
fn renewal_keeps_the_lease_fresh_and_stops_on_release() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let lock = WorkspaceLock::acquire(dir.path(), Duration::ZERO).unwrap();
    let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
    let h = Holder::parse(&text).unwrap();
    assert_eq!(h.lease_ms, LEASE.as_millis() as u64);
    assert!(h.start > 0);
    drop(lock);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop does not wait a renewal"
    );
}
