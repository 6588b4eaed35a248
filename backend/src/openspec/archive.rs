//! `change.archive`: what `openspec archive` does, all or nothing, once across processes.
//!
//! 1. take the workspace lock, re-check the change still exists (a racing replica may have
//!    archived it while we waited: Conflict);
//! 2. refuse unchecked tasks unless forced;
//! 3. per capability: validate the delta, apply RENAMED → REMOVED → MODIFIED → ADDED to the
//!    main spec in memory, validate the rebuilt spec — nothing is written until all pass;
//! 4. write each rebuilt spec to a temp file beside it, then the intent record (the commit
//!    point, see `recovery`);
//! 5. rename the temps onto the specs, move the change to `changes/archive/YYYY-MM-DD-<slug>`
//!    (UTC), remove the record. A crash anywhere leaves the workspace entirely old or
//!    committed; whoever takes the lock next finishes a committed archive.

use super::delta::{self, DeltaPlan};
use super::lock::WorkspaceLock;
use super::spec::{self, RequirementBlock};
use super::{fsio, paths, recovery, tasks, Error, ErrorKind, Result, Workspace};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an archive waits for another mutation to finish before reporting a Conflict.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub added: usize,
    pub modified: usize,
    pub removed: usize,
    pub renamed: usize,
}

#[derive(Debug, Clone)]
pub struct CapabilityResult {
    pub capability: String,
    /// A new spec file was created for a new capability.
    pub created: bool,
    pub counts: Counts,
}

#[derive(Debug, Clone)]
pub struct ArchiveReport {
    pub slug: String,
    /// `YYYY-MM-DD-<slug>`
    pub archived_as: String,
    pub specs: Vec<CapabilityResult>,
    pub forced: bool,
    /// Tasks still unchecked (only non-zero when forced).
    pub unchecked: usize,
}

/// A rebuilt spec waiting to be written.
struct Planned {
    capability: String,
    path: PathBuf,
    original: Option<String>,
    rebuilt: String,
    counts: Counts,
}

/// `progress(step, total, message)` is called as the work advances.
pub fn archive(
    ws: &Workspace,
    slug: &str,
    force: bool,
    progress: &dyn Fn(f64, f64, &str),
) -> Result<ArchiveReport> {
    // An already archived change is a conflict, whether another replica archived it while
    // this request waited for the lock or a moment before it arrived: both callers asked
    // for the same state change and only one can have made it.
    let active_dir = || {
        ws.change_dir(slug).map_err(|e| match e.kind {
            ErrorKind::NotFound => match ws.find_archived(slug) {
                Some(done) => Error::conflict(format!(
                    "change {slug} is already archived as changes/archive/{done}"
                ))
                .with_hint("change.list with include_archived: true shows it"),
                None => e,
            },
            _ => e,
        })
    };
    active_dir()?; // NotFound/InvalidInput/Conflict before waiting on any lock
    paths::resolve_existing(ws.root(), &ws.changes_dir())?;
    ws.checked_archive_dir()?;
    let _lock = WorkspaceLock::acquire(&ws.changes_dir(), LOCK_WAIT)?;
    let dir = active_dir()?;

    // Tasks.
    let task_list = super::fsio::read_optional(&dir.join("tasks.md"))?
        .map(|t| tasks::parse(&t))
        .unwrap_or_default();
    let open: Vec<&str> = task_list
        .iter()
        .filter(|t| !t.done)
        .map(|t| t.id.as_deref().unwrap_or("?"))
        .collect();
    if !open.is_empty() && !force {
        let shown: Vec<&str> = open.iter().take(8).copied().collect();
        return Err(Error::conflict(format!(
            "change {slug} has {} of {} tasks unchecked ({}{})",
            open.len(),
            task_list.len(),
            shown.join(", "),
            if open.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ))
        .with_hint("finish them with task.update, or pass force: true to archive anyway"));
    }

    let archived_as = format!("{}-{slug}", chrono::Utc::now().format("%Y-%m-%d"));
    if std::fs::symlink_metadata(ws.archive_dir().join(&archived_as)).is_ok() {
        return Err(Error::conflict(format!(
            "changes/archive/{archived_as} already exists"
        )));
    }

    // Plan and validate everything before writing anything.
    let deltas = ws.read_deltas(&dir)?;
    let total = deltas.len() as f64 + 2.0;
    progress(
        0.0,
        total,
        &format!("validating {} spec delta(s) of {slug}", deltas.len()),
    );
    let mut planned = Vec::with_capacity(deltas.len());
    for (capability, _, content) in &deltas {
        let plan = delta::parse(content);
        let path = ws.spec_path(capability)?;
        let original = fsio::read_optional(&path)?;
        let (rebuilt, counts) = apply(capability, slug, &plan, original.as_deref())?;
        spec::validate(
            &format!("specs/{capability}/spec.md after applying {slug}"),
            &rebuilt,
        )?;
        planned.push(Planned {
            capability: capability.clone(),
            path,
            original,
            rebuilt,
            counts,
        });
    }
    progress(1.0, total, "validated");

    // Every folder written to stays inside the workspace (a symlink may not lead out).
    let archive_dir = ws.checked_archive_dir()?;
    let target = archive_dir.join(&archived_as);
    let intent = stage(ws, slug, &planned, &target)?;
    recovery::roll_forward(ws.root(), &intent, &|i, _| {
        let p = &planned[i];
        let c = &p.counts;
        progress(
            2.0 + i as f64,
            total,
            &format!(
                "applied {}: +{} ~{} -{} →{}",
                p.capability, c.added, c.modified, c.removed, c.renamed
            ),
        );
    })
    .map_err(|e| {
        e.with_hint(
            "the archive is committed (changes/.archive-intent.json); the next write or a \
             restart finishes it",
        )
    })?;
    progress(
        total,
        total,
        &format!("moved to changes/archive/{archived_as}"),
    );
    log::info!("archived change {slug} as changes/archive/{archived_as}");

    Ok(ArchiveReport {
        slug: slug.to_string(),
        archived_as,
        specs: planned
            .into_iter()
            .map(|p| CapabilityResult {
                created: p.original.is_none(),
                capability: p.capability,
                counts: p.counts,
            })
            .collect(),
        forced: force && !open.is_empty(),
        unchecked: open.len(),
    })
}

