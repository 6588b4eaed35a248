//! Route matching: longest path prefix wins; among equal prefixes a route bound to the request's
//! host beats one for any host. The order is computed once per state build so a request walks a
//! short list and stops at the first match.

use std::sync::Arc;

use crate::metrics::RouteMetrics;
use crate::upstream::balance::Pool;

/// One pool a route sends to, with the metric handles of that (route, pool) pair. A route with
/// `pool = ...` has one; a route with `split = ...` has one per pool of the split.
pub struct Target {
    pub pool: Arc<Pool>,
    pub weight: u32,
    pub metrics: RouteMetrics,
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    /// Lower case, no port.
    host: Option<String>,
    index: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    entries: Vec<Entry>,
}

impl Router {
    /// `routes`: (path prefix, optional host) in config order.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Router {
        let mut entries: Vec<Entry> = routes
            .into_iter()
            .enumerate()
            .map(|(index, (path, host))| Entry {
                path: path.to_string(),
                host: host.map(|h| h.to_ascii_lowercase()),
                index,
            })
            .collect();
        // Longest first; at equal length host-bound first; then file order (stable sort).
        entries.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        Router { entries }
    }

    /// Index (in config order) of the route for this request.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| {
                path.starts_with(e.path.as_str())
                    && match (&e.host, host) {
                        (None, _) => true,
                        (Some(h), Some(req)) => h.eq_ignore_ascii_case(req),
                        (Some(_), None) => false,
                    }
            })
            .map(|e| e.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_and_host() {
        let r = Router::new([
            ("/", None),
            ("/mcp", None),
            ("/mcp/admin", None),
            ("/mcp", Some("API.example.com")),
        ]);
        assert_eq!(r.find(None, "/mcp"), Some(1));
        assert_eq!(r.find(Some("other"), "/mcp/x"), Some(1));
        assert_eq!(r.find(Some("api.example.com"), "/mcp/x"), Some(3));
        assert_eq!(r.find(Some("api.example.com"), "/mcp/admin/1"), Some(2));
        assert_eq!(r.find(None, "/sse"), Some(0));
        let none = Router::new([("/mcp", None)]);
        assert_eq!(none.find(None, "/other"), None);
    }
}
