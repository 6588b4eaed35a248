//! Route matching on the normalised path (`edge::path`), like nginx's `location` order: an
//! exact route (`path = "= /health"`, nginx's `location =`) wins, then the longest prefix.
//! A prefix matches on segment boundaries: `/health` matches `/health` and `/health/x`, not
//! `/healthmetrics`; a prefix ending in `/` matches everything under it. Among equal paths a
//! route bound to the request's host beats one for any host. The order is computed once per
//! state build so a request walks a short list and stops at the first match.

use std::sync::Arc;

use crate::config::units::split_exact;
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
    exact: bool,
    /// Lower case, no port.
    host: Option<String>,
    index: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    entries: Vec<Entry>,
}

impl Router {
    /// `routes`: (route path, optional host) in config order; a route path is a prefix, or
    /// `= /exact` (nginx's `location =`).
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Router {
        let mut entries: Vec<Entry> = routes
            .into_iter()
            .enumerate()
            .map(|(index, (path, host))| {
                let (exact, path) = split_exact(path);
                Entry {
                    path: path.to_string(),
                    exact,
                    host: host.map(|h| h.to_ascii_lowercase()),
                    index,
                }
            })
            .collect();
        // Exact first; then longest; at equal length host-bound first; then file order (stable).
        entries.sort_by(|a, b| {
            b.exact
                .cmp(&a.exact)
                .then(b.path.len().cmp(&a.path.len()))
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        Router { entries }
    }

    /// Index (in config order) of the route for this request; `path` is normalised.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| {
                matches(e, path)
                    && match (&e.host, host) {
                        (None, _) => true,
                        (Some(h), Some(req)) => h.eq_ignore_ascii_case(req),
                        (Some(_), None) => false,
                    }
            })
            .map(|e| e.index)
    }
}

fn matches(e: &Entry, path: &str) -> bool {
    if e.exact {
        return path == e.path;
    }
    match path.strip_prefix(e.path.as_str()) {
        None => false,
        Some(rest) => rest.is_empty() || e.path.ends_with('/') || rest.starts_with('/'),
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

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let r = Router::new([("/health", None), ("/static/", None), ("/", None)]);
        assert_eq!(r.find(None, "/health"), Some(0));
        assert_eq!(r.find(None, "/health/x"), Some(0));
        assert_eq!(r.find(None, "/healthmetrics"), Some(2));
        assert_eq!(r.find(None, "/static/a.css"), Some(1));
        assert_eq!(r.find(None, "/static"), Some(2));
        assert_eq!(r.find(None, "/anything"), Some(2));
        let no_root = Router::new([("/mcp", None)]);
        assert_eq!(no_root.find(None, "/mcpx"), None);
        assert_eq!(no_root.find(None, "/mcp/"), Some(0));
    }

    #[test]
    fn exact_routes_win_and_match_only_themselves() {
        let r = Router::new([
            ("/health/live", None),
            ("= /health", None),
            ("/", None),
            ("=/x", Some("a.example")),
            ("/x", None),
        ]);
        assert_eq!(r.find(None, "/health"), Some(1));
        assert_eq!(r.find(None, "/health/"), Some(2));
        assert_eq!(r.find(None, "/health/metrics"), Some(2));
        assert_eq!(r.find(None, "/health/live"), Some(0));
        assert_eq!(r.find(Some("a.example"), "/x"), Some(3));
        assert_eq!(r.find(Some("b.example"), "/x"), Some(4));
        assert_eq!(r.find(Some("a.example"), "/x/y"), Some(4));
        assert_eq!(split_exact("= /a"), (true, "/a"));
        assert_eq!(split_exact("/a"), (false, "/a"));
    }
}
