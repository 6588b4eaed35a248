//! Spec deltas (`changes/<id>/specs/<capability>/spec.md`): the `## ADDED|MODIFIED|REMOVED|
//! RENAMED Requirements` sections, read the way `openspec archive` reads them.

use super::markdown;
use super::spec::{split_blocks, RequirementBlock};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeltaPlan {
    pub added: Vec<RequirementBlock>,
    pub modified: Vec<RequirementBlock>,
    /// Names; the header form may carry a Reason/Migration body, kept in `removed_blocks`.
    pub removed: Vec<String>,
    pub removed_blocks: Vec<RequirementBlock>,
    pub renamed: Vec<Rename>,
}

impl DeltaPlan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.modified.is_empty()
            && self.removed.is_empty()
            && self.renamed.is_empty()
    }
}

pub fn parse(content: &str) -> DeltaPlan {
    let content = markdown::normalize(content);
    let lines: Vec<&str> = content.split('\n').collect();
    let mask = markdown::fence_mask(&lines);
    // (title, start, end) of every `## ` section.
    let mut sections: Vec<(&str, usize, usize)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if mask[i] {
            continue;
        }
        if let Some(title) = markdown::h2(line) {
            if let Some(last) = sections.last_mut() {
                last.2 = i;
            }
            sections.push((title, i + 1, lines.len()));
        }
    }
    let mut plan = DeltaPlan::default();
    for (title, start, end) in sections {
        let (body, body_mask) = (&lines[start..end], &mask[start..end]);
        let Some(kind) = title
            .strip_suffix("Requirements")
            .or_else(|| title.strip_suffix("requirements"))
            .map(str::trim)
        else {
            continue;
        };
        if kind.eq_ignore_ascii_case("ADDED") {
            plan.added.extend(split_blocks(body, body_mask).1);
        } else if kind.eq_ignore_ascii_case("MODIFIED") {
            plan.modified.extend(split_blocks(body, body_mask).1);
        } else if kind.eq_ignore_ascii_case("REMOVED") {
            plan.removed.extend(removed_names(body, body_mask));
            plan.removed_blocks.extend(split_blocks(body, body_mask).1);
        } else if kind.eq_ignore_ascii_case("RENAMED") {
            plan.renamed.extend(renames(body, body_mask));
        }
    }
    plan
}

/// `### Requirement: X` headers, or bullets `- ### Requirement: X` (optionally in backticks).
fn removed_names(lines: &[&str], mask: &[bool]) -> Vec<String> {
    let mut names = Vec::new();
    for (line, &fenced) in lines.iter().zip(mask) {
        if fenced {
            continue;
        }
        if let Some(name) = markdown::requirement_name(line) {
            names.push(name.to_string());
        } else if let Some(rest) = line.trim_start().strip_prefix('-') {
            if let Some(name) = header_ref(rest) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// `- FROM: `### Requirement: Old`` followed by `- TO: `### Requirement: New``.
fn renames(lines: &[&str], mask: &[bool]) -> Vec<Rename> {
    let mut out = Vec::new();
    let mut from: Option<&str> = None;
    for (line, &fenced) in lines.iter().zip(mask) {
        if fenced {
            continue;
        }
        let t = line.trim_start();
        let t = t.strip_prefix('-').unwrap_or(t).trim_start();
        if let Some(rest) = t.strip_prefix("FROM:") {
            from = header_ref(rest);
        } else if let Some(rest) = t.strip_prefix("TO:") {
            if let (Some(f), Some(to)) = (from.take(), header_ref(rest)) {
                out.push(Rename {
                    from: f.to_string(),
                    to: to.to_string(),
                });
            }
        }
    }
    out
}

/// The name in `` `### Requirement: X` `` or `### Requirement: X`.
fn header_ref(s: &str) -> Option<&str> {
    let s = s.trim();
    let s = s.strip_prefix('`').unwrap_or(s);
    let s = s.strip_suffix('`').unwrap_or(s);
    markdown::requirement_name(s.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_four_sections() {
        let doc = "# Delta\n\n## ADDED Requirements\n\n### Requirement: New\nSHALL.\n\n#### Scenario: s\n- x\n\n\
## MODIFIED Requirements\n\n### Requirement: Mod\nSHALL.\n\n#### Scenario: s\n- x\n\n\
## REMOVED Requirements\n\n### Requirement: Gone\n**Reason**: obsolete\n\n- `### Requirement: Also Gone`\n\n\
## RENAMED Requirements\n\n- FROM: `### Requirement: Old`\n- TO: `### Requirement: Fresh`\n";
        let plan = parse(doc);
        assert_eq!(plan.added[0].name, "New");
        assert_eq!(plan.modified[0].name, "Mod");
        assert_eq!(plan.removed, vec!["Gone", "Also Gone"]);
        assert_eq!(
            plan.renamed,
            vec![Rename {
                from: "Old".into(),
                to: "Fresh".into()
            }]
        );
    }
}
