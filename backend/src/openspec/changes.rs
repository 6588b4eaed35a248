//! Reading the workspace: active and archived changes, one change with its tasks and spec
//! deltas, and the main specs. Every path is checked to stay inside the workspace.

use super::delta::{self, DeltaPlan};
use super::spec::{self, RequirementBlock};
use super::stamp::Stamps;
use super::tasks::{self, Task};
use super::{fsio, markdown, paths, Error, Result, Workspace};
use crate::bounded::bounded;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ChangeSummary {
    pub slug: String,
    pub title: String,
    pub done: usize,
    pub total: usize,
}

#[derive(Debug, Clone)]
pub struct ArchivedChange {
    /// The folder name, `YYYY-MM-DD-<slug>`.
    pub name: String,
    pub date: Option<String>,
    pub slug: String,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct CapabilityDelta {
    pub capability: String,
    pub plan: DeltaPlan,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub slug: String,
    pub title: String,
    pub proposal: String,
    pub design: Option<String>,
    pub tasks: Vec<Task>,
    pub deltas: Vec<CapabilityDelta>,
}

#[derive(Debug, Clone)]
pub struct SpecSummary {
    pub capability: String,
    pub title: String,
    pub requirements: usize,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub capability: String,
    pub title: String,
    pub purpose: Option<String>,
    pub requirements: Vec<RequirementBlock>,
    pub content: String,
}

/// `# Change: Add 2FA` → "Add 2FA"; falls back to the slug.
pub fn change_title(proposal: Option<&str>, slug: &str) -> String {
    proposal
        .and_then(markdown::title)
        .map(|t| {
            markdown::strip_prefix_ci(t, "change:")
                .map(str::trim)
                .unwrap_or(t)
        })
        .filter(|t| !t.is_empty())
        .unwrap_or(slug)
        .to_string()
}

/// `path` is a direct child of a folder already checked to be inside the workspace: only a
/// symlink can lead out, so only symlinks pay for canonicalization.
fn checked_child(ws: &Workspace, path: PathBuf) -> Result<Option<PathBuf>> {
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => paths::resolve_existing(ws.root(), &path).map(Some),
        Ok(_) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot inspect", &path, e)),
    }
}

fn read_child(ws: &Workspace, dir: &Path, name: &str) -> Result<Option<String>> {
    match checked_child(ws, dir.join(name))? {
        Some(p) => fsio::read_optional(&p),
        None => Ok(None),
    }
}

/// Sorted names of the sub-folders of `dir` that are valid names (others are skipped with a
/// log line: they are not something a tool can address).
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    subfolders_checked(dir, false)
}

/// With `strict`, a sub-folder with an invalid name is an error instead of being skipped
/// (a delta nobody can apply must not be archived silently).
fn subfolders_checked(dir: &Path, strict: bool) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let is_dir = entry
            .file_type()
            .map(|t| t.is_dir() || t.is_symlink())
            .unwrap_or(false);
        if !is_dir {
            continue;
        }
        if paths::is_name(&name) {
            names.push(name);
        } else if strict {
            return Err(Error::invalid(format!(
                "{}: capability folder name must match {}",
                dir.join(&name).display(),
                paths::NAME_PATTERN
            )));
        } else {
            log::debug!(
                "skipping {}: not a valid name",
                bounded(&dir.join(&name).to_string_lossy())
            );
        }
    }
    names.sort_unstable();
    Ok(names)
}

impl Workspace {
    /// The folder of active change `slug`, checked. NotFound names the slug.
    pub fn change_dir(&self, slug: &str) -> Result<PathBuf> {
        paths::check_name(slug).map_err(|why| Error::invalid_input(format!("slug: {why}")))?;
        if slug == "archive" {
            return Err(Error::invalid_input(
                "slug: \"archive\" is the archive folder, not a change",
            ));
        }
        let dir = self.changes_dir().join(slug);
        match checked_child(self, dir)? {
            Some(p) if p.is_dir() => Ok(p),
            _ => {
                let mut err = Error::not_found(format!("change {slug}: not found in changes/"));
                if let Some(done) = self.find_archived(slug) {
                    err = err.with_hint(format!("it was archived as changes/archive/{done}"));
                } else {
                    err = err.with_hint("change.list shows the active changes");
                }
                Err(err)
            }
        }
    }

