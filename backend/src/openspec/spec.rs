//! Main specs (`specs/<capability>/spec.md`): split into the part before `## Requirements`,
//! the requirement blocks, and the rest; rebuild after deltas; validate.

use super::markdown;
use super::{Error, Result};
use std::collections::HashSet;

/// One `### Requirement:` block, header line included, trailing blank lines trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementBlock {
    pub name: String,
    pub raw: String,
}

impl RequirementBlock {
    /// Scenario names, skipping anything inside code fences.
    pub fn scenarios(&self) -> Vec<&str> {
        let lines: Vec<&str> = self.raw.lines().collect();
        let mask = markdown::fence_mask(&lines);
        lines
            .iter()
            .zip(mask)
            .filter(|(_, fenced)| !fenced)
            .filter_map(|(l, _)| markdown::scenario_name(l))
            .collect()
    }

    /// The block without its header line.
    pub fn body(&self) -> &str {
        self.raw
            .split_once('\n')
            .map(|(_, b)| b.trim())
            .unwrap_or("")
    }

    /// The same block under another header (RENAMED keeps the body).
    pub fn renamed(&self, to: &str) -> RequirementBlock {
        let body = self.raw.split_once('\n').map(|(_, b)| b).unwrap_or("");
        let raw = if body.is_empty() {
            format!("### Requirement: {to}")
        } else {
            format!("### Requirement: {to}\n{body}")
        };
        RequirementBlock {
            name: to.to_string(),
            raw,
        }
    }
}

/// Splits lines `[from, to)` into requirement blocks; lines before the first header are the
/// preamble. A block ends at the next requirement header or `## ` heading (outside fences).
pub(crate) fn split_blocks(lines: &[&str], mask: &[bool]) -> (String, Vec<RequirementBlock>) {
    let mut preamble = Vec::new();
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for (line, &fenced) in lines.iter().zip(mask) {
        let name = if fenced {
            None
        } else {
            markdown::requirement_name(line)
        };
        if let Some(name) = name {
            if let Some((n, body)) = current.take() {
                blocks.push(block(n, &body));
            }
            current = Some((name.to_string(), vec![*line]));
        } else if let Some((_, body)) = current.as_mut() {
            body.push(line);
        } else {
            preamble.push(*line);
        }
    }
    if let Some((n, body)) = current {
        blocks.push(block(n, &body));
    }
    (preamble.join("\n").trim_end().to_string(), blocks)
}

fn block(name: String, lines: &[&str]) -> RequirementBlock {
    RequirementBlock {
        name,
        raw: lines.join("\n").trim_end().to_string(),
    }
}

/// A main spec split for rebuilding.
#[derive(Debug, Clone)]
pub struct SpecParts {
    /// Everything before `## Requirements` (title, Purpose, ...).
    pub before: String,
    pub header_line: String,
    pub preamble: String,
    pub blocks: Vec<RequirementBlock>,
    /// From the next `## ` heading after the requirements to the end.
    pub after: String,
}

pub fn parse(content: &str) -> SpecParts {
    let content = markdown::normalize(content);
    let lines: Vec<&str> = content.split('\n').collect();
    let mask = markdown::fence_mask(&lines);
    let is_h2 = |i: usize| !mask[i] && markdown::h2(lines[i]).is_some();
    let header = (0..lines.len()).find(|&i| {
        !mask[i] && markdown::h2(lines[i]).is_some_and(|t| t.eq_ignore_ascii_case("requirements"))
    });
    let Some(header) = header else {
        return SpecParts {
            before: content.trim_end().to_string(),
            header_line: "## Requirements".to_string(),
            preamble: String::new(),
            blocks: Vec::new(),
            after: String::new(),
        };
    };
    let end = (header + 1..lines.len())
        .find(|&i| is_h2(i))
        .unwrap_or(lines.len());
    let (preamble, blocks) = split_blocks(&lines[header + 1..end], &mask[header + 1..end]);
    SpecParts {
        before: lines[..header].join("\n").trim_end().to_string(),
        header_line: lines[header].to_string(),
        preamble,
        blocks,
        after: lines[end..].join("\n").trim().to_string(),
    }
}

/// Non-empty parts separated by one blank line, ending with a newline.
pub fn rebuild(parts: &SpecParts) -> String {
    let mut pieces: Vec<&str> = Vec::with_capacity(parts.blocks.len() + 4);
    for piece in [
        parts.before.as_str(),
        parts.header_line.as_str(),
        parts.preamble.as_str(),
    ] {
        if !piece.trim().is_empty() {
            pieces.push(piece);
        }
    }
    pieces.extend(parts.blocks.iter().map(|b| b.raw.as_str()));
    if !parts.after.is_empty() {
        pieces.push(&parts.after);
    }
    let mut out = pieces.join("\n\n");
    out.push('\n');
    out
}

/// A new capability's spec file, as `openspec archive` creates it.
pub fn skeleton(capability: &str, change: &str) -> String {
    format!(
        "# {capability} Specification\n\n## Purpose\n\nTBD - created by archiving change {change}. \
         Update Purpose after archive.\n\n## Requirements\n"
    )
}

/// A spec is valid when it has a `## Requirements` section, requirement names are unique,
/// and every requirement has at least one `#### Scenario:`. Errors name the requirement.
pub fn validate(label: &str, content: &str) -> Result<()> {
    let parts = parse(content);
    if !markdown::normalize(content)
        .lines()
        .any(|l| markdown::h2(l).is_some_and(|t| t.eq_ignore_ascii_case("requirements")))
    {
        return Err(Error::invalid(format!(
            "{label}: no `## Requirements` section"
        )));
    }
    let mut seen = HashSet::new();
    for block in &parts.blocks {
        if !seen.insert(block.name.as_str()) {
            return Err(Error::invalid(format!(
                "{label}: requirement \"{}\" appears twice",
                block.name
            )));
        }
        if block.scenarios().is_empty() {
            return Err(Error::invalid(format!(
                "{label}: requirement \"{}\" has no `#### Scenario:`",
                block.name
            ))
            .with_hint("every requirement needs at least one scenario"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "# auth Specification\n\n## Purpose\nLogin.\n\n## Requirements\n\n\
### Requirement: A\nThe system SHALL a.\n\n#### Scenario: a\n- **WHEN** x\n- **THEN** y\n\n\
### Requirement: B\nThe system SHALL b.\n\n```md\n### Requirement: Fake\n```\n\n#### Scenario: b\n- ok\n\n## Notes\nkeep\n";

    #[test]
    fn parse_and_rebuild_round_trip() {
        let parts = parse(SPEC);
        assert_eq!(parts.blocks.len(), 2);
        assert_eq!(parts.blocks[1].name, "B");
        assert_eq!(parts.blocks[1].scenarios(), vec!["b"]);
        assert_eq!(parts.after, "## Notes\nkeep");
        assert_eq!(rebuild(&parts), SPEC);
        validate("auth", SPEC).unwrap();
    }

    #[test]
    fn validate_names_requirement_without_scenario() {
        let bad = "# x\n\n## Requirements\n\n### Requirement: Lonely\nThe system SHALL.\n";
        let err = validate("x", bad).unwrap_err();
        assert!(err.message.contains("\"Lonely\""), "{}", err.message);
    }
}
