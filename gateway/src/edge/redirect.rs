//! The plain-HTTP listener's 301 to HTTPS: same host, the configured public HTTPS port (left out
//! when 443), path and query kept. Prefixes such as ACME challenges are exempt and proxied.

use crate::config;

#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    port_suffix: String,
    exempt: Vec<String>,
    /// Host used when the request names none (HTTP/1.0) or an unusable one.
    fallback_host: String,
}

impl RedirectPolicy {
    /// None when the HTTP listener serves instead of redirecting.
    pub fn from_config(
        http: &config::HttpListener,
        fallback_host: String,
    ) -> Option<RedirectPolicy> {
        http.redirect_https.then(|| RedirectPolicy {
            port_suffix: if http.https_port == 443 {
                String::new()
            } else {
                format!(":{}", http.https_port)
            },
            exempt: http.redirect_exempt.clone(),
            fallback_host,
        })
    }

    pub fn is_exempt(&self, path: &str) -> bool {
        self.exempt.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// `https://host[:port]/path?query`.
    pub fn location(&self, host: Option<&str>, path_and_query: &str) -> String {
        let host = host
            .filter(|h| !h.is_empty() && h.len() <= 253 && h.bytes().all(host_byte))
            .unwrap_or(&self.fallback_host);
        let path = if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        };
        let mut loc = String::with_capacity(8 + host.len() + self.port_suffix.len() + path.len());
        loc.push_str("https://");
        loc.push_str(host);
        loc.push_str(&self.port_suffix);
        loc.push_str(path);
        loc
    }
}

/// A Host header must not be able to inject anything into Location.
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(port: u16) -> RedirectPolicy {
        RedirectPolicy::from_config(
            &config::HttpListener {
                address: "127.0.0.1:8080".parse().unwrap(),
                redirect_https: true,
                https_port: port,
                redirect_exempt: vec!["/.well-known/acme-challenge/".into()],
            },
            "127.0.0.1".into(),
        )
        .unwrap()
    }

    #[test]
    fn locations() {
        let p = policy(8443);
        assert_eq!(
            p.location(Some("example.com"), "/mcp?x=1&y=2"),
            "https://example.com:8443/mcp?x=1&y=2"
        );
        assert_eq!(
            policy(443).location(Some("example.com"), "/"),
            "https://example.com/"
        );
        assert_eq!(p.location(None, "/a"), "https://127.0.0.1:8443/a");
        assert_eq!(
            p.location(Some("evil.com/x?"), "/a"),
            "https://127.0.0.1:8443/a"
        );
        assert!(p.is_exempt("/.well-known/acme-challenge/token"));
        assert!(!p.is_exempt("/mcp"));
    }
}
