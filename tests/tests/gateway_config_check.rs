//! `gateway -t -c FILE`, like `nginx -t`: the real release binary checks a file and exits 0 with
//! "test is successful", or 1 with every problem on its own line, named by key path.

use std::fs;
use std::path::Path;
use std::process::Command;

use e2e::{bin, repo_root};

struct Check {
    code: Option<i32>,
    /// stdout and stderr together: the operator reads both.
    out: String,
}

fn check(file: &Path) -> Check {
    let out = Command::new(bin("gateway"))
        .arg("-t")
        .arg("-c")
        .arg(file)
        .output()
        .expect("run gateway -t");
    Check {
        code: out.status.code(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A self-signed certificate and key in `dir`, made the way `make run` makes them.
fn make_cert(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command runs");
    assert!(status.success(), "openssl req failed");
}

/// A tree like the repository's: `conf/local.toml` (the shipped file) and `run/tls/` beside it.
fn local_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("conf")).unwrap();
    fs::copy(
        repo_root().join("conf/local.toml"),
        dir.path().join("conf/local.toml"),
    )
    .unwrap();
    make_cert(&dir.path().join("run/tls"));
    dir
}

#[test]
fn shipped_local_config_passes() {
    let tree = local_tree();
    let file = tree.path().join("conf/local.toml");
    let r = check(&file);
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("syntax is ok"), "{}", r.out);
    assert!(r.out.contains("test is successful"), "{}", r.out);
}

#[test]
fn toml_syntax_error_fails_with_line_and_column() {
    let tree = local_tree();
    let file = tree.path().join("conf/broken.toml");
    let text = fs::read_to_string(tree.path().join("conf/local.toml")).unwrap();
    // An unterminated string on a known line.
    let text = text.replacen("threads = 2", "threads = \"2", 1);
    let line = text
        .lines()
        .position(|l| l.starts_with("threads = \"2"))
        .unwrap()
        + 1;
    fs::write(&file, text).unwrap();
    let r = check(&file);
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("test failed"), "{}", r.out);
    assert!(
        r.out
            .contains(&format!("TOML syntax error at line {line}, column")),
        "{}",
        r.out
    );
    assert!(!r.out.contains("test is successful"), "{}", r.out);
}

#[test]
fn every_mistake_is_named_by_key_path() {
    let tree = local_tree();
    let file = tree.path().join("conf/broken.toml");
    let text = fs::read_to_string(tree.path().join("conf/local.toml"))
        .unwrap()
        // An unknown pool on the /mcp route (routes[2]) ...
        .replacen(
            "path = \"/mcp\"\npool = \"backend\"",
            "path = \"/mcp\"\npool = \"bakend\"",
            1,
        )
        // ... a bad duration in a pool ...
        .replacen("fail_timeout = \"30s\"", "fail_timeout = \"30 secs\"", 1)
        // ... and a port out of range.
        .replacen(
            "\"127.0.0.1:3002\", weight",
            "\"127.0.0.1:99999\", weight",
            1,
        );
    fs::write(&file, text).unwrap();
    let r = check(&file);
    assert_eq!(r.code, Some(1), "{}", r.out);
    let shown = file.display().to_string();
    for expected in [
        "routes[2].pool: unknown pool \"bakend\" (known: backend, legacy_sse)".to_string(),
        "pools.backend.fail_timeout: \"30 secs\" is not a duration".to_string(),
        "pools.backend.servers[1].address: \"127.0.0.1:99999\" is not host:port (port out of range)"
            .to_string(),
    ] {
        let line = r.out.lines().find(|l| l.contains(&expected));
        let line = line.unwrap_or_else(|| panic!("no line with {expected:?} in:\n{}", r.out));
        // Each problem is on its own line, prefixed by the file like nginx -t.
        assert!(line.starts_with(&shown), "{line}");
    }
}

#[test]
fn missing_certificate_fails_naming_the_key() {
    let tree = local_tree();
    fs::remove_file(tree.path().join("run/tls/cert.pem")).unwrap();
    let r = check(&tree.path().join("conf/local.toml"));
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(
        r.out.contains("listeners.https.cert: cannot read") && r.out.contains("run/tls/cert.pem"),
        "{}",
        r.out
    );
}

#[test]
fn unreadable_config_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let r = check(&dir.path().join("nope.toml"));
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(
        r.out.contains("cannot read the configuration file"),
        "{}",
        r.out
    );
}
