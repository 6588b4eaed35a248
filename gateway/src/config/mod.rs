//! The gateway's configuration: one TOML file, decoded into validated, runtime-ready types.
//!
//! ```ignore
//! let cfg: config::Config = config::load(Path::new("conf/local.toml"))?; // Err: config::ConfigErrors
//! for route in &cfg.routes { /* route.target, route.read_timeout: Duration, ... */ }
//! ```
//!
//! * [`load`] reads the file, validates everything and checks the files it names (certificate
//!   and key parse and match, CA bundles, the access-log directory). Use it at start-up, for
//!   `gateway -t` and on reload.
//! * [`parse`] validates text without touching the filesystem (tests, or checking a file whose
//!   certificates live elsewhere).
//! * Errors: [`ConfigErrors`] holds every problem found, each with its key path
//!   (`routes[2].pool`, `pools.backend.servers[1].address`, `""` for the file as a whole) and a
//!   reason. Its `Display` prints one `FILE: key: reason` line per problem.
//!
//! The schema is the one agreed in the design (see `conf/local.toml` for a commented reference).
//! Decoding walks a `toml::Table` with a small typed reader instead of `serde` derive, because
//! serde stops at the first error and an operator wants the whole list; unknown keys are errors
//! like serde's `deny_unknown_fields`, named by key path.
//!
//! Refinements of the agreed schema (all additive, no key renamed):
//! * `pools.NAME.servers` entries may be a plain `"host:port"` string as well as a
//!   `{ address, weight }` table.
//! * `[headers] server = "gateway"`: the value that replaces the upstream `Server` header
//!   (`""` removes it).
//! * `[gzip] vary = true`: `Vary: Accept-Encoding` (the replaced nginx.conf's `gzip_vary on`).
//! * `[listeners.admin]` is optional (absent = no admin listener), hence `Option`.
//! * Route `name` defaults to its `path`; `read_timeout` defaults to 86400s when `stream = true`
//!   (the replaced nginx.conf's streaming locations) and 60s otherwise.
//! * `max_body_size = 0` means unlimited (nginx's `client_max_body_size 0`).
//! * `tls_verify` / `tls_sni` / `ca_file` on a pool without `tls = true` are errors (they would
//!   silently do nothing), as is `hash_key` without `balance = "hash"`.
//! * Zone `size` must be at least 32k (nginx's minimum of 8 pages).
//! * CIDRs with host bits set (`10.1.0.0/8`) are errors, not nginx's warning.
//! * Maps (pools, zones, splits, `[headers.set]`) come out sorted by name: the TOML reader does
//!   not keep table order. Route order is file order.

mod auth;
mod decode;
pub mod defaults;
mod files;
mod model;
mod reader;
mod routes;
#[cfg(test)]
mod tests;
pub mod units;
mod upstreams;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path like `routes[2].pool` or `pools.backend.servers[1].address`; `""` for problems
    /// with the file as a whole (unreadable, TOML syntax).
    pub key: String,
    /// Why, in a sentence without the key.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// One `FILE: key: reason` line per problem (no trailing newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, validates and resolves the file at `path`, including the files it names.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: path.to_path_buf(),
        errors: vec![ConfigError {
            key: String::new(),
            reason: format!("cannot read the configuration file: {e}"),
        }],
    })?;
    build(&text, path, true)
}

/// Validates and resolves `text` as if read from `file` (relative paths are anchored at its
/// directory). Does not touch the filesystem: certificate and key files are not checked.
// Used by tests and tools that check text without the files it names.
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    build(text, file, false)
}

fn build(text: &str, file: &Path, check_files: bool) -> Result<Config, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        file: file.to_path_buf(),
        errors,
    };
    let root: toml::Table = toml::from_str(text).map_err(|e| {
        let reason = match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!(
                    "TOML syntax error at line {line}, column {col}: {}",
                    e.message()
                )
            }
            None => format!("TOML syntax error: {}", e.message()),
        };
        fail(vec![ConfigError {
            key: String::new(),
            reason,
        }])
    })?;

    let abs_file = if file.is_absolute() {
        file.to_path_buf()
    } else {
        // startup: current_dir fails only if the cwd was deleted; "." keeps paths relative then.
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("."))
            .join(file)
    };
    let abs_file = reader::normalize(&abs_file);
    let base_dir = abs_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut ctx = reader::Ctx {
        errs: reader::Errors::default(),
        base_dir,
        check_files,
    };
    match decode::config(&mut ctx, &root, abs_file) {
        Some(cfg) if ctx.errs.list.is_empty() => Ok(cfg),
        _ => Err(fail(ctx.errs.list)),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
