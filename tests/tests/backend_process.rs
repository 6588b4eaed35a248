//! The backend as a process: its command line, start-up refusals, graceful shutdown on
//! SIGTERM, and two replicas sharing one workspace.

use e2e::{bin, curl, free_port, workspace_copy, Backend};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

#[test]
fn help_lists_the_environment_and_version_prints() {
    let out = Command::new(bin("backend")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PORT",
        "HOST",
        "WORKING_DIRECTORY",
        "AUTH_TOKENS",
        "ALLOWED_ORIGINS",
        "RATE_LIMIT",
        "HEARTBEAT_MS",
        "MAX_REQUEST_SIZE_KB",
        "MAX_RESPONSE_SIZE_KB",
        "REQUEST_TIMEOUT_MS",
        "SHUTDOWN_GRACE_MS",
        "LOG_LEVEL",
    ] {
        assert!(text.contains(var), "--help names {var}:\n{text}");
    }
    assert!(text.contains("default: 3000"), "shows defaults:\n{text}");
    let out = Command::new(bin("backend"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backend "));
}

/// Runs the backend with one bad variable; it must exit 2 naming the variable.
fn refuses(var: &str, value: &str) {
    let ws = workspace_copy();
    let out = Command::new(bin("backend"))
        .env_clear()
        .env("PORT", free_port().to_string())
        .env("HOST", "127.0.0.1")
        .env("WORKING_DIRECTORY", ws.path())
        .env(var, value)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{var}={value}: exit code; stderr: {stderr}"
    );
    assert!(
        stderr.contains(var),
        "{var}={value}: message names the variable: {stderr}"
    );
}

#[test]
fn bad_configuration_stops_start_up_with_exit_code_2() {
    refuses("PORT", "eighty");
    refuses("PORT", "70000");
    refuses("HEARTBEAT_MS", "soon");
    refuses("RATE_LIMIT", "-1");
    refuses("MAX_REQUEST_SIZE_KB", "0");
    refuses("LOG_LEVEL", "loud");
    refuses("ALLOWED_ORIGINS", "example.com");
    refuses("WORKING_DIRECTORY", "/nonexistent/workspace");
}

#[test]
fn sigterm_drains_an_open_stream_then_exits_0() {
    let ws = workspace_copy();
    let mut b = Backend::start(
        ws.path(),
        &[("HEARTBEAT_MS", "200"), ("SHUTDOWN_GRACE_MS", "1500")],
    );
    // A 2024-11-05 SSE session: a stream that stays open until someone closes it.
    let (mut child, rx) = stream_lines(&[&format!("{}/sse", b.url)]);
    let (_, first) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("endpoint event");
    assert_eq!(first, "event: endpoint");

    let signalled = Instant::now();
    b.proc.signal("TERM");
    // New connections are refused soon after the signal ...
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut refused = false;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", b.port)).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "still accepting connections after SIGTERM");
    // ... while the open stream keeps flowing (heartbeats after the signal) ...
    let mut after_signal = 0;
    while let Ok((at, line)) = rx.recv_timeout(Duration::from_secs(5)) {
        if at > signalled && line.starts_with(": keep-alive") {
            after_signal += 1;
        }
    }
    assert!(
        after_signal >= 2,
        "heartbeats on the open stream during the drain: {after_signal}"
    );
    // ... until the grace period ends: the stream is closed cleanly and the process exits 0.
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success(),
        "curl saw a clean end of stream: {status:?} {err}"
    );
    let exit = b
        .proc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| b.proc.fail("still running"));
    assert_eq!(exit.code(), Some(0), "exit code after SIGTERM");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "the stream lived through the grace period"
    );
    assert!(b.proc.log().contains("SIGTERM"));
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let ws = workspace_copy();
    let mut b = Backend::start(ws.path(), &[("SHUTDOWN_GRACE_MS", "60000")]);
    let (mut child, rx) = stream_lines(&[&format!("{}/sse", b.url)]);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("endpoint event");
    b.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.proc.is_running(), "draining the open stream");
    b.proc.signal("TERM");
    let exit = b
        .proc
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| b.proc.fail("still running"));
    assert_eq!(
        exit.code(),
        Some(1),
        "an interrupted drain is not a clean exit"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigterm_with_nothing_open_exits_at_once() {
    let ws = workspace_copy();
    let mut b = Backend::start(ws.path(), &[("SHUTDOWN_GRACE_MS", "20000")]);
    assert_eq!(curl(&[&format!("{}/healthz", b.url)]).status, 200);
    b.proc.signal("TERM");
    let exit = b
        .proc
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| b.proc.fail("did not exit"));
    assert_eq!(exit.code(), Some(0));
}

/// Takes the workspace's cross-process lock as another replica would (the file format is the
/// one documented in backend/src/openspec/lock.rs; our own live pid keeps it from being taken
/// over as stale). Mutating tools wait on it: a way to make a call last as long as a test needs.
fn hold_workspace_lock(root: &std::path::Path) -> std::path::PathBuf {
    let lock = root.join("openspec/changes/.openspec.lock");
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::fs::write(
        &lock,
        format!(
            "pid={}\nhost=e2e-test\ncreated_ms={millis}\ntoken=held-by-the-test\n",
            std::process::id()
        ),
    )
    .unwrap();
    lock
}

