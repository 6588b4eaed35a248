//! A small typed walker over a parsed TOML table that records every problem with its key path
//! and keeps going. serde's derive stops at the first error; an operator fixing a file wants
//! them all at once, like `nginx -t`.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::units;
use super::ConfigError;

/// Collects problems while decoding.
#[derive(Default)]
pub struct Errors {
    pub list: Vec<ConfigError>,
}

impl Errors {
    pub fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(ConfigError {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

/// Joins a key path: `join("pools.backend", "servers")` → `pools.backend.servers`. Keys that
/// are not TOML bare keys are quoted, so a path can be pasted back into the file's syntax.
pub fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// A table being decoded, with its key path.
pub struct Section<'a> {
    pub path: String,
    pub table: &'a Table,
}

impl<'a> Section<'a> {
    /// Wraps `value` as a section, reporting it if it is not a table and every key not in
    /// `allowed`. None when `value` is not a table.
    pub fn new(
        errs: &mut Errors,
        path: String,
        value: &'a Value,
        allowed: &[&str],
    ) -> Option<Self> {
        match value {
            Value::Table(table) => Some(Self::from_table(errs, path, table, allowed)),
            other => {
                errs.add(
                    path,
                    format!("expected a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn from_table(errs: &mut Errors, path: String, table: &'a Table, allowed: &[&str]) -> Self {
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                errs.add(
                    join(&path, key),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Self { path, table }
    }

    pub fn key(&self, k: &str) -> String {
        join(&self.path, k)
    }

    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.table.get(k)
    }

    pub fn has(&self, k: &str) -> bool {
        self.table.contains_key(k)
    }

    fn wrong_type(&self, errs: &mut Errors, k: &str, want: &str, got: &Value) {
        errs.add(
            self.key(k),
            format!("expected {want}, found {}", type_name(got)),
        );
    }

    /// A string value, or None when absent or of the wrong type (reported).
    pub fn str(&self, errs: &mut Errors, k: &str) -> Option<&'a str> {
        match self.get(k)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                self.wrong_type(errs, k, "a string", other);
                None
            }
        }
    }

    pub fn str_or(&self, errs: &mut Errors, k: &str, default: &str) -> String {
        self.str(errs, k).unwrap_or(default).to_string()
    }

    /// A string that must be present.
    pub fn required_str(&self, errs: &mut Errors, k: &str) -> Option<&'a str> {
        if !self.has(k) {
            errs.add(self.key(k), "missing (required)");
            return None;
        }
        self.str(errs, k)
    }

    pub fn bool_or(&self, errs: &mut Errors, k: &str, default: bool) -> bool {
        match self.get(k) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong_type(errs, k, "true or false", other);
                default
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int_or(&self, errs: &mut Errors, k: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.get(k) {
            None => default,
            Some(Value::Integer(i)) => match u64::try_from(*i) {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    errs.add(self.key(k), format!("{i} is out of range ({min}..={max})"));
                    default
                }
            },
            Some(other) => {
                self.wrong_type(errs, k, "an integer", other);
                default
            }
        }
    }

    pub fn float(&self, errs: &mut Errors, k: &str) -> Option<f64> {
        match self.get(k)? {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            other => {
                self.wrong_type(errs, k, "a number", other);
                None
            }
        }
    }

    /// A duration: an nginx-style string or integer seconds.
    pub fn duration_or(&self, errs: &mut Errors, k: &str, default: Duration) -> Duration {
        match self.get(k) {
            None => default,
            Some(Value::Integer(i)) => match u64::try_from(*i) {
                Ok(n) => Duration::from_secs(n),
                Err(_) => {
                    errs.add(self.key(k), format!("{i} is negative"));
                    default
                }
            },
            Some(Value::String(s)) => units::parse_duration(s).unwrap_or_else(|e| {
                errs.add(self.key(k), e);
                default
            }),
            Some(other) => {
                self.wrong_type(errs, k, "a duration (\"30s\") or integer seconds", other);
                default
            }
        }
    }

    /// A size: an nginx-style string or integer bytes.
    pub fn size_or(&self, errs: &mut Errors, k: &str, default: u64) -> u64 {
        match self.get(k) {
            None => default,
            Some(Value::Integer(i)) => u64::try_from(*i).unwrap_or_else(|_| {
                errs.add(self.key(k), format!("{i} is negative"));
                default
            }),
            Some(Value::String(s)) => units::parse_size(s).unwrap_or_else(|e| {
                errs.add(self.key(k), e);
                default
            }),
            Some(other) => {
                self.wrong_type(errs, k, "a size (\"10m\") or integer bytes", other);
                default
            }
        }
    }

    pub fn array(&self, errs: &mut Errors, k: &str) -> Option<&'a Vec<Value>> {
        match self.get(k)? {
            Value::Array(a) => Some(a),
            other => {
                self.wrong_type(errs, k, "an array", other);
                None
            }
        }
    }

    /// An array of strings; wrong elements are reported as `key[i]`.
    pub fn str_array(&self, errs: &mut Errors, k: &str) -> Option<Vec<(String, &'a str)>> {
        let arr = self.array(errs, k)?;
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            let key = format!("{}[{i}]", self.key(k));
            match v {
                Value::String(s) => out.push((key, s.as_str())),
                other => errs.add(
                    key,
                    format!("expected a string, found {}", type_name(other)),
                ),
            }
        }
        Some(out)
    }

