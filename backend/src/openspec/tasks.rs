//! `tasks.md`: checkbox items `- [ ] 1.1 text` / `- [x] 1.2 text` under `## 1. Section`.
//! Ticking rewrites one byte of the file, so everything else stays exactly as written.

use super::markdown;
use super::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// "1.3"; `None` for a checkbox written without a number (still counted).
    pub id: Option<String>,
    pub text: String,
    pub done: bool,
    pub section: Option<String>,
    /// Byte offset of the character inside `[ ]` in the file.
    pub mark_offset: usize,
}

/// `1`, `1.3`, `3.5.1`; at most 32 characters.
pub fn is_task_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

pub fn parse(content: &str) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut section: Option<&str> = None;
    let mut offset = 0;
    let mut in_fence = false;
    for raw_line in content.split_inclusive('\n') {
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        } else if !in_fence {
            if let Some(title) = markdown::h2(line) {
                section = Some(title);
            } else if let Some((mark, rest)) = checkbox(trimmed) {
                let (id, text) = split_id(rest);
                tasks.push(Task {
                    id: id.map(str::to_string),
                    text: text.to_string(),
                    done: mark != b' ',
                    section: section.map(str::to_string),
                    // `- [` is three bytes; the mark follows.
                    mark_offset: offset + (line.len() - trimmed.len()) + 3,
                });
            }
        }
        offset += raw_line.len();
    }
    tasks
}

/// `- [x] rest` or `* [ ] rest` → (mark, rest).
fn checkbox(line: &str) -> Option<(u8, &str)> {
    let b = line.as_bytes();
    if b.len() < 5
        || !(b[0] == b'-' || b[0] == b'*')
        || b[1] != b' '
        || b[2] != b'['
        || b[4] != b']'
    {
        return None;
    }
    let mark = b[3];
    if !matches!(mark, b' ' | b'x' | b'X') {
        return None;
    }
    let rest = &line[5..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some((mark, rest.trim()))
}

/// "1.3 Write the migration" → (Some("1.3"), "Write the migration"); a trailing dot on the id
/// ("1.3.") is accepted.
fn split_id(rest: &str) -> (Option<&str>, &str) {
    let (head, tail) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let id = head.strip_suffix('.').unwrap_or(head);
    if is_task_id(id) {
        (Some(id), tail.trim())
    } else {
        (None, rest)
    }
}

pub fn progress(tasks: &[Task]) -> (usize, usize) {
    (tasks.iter().filter(|t| t.done).count(), tasks.len())
}

/// Sets task `id` to `done` and returns the new file content, or `None` when it already is.
pub fn set_done(content: &str, id: &str, done: bool) -> Result<Option<(String, Task)>> {
    let tasks = parse(content);
    let task = tasks
        .into_iter()
        .find(|t| t.id.as_deref() == Some(id))
        .ok_or_else(|| {
            Error::not_found(format!("task {id}: no such task in tasks.md"))
                .with_hint("task.list shows the task ids")
        })?;
    if task.done == done {
        return Ok(None);
    }
    let mut bytes = content.as_bytes().to_vec();
    bytes[task.mark_offset] = if done { b'x' } else { b' ' };
    // Only an ASCII byte was swapped for another, so the content is still UTF-8.
    let updated = String::from_utf8(bytes)
        .map_err(|e| Error::new(super::ErrorKind::Io, format!("tasks.md: {e}")))?;
    Ok(Some((updated, Task { done, ..task })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASKS: &str = "# Tasks\n\n## 1. Backend\n- [x] 1.1 Add table\n- [ ] 1.2 Add endpoint\n  - [ ] 1.2.1 Sub\n\n## 2. Docs\n* [X] 2.1. Write docs\n- [ ] unnumbered\n```\n- [ ] 9.9 not a task\n```\n";

    #[test]
    fn parses_ids_sections_and_state() {
        let t = parse(TASKS);
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].id.as_deref(), Some("1.1"));
        assert!(t[0].done);
        assert_eq!(t[1].text, "Add endpoint");
        assert_eq!(t[2].id.as_deref(), Some("1.2.1"));
        assert_eq!(t[3].id.as_deref(), Some("2.1"));
        assert_eq!(t[3].section.as_deref(), Some("2. Docs"));
        assert!(t[3].done);
        assert_eq!(t[4].id, None);
        assert_eq!(progress(&t), (2, 5));
    }

    #[test]
    fn set_done_changes_one_byte() {
        let (updated, task) = set_done(TASKS, "1.2", true).unwrap().unwrap();
        assert!(task.done);
        assert_eq!(updated, TASKS.replacen("- [ ] 1.2 Add", "- [x] 1.2 Add", 1));
        assert!(set_done(TASKS, "1.1", true).unwrap().is_none());
        assert!(set_done(TASKS, "7.7", true).is_err());
    }
}
