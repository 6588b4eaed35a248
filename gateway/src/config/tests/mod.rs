//! Unit tests of the config module, one file per section of the configuration: the shipped
//! files, defaults, and each class of mistake with the key path and message an operator sees.
//! The helpers below are shared by all of them.

use std::path::{Path, PathBuf};

use super::*;

mod auth;
mod errors;
mod files;
mod policy;
mod routes;
mod sections;
mod upstreams;

/// The smallest valid file; tests append to it or replace parts.
pub(super) const MINIMAL: &str = r#"
[listeners.http]
address = "127.0.0.1:8080"

[pools.backend]
servers = ["127.0.0.1:3001"]

[[routes]]
path = "/"
pool = "backend"
"#;

pub(super) fn file() -> PathBuf {
    PathBuf::from("/etc/gw/gateway.toml")
}

pub(super) fn ok(text: &str) -> Config {
    match parse(text, &file()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Parses, expects failure, returns "key: reason" lines.
pub(super) fn errors(text: &str) -> Vec<String> {
    match parse(text, &file()) {
        Ok(_) => panic!("expected errors, the config was accepted"),
        Err(e) => {
            assert_eq!(e.file, file());
            e.errors.iter().map(|e| e.to_string()).collect()
        }
    }
}

/// Asserts that some error line starts with `key: ` and contains `needle`.
#[track_caller]
pub(super) fn has(errs: &[String], key: &str, needle: &str) {
    let prefix = if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    };
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&prefix) && e.contains(needle)),
        "no error `{prefix}...{needle}...` in:\n{}",
        errs.join("\n")
    );
}

/// The route the proxy would pick: the running code (`routing::Router`), not a copy of it.
pub(super) fn match_route<'a>(c: &'a Config, host: Option<&str>, path: &str) -> Option<&'a Route> {
    let router = crate::routing::Router::new(
        c.routes
            .iter()
            .map(|r| (r.path.as_str(), r.host.as_deref())),
    );
    router.find(host, path).map(|i| &c.routes[i])
}

pub(super) fn repo_conf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf")
        .join(name)
}