/// Starts `curl -sS -N` with `args`; its output lines arrive on the channel with their time.
fn stream_lines(args: &[&str]) -> (std::process::Child, mpsc::Receiver<(Instant, String)>) {
    let mut child = Command::new("curl")
        .arg("-sS")
        .arg("-N")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn long_calls_get_heartbeats_then_their_result() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("HEARTBEAT_MS", "150")]);
    let lock = hold_workspace_lock(ws.path());
    let (mut child, rx) = stream_lines(&[
        "-X",
        "POST",
        &format!("{}/sse", b.url),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"tool":"change.archive","input":{"slug":"add-webhooks"}}"#,
    ]);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::remove_file(&lock).unwrap();
    assert!(child.wait().unwrap().success());
    // Every line: the reader thread ends at curl's EOF, so this cannot block.
    let lines: Vec<String> = rx.iter().map(|(_, l)| l).collect();
    let heartbeats = lines
        .iter()
        .filter(|l| l.starts_with(": keep-alive"))
        .count();
    assert!(
        heartbeats >= 3,
        "heartbeats while the call waits: {lines:#?}"
    );
    let result = lines
        .iter()
        .position(|l| l == "event: result")
        .expect("result event");
    assert!(
        lines[..result]
            .iter()
            .all(|l| !l.starts_with("event: error")),
        "{lines:#?}"
    );
}

#[test]
fn a_call_over_the_time_limit_is_a_timeout_error() {
    let ws = workspace_copy();
    let b = Backend::start(ws.path(), &[("REQUEST_TIMEOUT_MS", "300")]);
    let lock = hold_workspace_lock(ws.path());
    let out = curl(&[
        "-X",
        "POST",
        &format!("{}/tools/execute", b.url),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"tool":"change.archive","args":{"slug":"add-webhooks"}}"#,
    ]);
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(out.status, 504, "{}", out.body);
    let v = out.json();
    assert_eq!(v["error"]["code"], "TIMEOUT", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("300 ms"),
        "{v}"
    );
}

#[test]
fn sigterm_lets_a_call_in_flight_finish() {
    let ws = workspace_copy();
    let mut b = Backend::start(ws.path(), &[("SHUTDOWN_GRACE_MS", "10000")]);
    let lock = hold_workspace_lock(ws.path());
    let (mut child, rx) = stream_lines(&[
        "-X",
        "POST",
        &format!("{}/mcp", b.url),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"tool":"change.archive","input":{"slug":"add-webhooks"}}"#,
    ]);
    let (_, start) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("NDJSON start line");
    assert!(start.contains(r#""type":"start""#), "{start}");
    b.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(400));
    assert!(b.proc.is_running(), "waits for the call in flight");
    std::fs::remove_file(&lock).unwrap();
    assert!(child.wait().unwrap().success());
    // Every remaining line: the reader thread ends at curl's EOF, so this cannot block.
    let rest: Vec<String> = rx.iter().map(|(_, l)| l).collect();
    assert!(
        rest.iter().any(|l| l.contains(r#""type":"result""#)),
        "{rest:#?}"
    );
    assert!(
        rest.last().is_some_and(|l| l.contains(r#""type":"end""#)),
        "{rest:#?}"
    );
    let exit = b
        .proc
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| b.proc.fail("still running"));
    assert_eq!(exit.code(), Some(0));
    assert!(
        ws.path().join("openspec/specs/webhooks/spec.md").exists(),
        "the archive completed"
    );
}

/// Sends `request` on an already-open connection and reads the whole response.
fn send_raw(mut stream: TcpStream, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn two_replicas_archiving_the_same_change_exactly_one_wins() {
    let ws = workspace_copy();
    let a = Backend::start(ws.path(), &[]);
    let b = Backend::start(ws.path(), &[]);
    let body = r#"{"tool":"change.archive","args":{"slug":"add-two-factor-auth"}}"#;
    let request = |port: u16| {
        format!(
            "POST /tools/execute HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // A third party (as another replica would) holds the workspace lock while both requests
    // arrive, so both are past their first look at the change and waiting on the lock when it
    // is released: the race is decided by the lock, never by scheduling luck. The lock file
    // format is the one documented in backend/src/openspec/lock.rs; our own live pid keeps it
    // from being taken over as stale.
    let lock = hold_workspace_lock(ws.path());
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [a.port, b.port]
        .into_iter()
        .map(|port| {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let req = request(port);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                send_raw(stream, req.as_bytes())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        handles.iter().all(|h| !h.is_finished()),
        "both wait for the lock"
    );
    std::fs::remove_file(&lock).unwrap();
    let answers: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = answers
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 200"))
        .count();
    let conflict = answers
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 409") && r.contains("\"CONFLICT\""))
        .count();
    assert_eq!(
        (ok, conflict),
        (1, 1),
        "one success and one CONFLICT:\n{answers:#?}"
    );

    // The workspace shows one archived copy, and the change is no longer active.
    let archive = ws.path().join("openspec/changes/archive");
    let copies = std::fs::read_dir(&archive)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with("-add-two-factor-auth")
        })
        .count();
    assert_eq!(copies, 1);
    assert!(!ws
        .path()
        .join("openspec/changes/add-two-factor-auth")
        .exists());
}
