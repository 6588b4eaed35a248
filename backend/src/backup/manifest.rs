//! The manifest of a backup (`backup-manifest.json`, the archive's last member) and the checks
//! restore makes with it: member paths, and the extracted files against the listed ones.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const MANIFEST_NAME: &str = "backup-manifest.json";
pub const FORMAT: &str = "openspec-backup";
pub const VERSION: u32 = 1;
/// The top folder of every other member.
pub const TOP: &str = "openspec";
/// A manifest is read into memory: refuse anything larger than this.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// RFC 3339, UTC.
    pub created: String,
    pub host: String,
    /// The `openspec/` folder that was backed up (for the operator; restore ignores it).
    pub source: String,
    pub backend_version: String,
    pub file_count: usize,
    pub total_bytes: u64,
    /// Every folder, `openspec` first.
    pub dirs: Vec<String>,
    pub files: Vec<FileEntry>,
    /// The item store's SQLite database (member `database/store.sqlite3`), when there was one.
    /// Absent in archives of backends without it, which restore as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Manifest {
    pub fn new(source: &str, dirs: Vec<String>, files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            version: VERSION,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            host: crate::openspec::lock::hostname(),
            source: source.to_string(),
            backend_version: env!("CARGO_PKG_VERSION").to_string(),
            file_count: files.len(),
            total_bytes: files.iter().map(|f| f.size).sum(),
            dirs,
            files,
            database: None,
        }
    }

    /// Parses and checks the format and version before anything else, so a manifest of
    /// another format says so rather than naming a missing field.
    pub fn parse(raw: &[u8]) -> Result<Manifest, String> {
        let value: serde_json::Value = serde_json::from_slice(raw)
            .map_err(|e| format!("{MANIFEST_NAME} is not valid JSON: {e}"))?;
        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(format!(
                "{MANIFEST_NAME}: format is not {FORMAT:?}; not an archive made by `backend backup`"
            ));
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "{MANIFEST_NAME}: format version {v}; this backend reads version {VERSION}"
                ))
            }
            None => return Err(format!("{MANIFEST_NAME}: no format version")),
        }
        serde_json::from_value(value).map_err(|e| format!("{MANIFEST_NAME}: {e}"))
    }

    /// The extracted members against the manifest: the same folders, the same files with the
    /// same sizes and SHA-256, the database when one is listed. The first difference found is
    /// the error.
    pub fn verify(
        &self,
        dirs: &BTreeSet<String>,
        files: &BTreeMap<String, (u64, String)>,
        database: Option<&(u64, String)>,
    ) -> Result<(), String> {
        match (&self.database, database) {
            (None, None) => {}
            (Some(d), None) => {
                return Err(format!(
                    "{}: listed in the manifest but missing from the archive",
                    d.path
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{}: in the archive but not in the manifest",
                    super::database::MEMBER
                ))
            }
            (Some(d), Some((size, sha))) => {
                if d.path != super::database::MEMBER || *size != d.size {
                    return Err(format!(
                        "{}: {size} bytes in the archive, {} in the manifest",
                        d.path, d.size
                    ));
                }
                if !sha.eq_ignore_ascii_case(&d.sha256) {
                    return Err(format!(
                        "{}: SHA-256 {sha} does not match the manifest's {} (corrupted or \
                         tampered with)",
                        d.path, d.sha256
                    ));
                }
            }
        }
        if self.file_count != self.files.len() {
            return Err(format!(
                "{MANIFEST_NAME}: file_count {} but {} files listed",
                self.file_count,
                self.files.len()
            ));
        }
        let total: u64 = self.files.iter().map(|f| f.size).sum();
        if total != self.total_bytes {
            return Err(format!(
                "{MANIFEST_NAME}: total_bytes {} but the listed sizes add up to {total}",
                self.total_bytes
            ));
        }
        let mut listed = BTreeMap::new();
        for f in &self.files {
            if listed.insert(f.path.as_str(), f).is_some() {
                return Err(format!("{MANIFEST_NAME}: {} listed twice", f.path));
            }
        }
        for f in &self.files {
            match files.get(&f.path) {
                None => {
                    return Err(format!(
                        "{}: listed in the manifest but missing from the archive",
                        f.path
                    ))
                }
                Some((size, _)) if *size != f.size => {
                    return Err(format!(
                        "{}: {size} bytes in the archive, {} in the manifest",
                        f.path, f.size
                    ))
                }
                Some((_, sha)) if !sha.eq_ignore_ascii_case(&f.sha256) => {
                    return Err(format!(
                        "{}: SHA-256 {sha} does not match the manifest's {} (corrupted or \
                         tampered with)",
                        f.path, f.sha256
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = files.keys().find(|p| !listed.contains_key(p.as_str())) {
            return Err(format!("{extra}: in the archive but not in the manifest"));
        }
        let listed_dirs: BTreeSet<&str> = self.dirs.iter().map(String::as_str).collect();
        if listed_dirs.len() != self.dirs.len() {
            return Err(format!("{MANIFEST_NAME}: a folder is listed twice"));
        }
        if !listed_dirs.contains(TOP) {
            return Err(format!("{MANIFEST_NAME}: the {TOP} folder is not listed"));
        }
        if let Some(d) = listed_dirs.iter().find(|d| !dirs.contains(**d)) {
            return Err(format!(
                "{d}/: listed in the manifest but missing from the archive"
            ));
        }
        if let Some(d) = dirs.iter().find(|d| !listed_dirs.contains(d.as_str())) {
            return Err(format!("{d}/: in the archive but not in the manifest"));
        }
        Ok(())
    }
}

/// Checks a member path as stored (`openspec/...`, optionally ending in `/` for a folder) and
/// returns it without the trailing slash. Refuses absolute paths, `.`/`..`/empty components,
/// anything outside `openspec/`, and lock or temp file names.
pub fn check_member_path(raw: &[u8], is_dir: bool) -> Result<String, String> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let path = std::str::from_utf8(raw).map_err(|_| format!("{shown:?}: name is not UTF-8"))?;
    if path.contains('\0') {
        return Err(format!("{shown:?}: name holds a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(format!("{path}: absolute path"));
    }
    let path = match path.strip_suffix('/') {
        Some(p) if is_dir => p,
        Some(_) => return Err(format!("{path}: a file name ending in /")),
        None => path,
    };
    let components: Vec<&str> = path.split('/').collect();
    for c in &components {
        match *c {
            "" => return Err(format!("{path}: empty path component")),
            "." | ".." => return Err(format!("{path}: `{c}` in the path (escapes the tree)")),
            _ => {}
        }
    }
    if components.first() != Some(&TOP) {
        return Err(format!("{path}: outside {TOP}/"));
    }
    if let Some(c) = components.iter().find(|c| super::is_transient(c)) {
        return Err(format!(
            "{path}: {c} is a lock or temp file name, never part of a workspace"
        ));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Manifest, BTreeSet<String>, BTreeMap<String, (u64, String)>) {
        let files = vec![FileEntry {
            path: "openspec/project.md".into(),
            size: 3,
            sha256: "ab".repeat(32),
        }];
        let dirs = vec!["openspec".to_string(), "openspec/specs".to_string()];
        let m = Manifest::new("/x/openspec", dirs.clone(), files);
        let seen_dirs = dirs.into_iter().collect();
        let seen_files = [("openspec/project.md".to_string(), (3, "ab".repeat(32)))]
            .into_iter()
            .collect();
        (m, seen_dirs, seen_files)
    }

    #[test]
    fn round_trip_and_verify() {
        let (m, dirs, files) = sample();
        let raw = serde_json::to_vec(&m).unwrap();
        let back = Manifest::parse(&raw).unwrap();
        assert_eq!(back, m);
        back.verify(&dirs, &files, None).unwrap();
    }

    #[test]
    fn differences_are_named() {
        let (m, dirs, mut files) = sample();
        files.insert("openspec/project.md".into(), (3, "cd".repeat(32)));
        let e = m.verify(&dirs, &files, None).unwrap_err();
        assert!(
            e.contains("openspec/project.md") && e.contains("SHA-256"),
            "{e}"
        );
        files.insert("openspec/project.md".into(), (4, "ab".repeat(32)));
        assert!(m
            .verify(&dirs, &files, None)
            .unwrap_err()
            .contains("4 bytes"));
        files.insert("openspec/project.md".into(), (3, "ab".repeat(32)));
        files.insert("openspec/extra.md".into(), (0, String::new()));
        let e = m.verify(&dirs, &files, None).unwrap_err();
        assert!(
            e.contains("openspec/extra.md: in the archive but not"),
            "{e}"
        );
        files.remove("openspec/extra.md");
        files.remove("openspec/project.md");
        assert!(m
            .verify(&dirs, &files, None)
            .unwrap_err()
            .contains("missing"));
        let (m, mut dirs, files) = sample();
        dirs.remove("openspec/specs");
        assert!(m
            .verify(&dirs, &files, None)
            .unwrap_err()
            .contains("openspec/specs/"));
    }

    #[test]
    fn other_formats_and_versions_are_refused() {
        let e = Manifest::parse(br#"{"format":"zip"}"#).unwrap_err();
        assert!(e.contains("not an archive made by"), "{e}");
        let e = Manifest::parse(br#"{"format":"openspec-backup","version":9}"#).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        assert!(Manifest::parse(b"{").unwrap_err().contains("JSON"));
    }

    #[test]
    fn member_paths() {
        assert_eq!(
            check_member_path(b"openspec/specs/", true).unwrap(),
            "openspec/specs"
        );
        assert_eq!(check_member_path(b"openspec", true).unwrap(), "openspec");
        for (bad, why) in [
            (&b"../evil"[..], "`..`"),
            (b"openspec/../evil", "`..`"),
            (b"/etc/passwd", "absolute"),
            (b"other/file", "outside"),
            (b"openspec//x", "empty"),
            (b"openspec/./x", "`.`"),
            (b"openspec/changes/.openspec.lock", "lock"),
            (b"openspec/\xff", "UTF-8"),
            (b"openspec/x/", "ending in /"),
        ] {
            let e = check_member_path(bad, false).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
