//! Backup then verified extraction in-process, and the archive shapes restore refuses that
//! the end-to-end tests do not build (duplicates, members after the manifest, junk after the
//! tar end, long names).

use super::manifest::{Manifest, MANIFEST_NAME};
use super::restore::{extract_verified, validate_tree};
use super::write::backup;
use super::{Stream, DEFAULT_LOCK_WAIT};
use std::fs;
use std::io::Write;
use std::path::Path;

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("openspec");
    let long = format!("changes/{}/specs/{}", "c".repeat(60), "s".repeat(60));
    for (p, c) in [
        ("project.md", "# Project\n"),
        ("specs/auth/spec.md", "# auth\n\n## Requirements\n"),
        ("changes/a/tasks.md", "- [ ] 1.1 x\n"),
        ("changes/a/.hidden", "kept\n"),
        (&format!("{long}/spec.md"), "## ADDED Requirements\n"),
        // Transient: never backed up.
        (
            "changes/.openspec.lock",
            "pid=1\nhost=h\ncreated_ms=0\ntoken=t\n",
        ),
        ("changes/a/.tasks.md.tmp-1-2", "half"),
    ] {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, c).unwrap();
    }
    fs::create_dir_all(root.join("changes/archive")).unwrap();
    dir
}

fn archive_of(ws: &Path) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("b.tgz");
    // The stale lock above (created_ms 0) is taken over; the live one is ours.
    backup(ws, &Stream::File(file.clone()), DEFAULT_LOCK_WAIT).unwrap();
    fs::read(file).unwrap()
}

fn tar_of(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::copy(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
    out
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

fn extract(gz: &[u8]) -> Result<(tempfile::TempDir, Manifest), String> {
    let staging = tempfile::tempdir().unwrap();
    let m = extract_verified(gz, staging.path())?;
    Ok((staging, m))
}

#[test]
fn backup_round_trips_and_leaves_transient_files_out() {
    let ws = workspace();
    let gz = archive_of(ws.path());
    let (staging, m) = extract(&gz).unwrap();
    assert_eq!(m.file_count, 5);
    let restored = staging.path().join("openspec");
    let long = format!(
        "changes/{}/specs/{}/spec.md",
        "c".repeat(60),
        "s".repeat(60)
    );
    for p in ["project.md", "changes/a/.hidden", long.as_str()] {
        assert_eq!(
            fs::read(restored.join(p)).unwrap(),
            fs::read(ws.path().join("openspec").join(p)).unwrap(),
            "{p}"
        );
    }
    assert!(
        restored.join("changes/archive").is_dir(),
        "empty folder kept"
    );
    assert!(!restored.join("changes/.openspec.lock").exists());
    assert!(!restored.join("changes/a/.tasks.md.tmp-1-2").exists());
    validate_tree(staging.path()).unwrap();
    // The lock was released after the backup.
    assert!(!ws.path().join("openspec/changes/.openspec.lock").exists());
}

#[test]
fn symlinks_are_refused_by_backup_and_nothing_is_left() {
    let ws = workspace();
    std::os::unix::fs::symlink("/etc/passwd", ws.path().join("openspec/specs/pw")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = backup(
        ws.path(),
        &Stream::File(out.path().join("b.tgz")),
        DEFAULT_LOCK_WAIT,
    )
    .unwrap_err();
    assert!(
        err.message.contains("specs/pw") && err.message.contains("symbolic link"),
        "{}",
        err.message
    );
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

/// The tar's members as (header offset, path) in order.
fn offsets(tar: &[u8]) -> Vec<(usize, String)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.raw_header_position() as usize,
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            )
        })
        .collect()
}

#[test]
fn duplicates_members_after_the_manifest_and_junk_are_refused() {
    let tar = tar_of(&archive_of(workspace().path()));
    let members = offsets(&tar);
    let manifest_at = members.last().unwrap().0;
    assert_eq!(members.last().unwrap().1, MANIFEST_NAME);
    // project.md is the second member: header + one data block.
    let (at, name) = &members[1];
    assert_eq!(name, "openspec/project.md");
    let project = &tar[*at..at + 1024];

    let dup = [&tar[..manifest_at], project, &tar[manifest_at..]].concat();
    let err = extract(&gzip(&dup)).unwrap_err();
    assert!(err.contains("appears twice"), "{err}");

    // A copy of project.md where the end-of-archive blocks start.
    let mut after = tar.clone();
    let end = member_end(&tar, manifest_at);
    after.splice(end..end, project.iter().copied());
    let err = extract(&gzip(&after)).unwrap_err();
    assert!(err.contains("must be last"), "{err}");

    let mut junk = tar.clone();
    let last = junk.len() - 1;
    junk[last] = b'x';
    let err = extract(&gzip(&junk)).unwrap_err();
    assert!(err.contains("after the end of the tar"), "{err}");
}

/// Offset just past the member whose header is at `at`.
fn member_end(tar: &[u8], at: usize) -> usize {
    let header = tar::Header::from_byte_slice(&tar[at..at + 512]);
    let size = header.entry_size().unwrap() as usize;
    at + 512 + size.div_ceil(512) * 512
}