/// Writes each rebuilt spec to a temp file beside its target (fsynced), then the intent
/// record: the commit point. On failure before the record, the temps are removed again and
/// nothing changed.
fn stage(
    ws: &Workspace,
    slug: &str,
    planned: &[Planned],
    target: &Path,
) -> Result<recovery::Intent> {
    let rel = |p: &Path| -> Result<String> {
        p.strip_prefix(ws.root())
            .map(|r| r.to_string_lossy().into_owned())
            .map_err(|_| Error::invalid_input(format!("{}: outside the workspace", p.display())))
    };
    let mut created_dirs: Vec<PathBuf> = Vec::new();
    let mut temps: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let mut specs = Vec::with_capacity(planned.len());
        for p in planned {
            let parent = p
                .path
                .parent()
                .ok_or_else(|| Error::invalid_input(format!("{}: no parent", p.path.display())))?;
            if !parent.exists() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("cannot create", parent, e))?;
                created_dirs.push(parent.to_path_buf());
            }
            let temp = parent.join(fsio::temp_name("spec.md"));
            temps.push(temp.clone());
            fsio::write_synced(&temp, p.rebuilt.as_bytes())?;
            fsio::sync_dir(parent)?;
            specs.push(recovery::SpecWrite {
                target: rel(&p.path)?,
                temp: rel(&temp)?,
                bytes: p.rebuilt.len() as u64,
                sha256: recovery::sha256_hex(p.rebuilt.as_bytes()),
            });
        }
        if let Some(archive_dir) = target.parent() {
            std::fs::create_dir_all(archive_dir)
                .map_err(|e| Error::io("cannot create", archive_dir, e))?;
        }
        let intent = recovery::Intent {
            version: 1,
            op: "change.archive".into(),
            slug: slug.to_string(),
            host: super::lock::hostname(),
            pid: std::process::id(),
            created_ms: super::lock::now_ms(),
            specs,
            created_dirs: created_dirs
                .iter()
                .map(|d| rel(d))
                .collect::<Result<Vec<_>>>()?,
            change_move: recovery::Move {
                from: format!("changes/{slug}"),
                to: rel(target)?,
            },
        };
        recovery::write_intent(&ws.changes_dir(), &intent)?;
        Ok(intent)
    })();
    if result.is_err() {
        for t in &temps {
            let _ = std::fs::remove_file(t);
        }
        for d in created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
    result
}

fn invalid(capability: &str, slug: &str, what: String) -> Error {
    Error::invalid(format!("{capability}: {what}")).with_hint(format!(
        "fix changes/{slug}/specs/{capability}/spec.md; nothing was changed"
    ))
}

