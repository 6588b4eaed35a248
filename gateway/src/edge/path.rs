//! Path normalisation before routing, like nginx does before it matches a `location`
//! (`merge_slashes on`, dot segments resolved, `%XX` of unreserved characters decoded), so
//! `/mcp/../metrics` is matched, and forwarded, as `/metrics`.
//!
//! A pure function: the normalised path, or why the request is a 400. Stricter than nginx where
//! its decoding would let an encoded character change the route: an encoded slash (`%2F`) or a
//! dot segment spelled with `%2E` is refused rather than decoded.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`*`, empty, or no leading `/`): RFC 9112 section 3.2.1.
    NotOriginForm,
    /// `%` not followed by two hex digits (RFC 3986 section 2.1); nginx answers 400 too.
    BadPercent,
    /// `..` above the root; nginx answers 400 ("client sent invalid request").
    AboveRoot,
    /// `%2F`: decoding it would move segment boundaries, i.e. the route.
    EncodedSlash,
    /// `%2E` forming a `.` or `..` segment: a dot segment in disguise.
    EncodedDotSegment,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotOriginForm => "the request target is not an absolute path",
            PathError::BadPercent => "the path has a malformed percent-encoding",
            PathError::AboveRoot => "the path climbs above the root",
            PathError::EncodedSlash => "the path has an encoded slash (%2F)",
            PathError::EncodedDotSegment => "the path has an encoded dot segment (%2E)",
        }
    }
}

/// RFC 3986 section 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// One segment with unreserved `%XX` decoded and other escapes upper-cased (RFC 3986 section
/// 6.2.2.1-2); whether a `%2E` was decoded in it.
fn decode_segment(seg: &str, out: &mut String) -> Result<bool, PathError> {
    let b = seg.as_bytes();
    let mut encoded_dot = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            // Copy up to the next escape as text (the path may hold UTF-8).
            let end = seg[i..].find('%').map_or(seg.len(), |j| i + j);
            out.push_str(&seg[i..end]);
            i = end;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadPercent);
        };
        let c = hi << 4 | lo;
        if c == b'/' {
            return Err(PathError::EncodedSlash);
        }
        if is_unreserved(c) {
            encoded_dot |= c == b'.';
            out.push(c as char);
        } else {
            out.push('%');
            out.push(b[i + 1].to_ascii_uppercase() as char);
            out.push(b[i + 2].to_ascii_uppercase() as char);
        }
        i += 3;
    }
    Ok(encoded_dot)
}

/// The normalised form of an origin-form path (no query): borrowed when already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotOriginForm);
    };
    // Fast path: nothing to decode, merge or resolve.
    if !path.contains("//")
        && !path.contains('%')
        && !rest.split('/').any(|s| s == "." || s == "..")
    {
        return Ok(Cow::Borrowed(path));
    }
    // Segments kept so far, as byte ranges of `out` (for `..`, RFC 3986 section 5.2.4).
    let mut out = String::with_capacity(path.len());
    let mut starts: Vec<usize> = Vec::new();
    let mut segs = rest.split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if seg.is_empty() && !last {
            continue; // `//` merged (nginx's merge_slashes on)
        }
        let start = out.len();
        out.push('/');
        let encoded_dot = decode_segment(seg, &mut out)?;
        let decoded = &out[start + 1..];
        let dots = match decoded {
            "." => 1,
            ".." => 2,
            _ => 0,
        };
        if dots > 0 && encoded_dot {
            return Err(PathError::EncodedDotSegment);
        }
        if dots == 0 {
            starts.push(start);
            continue;
        }
        out.truncate(start);
        if dots == 2 {
            let Some(prev) = starts.pop() else {
                return Err(PathError::AboveRoot);
            };
            out.truncate(prev);
        }
        if last {
            out.push('/'); // `/a/.` and `/a/b/..` name a directory: `/a/`
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn plain_paths_pass_unchanged_and_borrowed() {
        for p in ["/", "/mcp", "/mcp/", "/health/live", "/a.b/c..d/.e"] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(x)) if x == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/mcp/../metrics").unwrap(), "/metrics");
        assert_eq!(n("/a/./b").unwrap(), "/a/b");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(n("/a/../..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(n("/a/../../b").unwrap_err(), PathError::AboveRoot);
        assert_eq!(n("//mcp").unwrap(), "/mcp");
        assert_eq!(n("/health//metrics").unwrap(), "/health/metrics");
        assert_eq!(n("/mcp//").unwrap(), "/mcp/");
        assert_eq!(n("/./").unwrap(), "/");
        assert_eq!(n("/a/..").unwrap(), "/");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(n("/%6Dcp").unwrap(), "/mcp");
        assert_eq!(n("/a%7e%2db").unwrap(), "/a~-b");
        assert_eq!(n("/a%3f%20b").unwrap(), "/a%3F%20b");
        assert_eq!(n("/a%2Fb").unwrap_err(), PathError::EncodedSlash);
        assert_eq!(n("/a%2fb").unwrap_err(), PathError::EncodedSlash);
        assert_eq!(
            n("/mcp/%2e%2e/metrics").unwrap_err(),
            PathError::EncodedDotSegment
        );
        assert_eq!(
            n("/mcp/.%2E/metrics").unwrap_err(),
            PathError::EncodedDotSegment
        );
        assert_eq!(n("/%2e").unwrap_err(), PathError::EncodedDotSegment);
        // An encoded dot inside a name is just a dot.
        assert_eq!(n("/a%2Eb").unwrap(), "/a.b");
        assert_eq!(n("/a%").unwrap_err(), PathError::BadPercent);
        assert_eq!(n("/a%4").unwrap_err(), PathError::BadPercent);
        assert_eq!(n("/a%zz").unwrap_err(), PathError::BadPercent);
    }

    #[test]
    fn not_origin_form() {
        assert_eq!(n("*").unwrap_err(), PathError::NotOriginForm);
        assert_eq!(n("").unwrap_err(), PathError::NotOriginForm);
        assert_eq!(n("mcp").unwrap_err(), PathError::NotOriginForm);
    }
}