    /// A sub-table as a section, checked against `allowed`.
    pub fn section(&self, errs: &mut Errors, k: &str, allowed: &[&str]) -> Option<Section<'a>> {
        let v = self.get(k)?;
        Section::new(errs, self.key(k), v, allowed)
    }

    /// A sub-table whose keys are free names (pools, zones, ...): (name, value) pairs.
    pub fn named_tables(&self, errs: &mut Errors, k: &str) -> Vec<(&'a str, &'a Value)> {
        match self.get(k) {
            None => Vec::new(),
            Some(Value::Table(t)) => t.iter().map(|(n, v)| (n.as_str(), v)).collect(),
            Some(other) => {
                self.wrong_type(errs, k, "a table", other);
                Vec::new()
            }
        }
    }
}

/// What a decoder needs besides the table: where relative paths are anchored.
pub struct Ctx {
    pub errs: Errors,
    /// Absolute directory of the config file.
    pub base_dir: PathBuf,
    /// Also read and parse the files the config names (cert, key, CA bundles, log dir).
    pub check_files: bool,
}

impl Ctx {
    /// Resolves a path from the file against the config file's directory, lexically (the file
    /// need not exist yet, e.g. a pid file).
    pub fn path(&self, p: &str) -> PathBuf {
        normalize(&self.base_dir.join(p))
    }
}

/// Removes `.` and folds `..` without touching the filesystem.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Checks a header name and value; reports under `key`.
pub fn check_header(errs: &mut Errors, key: &str, name: &str, value: &str) -> bool {
    let mut ok = true;
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        errs.add(key, format!("{name:?} is not a valid header name"));
        ok = false;
    }
    if http::HeaderValue::from_str(value).is_err() {
        errs.add(
            key,
            "value is not a valid header value (printable ASCII, no line breaks)",
        );
        ok = false;
    }
    ok
}

/// A `name = "value"` table of headers (global `[headers.set]` or `[routes.headers]`).
/// Names that differ only in case are one header.
pub fn header_table(errs: &mut Errors, s: &Section, k: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, v) in s.named_tables(errs, k) {
        let key = join(&s.key(k), name);
        let Some(value) = v.as_str() else {
            errs.add(key, format!("expected a string, found {}", type_name(v)));
            continue;
        };
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            errs.add(key, "duplicate header (names are case-insensitive)");
            continue;
        }
        if check_header(errs, &key, name, value) {
            out.push((name.to_string(), value.to_string()));
        }
    }
    out
}