/// Checks one capability's delta and returns the rebuilt main spec.
pub fn apply(
    capability: &str,
    slug: &str,
    plan: &DeltaPlan,
    current: Option<&str>,
) -> Result<(String, Counts)> {
    let err = |what: String| invalid(capability, slug, what);
    if plan.is_empty() {
        return Err(err(
            "the delta has no ADDED, MODIFIED, REMOVED or RENAMED requirements".into(),
        ));
    }
    let sections: [(&str, Vec<&str>); 5] = [
        (
            "ADDED",
            plan.added.iter().map(|b| b.name.as_str()).collect(),
        ),
        (
            "MODIFIED",
            plan.modified.iter().map(|b| b.name.as_str()).collect(),
        ),
        ("REMOVED", plan.removed.iter().map(String::as_str).collect()),
        (
            "RENAMED FROM",
            plan.renamed.iter().map(|r| r.from.as_str()).collect(),
        ),
        (
            "RENAMED TO",
            plan.renamed.iter().map(|r| r.to.as_str()).collect(),
        ),
    ];
    for (section, names) in &sections {
        check_unique(names, section, &err)?;
    }

    let added: HashSet<&str> = plan.added.iter().map(|b| b.name.as_str()).collect();
    let modified: HashSet<&str> = plan.modified.iter().map(|b| b.name.as_str()).collect();
    let removed: HashSet<&str> = plan.removed.iter().map(String::as_str).collect();
    for name in &modified {
        if removed.contains(name) {
            return Err(err(format!(
                "requirement \"{name}\" is both MODIFIED and REMOVED"
            )));
        }
        if added.contains(name) {
            return Err(err(format!(
                "requirement \"{name}\" is both ADDED and MODIFIED"
            )));
        }
    }
    for name in &added {
        if removed.contains(name) {
            return Err(err(format!(
                "requirement \"{name}\" is both ADDED and REMOVED"
            )));
        }
    }
    for r in &plan.renamed {
        if removed.contains(r.from.as_str()) {
            return Err(err(format!(
                "requirement \"{}\" is both RENAMED and REMOVED",
                r.from
            )));
        }
        if modified.contains(r.from.as_str()) {
            return Err(err(format!(
                "requirement \"{}\" is RENAMED to \"{}\": MODIFIED must use the new name",
                r.from, r.to
            )));
        }
        if added.contains(r.to.as_str()) {
            return Err(err(format!(
                "RENAMED target \"{}\" collides with an ADDED requirement",
                r.to
            )));
        }
    }
    for (section, blocks) in [("ADDED", &plan.added), ("MODIFIED", &plan.modified)] {
        if let Some(b) = blocks.iter().find(|b| b.scenarios().is_empty()) {
            return Err(err(format!(
                "{section} requirement \"{}\" has no `#### Scenario:`",
                b.name
            )));
        }
    }

    let mut parts = match current {
        Some(text) => spec::parse(text),
        None => {
            if let Some(name) = plan
                .modified
                .first()
                .map(|b| ("MODIFIED", b.name.as_str()))
                .or(plan.removed.first().map(|n| ("REMOVED", n.as_str())))
                .or(plan.renamed.first().map(|r| ("RENAMED", r.from.as_str())))
            {
                return Err(err(format!(
                    "{} requirement \"{}\": specs/{capability}/spec.md does not exist, and a new capability takes only ADDED requirements",
                    name.0, name.1
                )));
            }
            spec::parse(&spec::skeleton(capability, slug))
        }
    };
    let blocks = &mut parts.blocks;
    let position =
        |blocks: &[RequirementBlock], name: &str| blocks.iter().position(|b| b.name == name);
    let spec_file = format!("specs/{capability}/spec.md");
    let mut counts = Counts::default();

    for r in &plan.renamed {
        let Some(i) = position(blocks, &r.from) else {
            return Err(err(format!(
                "RENAMED requirement \"{}\" does not exist in {spec_file}",
                r.from
            )));
        };
        if position(blocks, &r.to).is_some() {
            return Err(err(format!(
                "RENAMED target \"{}\" already exists in {spec_file}",
                r.to
            )));
        }
        blocks[i] = blocks[i].renamed(&r.to);
        counts.renamed += 1;
    }
    for name in &plan.removed {
        let Some(i) = position(blocks, name) else {
            return Err(err(format!(
                "REMOVED requirement \"{name}\" does not exist in {spec_file}"
            )));
        };
        blocks.remove(i);
        counts.removed += 1;
    }
    for b in &plan.modified {
        let Some(i) = position(blocks, &b.name) else {
            return Err(err(format!(
                "MODIFIED requirement \"{}\" does not exist in {spec_file}",
                b.name
            )));
        };
        blocks[i] = b.clone();
        counts.modified += 1;
    }
    for b in &plan.added {
        if position(blocks, &b.name).is_some() {
            return Err(err(format!(
                "ADDED requirement \"{}\" already exists in {spec_file}",
                b.name
            )));
        }
        blocks.push(b.clone());
        counts.added += 1;
    }
    Ok((spec::rebuild(&parts), counts))
}

fn check_unique(names: &[&str], section: &str, err: &dyn Fn(String) -> Error) -> Result<()> {
    let mut seen = HashSet::with_capacity(names.len());
    for name in names {
        if !seen.insert(*name) {
            return Err(err(format!(
                "requirement \"{name}\" appears twice in {section}"
            )));
        }
    }
    Ok(())
}
