//! Who is calling a tool: the identity item stores (todo) file every row under.
//!
//! AUTH_TOKENS entries are `name:token` (the caller is `name`, the gateway's tokens_file
//! format) or a bare `token` (the caller is `token-<8 hex>`, derived from a SHA-256 of the
//! token, so it stays the same across restarts and replicas without naming the token). With
//! auth off every caller is `anonymous`.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The caller's identity; cheap to clone, carried in request extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller(pub Arc<str>);

impl Caller {
    pub fn anonymous() -> Caller {
        Caller(Arc::from("anonymous"))
    }

    pub fn named(name: &str) -> Caller {
        Caller(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a bare token's caller: `token-` + the first 8 hex digits of a SHA-256 of it.
pub fn bare_token_name(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"task-mcp caller\0");
    h.update(token.as_bytes());
    let digest = h.finalize();
    format!("token-{}", hex::encode(&digest[..4]))
}

/// A caller name as the gateway allows: 1-64 of A-Z a-z 0-9 - _ . @
pub fn is_caller_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Splits AUTH_TOKENS entries into (tokens, caller names), index for index. `name:token` with
/// a valid name and a non-empty token is named; anything else is a bare token (so a token
/// holding `:` after something that is not a name keeps working).
pub fn split_entries(entries: Vec<String>) -> (Vec<String>, Vec<Arc<str>>) {
    let mut tokens = Vec::with_capacity(entries.len());
    let mut names = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.split_once(':') {
            Some((name, token)) if is_caller_name(name.trim()) && !token.trim().is_empty() => {
                names.push(Arc::from(name.trim()));
                tokens.push(token.trim().to_string());
            }
            _ => {
                names.push(Arc::from(bare_token_name(&entry)));
                tokens.push(entry);
            }
        }
    }
    (tokens, names)
}

/// The index of the token equal to `presented`, comparing with every token (constant time for
/// equal lengths) without stopping at the first match.
pub fn match_token(tokens: &[String], presented: &str) -> Option<usize> {
    let mut found: Option<usize> = None;
    for (i, t) in tokens.iter().enumerate() {
        let eq: bool = t.as_bytes().ct_eq(presented.as_bytes()).into();
        if eq && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// The caller of a request presenting `token`: `anonymous` with auth off, the token's name
/// when it is one of AUTH_TOKENS, `None` (refuse it) otherwise.
pub fn resolve(config: &crate::config::Config, token: Option<&str>) -> Option<Caller> {
    if config.auth_tokens.is_empty() {
        return Some(Caller::anonymous());
    }
    let i = match_token(&config.auth_tokens, token?)?;
    config.auth_names.get(i).cloned().map(Caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_named_and_bare() {
        let (tokens, names) = split_entries(vec![
            "alice:s3cret".into(),
            "plain".into(),
            "bad name:x".into(),
            "bob:".into(),
        ]);
        assert_eq!(tokens, vec!["s3cret", "plain", "bad name:x", "bob:"]);
        assert_eq!(&*names[0], "alice");
        assert_eq!(&*names[1], bare_token_name("plain"));
        assert!(names[1].starts_with("token-") && names[1].len() == 14);
        assert_eq!(match_token(&tokens, "s3cret"), Some(0));
        assert_eq!(match_token(&tokens, "alice:s3cret"), None);
        assert_eq!(match_token(&tokens, "plain"), Some(1));
    }
}