    /// The archive folder name of `slug`, if archived.
    pub fn find_archived(&self, slug: &str) -> Option<String> {
        let entries = std::fs::read_dir(self.checked_archive_dir().ok()?).ok()?;
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.len() == slug.len() + 11 && n.ends_with(slug) && n.as_bytes()[10] == b'-')
    }

    pub fn list_changes(&self) -> Result<Vec<ChangeSummary>> {
        let mut out = Vec::new();
        for slug in subfolders(&self.changes_dir())? {
            if slug == "archive" {
                continue;
            }
            let dir = match self.change_dir(&slug) {
                Ok(d) => d,
                Err(e) => {
                    log::warn!(
                        "skipping change {}: {}",
                        bounded(&slug),
                        bounded(&e.to_string())
                    );
                    continue;
                }
            };
            let proposal = read_child(self, &dir, "proposal.md")?;
            let tasks = read_child(self, &dir, "tasks.md")?
                .map(|t| tasks::parse(&t))
                .unwrap_or_default();
            let (done, total) = tasks::progress(&tasks);
            out.push(ChangeSummary {
                title: change_title(proposal.as_deref(), &slug),
                slug,
                done,
                total,
            });
        }
        Ok(out)
    }

    /// `changes/archive`, refused when it is a symlink leading out of the workspace (it is
    /// then neither read nor written through).
    pub fn checked_archive_dir(&self) -> Result<PathBuf> {
        paths::resolve_for_write(self.root(), &self.archive_dir())
    }

    pub fn list_archived(&self) -> Result<Vec<ArchivedChange>> {
        let archive = self.checked_archive_dir()?;
        let mut out = Vec::new();
        for name in subfolders(&archive)? {
            let date = (name.len() > 11
                && name.as_bytes()[10] == b'-'
                && name[..10].bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                }))
            .then(|| name[..10].to_string());
            let slug = if date.is_some() {
                name[11..].to_string()
            } else {
                name.clone()
            };
            let proposal = match checked_child(self, archive.join(&name)) {
                Ok(Some(dir)) => read_child(self, &dir, "proposal.md")?,
                _ => continue,
            };
            out.push(ArchivedChange {
                title: change_title(proposal.as_deref(), &slug),
                name,
                date,
                slug,
            });
        }
        Ok(out)
    }

    pub fn read_tasks(&self, slug: &str) -> Result<(PathBuf, Option<String>)> {
        let dir = self.change_dir(slug)?;
        let path = dir.join("tasks.md");
        let content = read_child(self, &dir, "tasks.md")?;
        Ok((path, content))
    }

    /// The spec deltas of a change folder, by capability (sorted).
    pub fn read_deltas(&self, change_dir: &Path) -> Result<Vec<(String, PathBuf, String)>> {
        let specs = change_dir.join("specs");
        let Some(specs) = checked_child(self, specs)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for capability in subfolders_checked(&specs, true)? {
            let Some(cap_dir) = checked_child(self, specs.join(&capability))? else {
                continue;
            };
            let Some(file) = checked_child(self, cap_dir.join("spec.md"))? else {
                continue;
            };
            let content = fsio::read_string(&file)?;
            out.push((capability, file, content));
        }
        Ok(out)
    }

    pub fn open_change(&self, slug: &str) -> Result<Change> {
        self.open_change_stamped(slug).map(|(c, _)| c)
    }

    /// The change and the stamps of every path it was read from, taken before reading (a
    /// write racing with the read then shows up as a changed stamp next time).
    pub fn open_change_stamped(&self, slug: &str) -> Result<(Change, Stamps)> {
        let dir = self.change_dir(slug)?;
        let mut stamps = Stamps::default();
        // The folder (lstat, so a swap for a symlink shows) covers files appearing or
        // vanishing; each existing file covers in-place edits and atomic replacements.
        stamps.add(self.changes_dir().join(slug));
        for name in ["proposal.md", "design.md", "tasks.md", "specs"] {
            stamps.add_existing(dir.join(name));
        }
        for capability in subfolders(&dir.join("specs"))? {
            stamps.add(dir.join("specs").join(capability).join("spec.md"));
        }
        let proposal = read_child(self, &dir, "proposal.md")?;
        let design = read_child(self, &dir, "design.md")?;
        let tasks = read_child(self, &dir, "tasks.md")?
            .map(|t| tasks::parse(&t))
            .unwrap_or_default();
        let deltas = self
            .read_deltas(&dir)?
            .into_iter()
            .map(|(capability, _, content)| CapabilityDelta {
                capability,
                plan: delta::parse(&content),
            })
            .collect();
        let change = Change {
            slug: slug.to_string(),
            title: change_title(proposal.as_deref(), slug),
            proposal: proposal.unwrap_or_default(),
            design,
            tasks,
            deltas,
        };
        Ok((change, stamps))
    }

    /// The checked path of `specs/<capability>/spec.md`, which may not exist yet.
    pub fn spec_path(&self, capability: &str) -> Result<PathBuf> {
        paths::check_name(capability)
            .map_err(|why| Error::invalid_input(format!("capability: {why}")))?;
        paths::resolve_for_write(
            self.root(),
            &self.specs_dir().join(capability).join("spec.md"),
        )
    }

    pub fn list_specs(&self) -> Result<Vec<SpecSummary>> {
        let mut out = Vec::new();
        for capability in subfolders(&self.specs_dir())? {
            let path = match self.spec_path(&capability) {
                Ok(p) => p,
                Err(e) => {
                    log::warn!(
                        "skipping spec {}: {}",
                        bounded(&capability),
                        bounded(&e.to_string())
                    );
                    continue;
                }
            };
            let Some(content) = fsio::read_optional(&path)? else {
                continue;
            };
            let parts = spec::parse(&content);
            out.push(SpecSummary {
                title: markdown::title(&content).unwrap_or(&capability).to_string(),
                requirements: parts.blocks.len(),
                capability,
            });
        }
        Ok(out)
    }

    pub fn open_spec(&self, capability: &str) -> Result<Spec> {
        let path = self.spec_path(capability)?;
        let content = fsio::read_optional(&path)?.ok_or_else(|| {
            Error::not_found(format!("spec {capability}: no specs/{capability}/spec.md"))
                .with_hint("spec.list shows the capabilities")
        })?;
        let parts = spec::parse(&content);
        Ok(Spec {
            capability: capability.to_string(),
            title: markdown::title(&content).unwrap_or(capability).to_string(),
            purpose: markdown::section(&content, "Purpose").map(str::to_string),
            requirements: parts.blocks,
            content,
        })
    }
}
