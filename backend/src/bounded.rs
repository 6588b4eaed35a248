//! Client-supplied text in log lines and error messages: at most a bounded prefix, so a
//! 900 KB tool name costs a few hundred bytes of log, not 900 KB.

use std::fmt;

/// The longest prefix of client text that is ever logged, in bytes.
pub const LOG_PREFIX_BYTES: usize = 200;

/// Formats `s` whole when short, else its first ~[`LOG_PREFIX_BYTES`] (cut at a char
/// boundary) followed by `…[N bytes]` naming the original length.
pub fn bounded(s: &str) -> Bounded<'_> {
    Bounded(s)
}

pub struct Bounded<'a>(&'a str);

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= LOG_PREFIX_BYTES {
            return f.write_str(s);
        }
        let mut end = LOG_PREFIX_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…[{} bytes]", &s[..end], s.len())
    }
}

impl fmt::Debug for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.to_string().escape_debug())
    }
}

/// A log record's whole message, bounded as a last line of defence (a dependency logging a
/// client string we never see): [`MAX_LOG_LINE`] bytes at most.
pub const MAX_LOG_LINE: usize = 2048;

pub fn bounded_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_LOG_LINE {
        return s.into();
    }
    let mut end = MAX_LOG_LINE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &s[..end], s.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_is_whole_long_is_cut_at_a_char_boundary() {
        assert_eq!(bounded("abc").to_string(), "abc");
        let long = "é".repeat(1000);
        let shown = bounded(&long).to_string();
        assert!(shown.len() < LOG_PREFIX_BYTES + 30, "{}", shown.len());
        assert!(shown.ends_with("…[2000 bytes]"), "{shown}");
        assert_eq!(format!("{:?}", bounded("a\"b")), "\"a\\\"b\"");
        let line = "x".repeat(900_000);
        assert!(bounded_line(&line).len() < MAX_LOG_LINE + 30);
    }
}
