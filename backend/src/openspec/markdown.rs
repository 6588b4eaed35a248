//! The few Markdown line shapes OpenSpec gives meaning to. Hand-written matchers (no regex):
//! they run on every `change.open`, so they must be cheap.

use std::borrow::Cow;

/// Strips a UTF-8 BOM and turns CRLF/CR into LF, borrowing when nothing changes.
pub fn normalize(content: &str) -> Cow<'_, str> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    if content.contains('\r') {
        Cow::Owned(content.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(content)
    }
}

/// `true` for lines inside a fenced code block (fence lines included): headings shown in an
/// example are not structure.
pub fn fence_mask(lines: &[&str]) -> Vec<bool> {
    let mut mask = Vec::with_capacity(lines.len());
    let mut open: Option<u8> = None;
    for line in lines {
        let t = line.trim_start_matches(' ');
        let indent = line.len() - t.len();
        let fence = if indent <= 3 && (t.starts_with("```") || t.starts_with("~~~")) {
            Some(t.as_bytes()[0])
        } else {
            None
        };
        match (open, fence) {
            (None, Some(c)) => {
                open = Some(c);
                mask.push(true);
            }
            (Some(o), Some(c)) if o == c => {
                open = None;
                mask.push(true);
            }
            (Some(_), _) => mask.push(true),
            (None, None) => mask.push(false),
        }
    }
    mask
}

/// The text of a `# Title` line.
pub fn h1(line: &str) -> Option<&str> {
    heading(line, 1)
}

/// The text of a `## Section` line.
pub fn h2(line: &str) -> Option<&str> {
    heading(line, 2)
}

/// `#` repeated exactly `level` times, then whitespace, then text.
pub fn heading(line: &str, level: usize) -> Option<&str> {
    let bytes = line.as_bytes();
    if bytes.len() <= level || bytes[..level].iter().any(|&b| b != b'#') {
        return None;
    }
    let rest = &line[level..];
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let text = rest.trim();
    (!text.is_empty()).then_some(text)
}

/// Case-insensitive ASCII prefix strip.
pub fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The name in `### Requirement: <name>` (OpenSpec: `^###\s*Requirement:\s*(.+)\s*$`, case-insensitive).
pub fn requirement_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("###")?;
    if rest.starts_with('#') {
        return None;
    }
    let rest = strip_prefix_ci(rest.trim_start(), "requirement:")?;
    let name = rest.trim();
    (!name.is_empty()).then_some(name)
}

/// The name in `#### Scenario: <name>`.
pub fn scenario_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("####")?;
    if rest.starts_with('#') || !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = strip_prefix_ci(rest.trim_start(), "scenario:")?;
    Some(rest.trim())
}

/// The first `# ` heading of a document.
pub fn title(content: &str) -> Option<&str> {
    content.lines().find_map(h1)
}

/// The body of the `## <name>` section (case-insensitive), trimmed; `None` when absent.
pub fn section<'a>(content: &'a str, name: &str) -> Option<&'a str> {
    let mut start = None;
    let mut offset = 0;
    let mut in_fence = false;
    for line in content.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let t = bare.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
        } else if !in_fence {
            if let Some(title) = h2(bare) {
                if let Some(s) = start {
                    return Some(content[s..offset].trim());
                }
                if title.eq_ignore_ascii_case(name) {
                    start = Some(offset + line.len());
                }
            }
        }
        offset += line.len();
    }
    start.map(|s| content[s..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(requirement_name("### Requirement: Login  "), Some("Login"));
        assert_eq!(requirement_name("###Requirement:X"), Some("X"));
        assert_eq!(requirement_name("#### Requirement: X"), None);
        assert_eq!(scenario_name("#### Scenario: ok"), Some("ok"));
        assert_eq!(h2("## Requirements"), Some("Requirements"));
        assert_eq!(h2("### Requirements"), None);
        assert_eq!(h1("# Auth Specification"), Some("Auth Specification"));
        let doc = "# T\n\n## Purpose\nWhy.\n\n## Requirements\nx\n";
        assert_eq!(section(doc, "purpose"), Some("Why."));
        assert_eq!(section(doc, "Requirements"), Some("x"));
        assert_eq!(section(doc, "Nope"), None);
    }
}
