//! Who is calling, and what they may do: the callers of routes with `auth = true` (named
//! static tokens from `[auth] tokens_file`, and OAuth 2.1 JWT access tokens per the MCP
//! authorization spec, `[auth.oauth]`) and their grants over MCP methods and tools.
//!
//! A caller's rights are the union of the `[[auth.grants]]` naming it (by token name or JWT
//! subject, or by one of its scopes); with no grants at all, every authenticated caller may
//! do anything. The lifecycle (`initialize`, `ping`, `server/discover`, notifications) is
//! always allowed to an authenticated caller: without it no client gets as far as a tool.

pub mod jwks;
pub mod jwt;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use pingora::http::RequestHeader;

use crate::config::{self, Grant};

/// Who the edge authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name, or the JWT's subject (its `client_id` when it has no `sub`).
    pub name: Arc<str>,
    /// JWT scopes (none for a named token).
    pub scopes: Vec<String>,
    pub via_jwt: bool,
}

/// Why a request has no caller.
pub enum Refusal {
    /// No `Authorization: Bearer` credential.
    Missing,
    /// A credential the edge does not accept; the reason is safe to show (no token content).
    Invalid(String),
}

/// `[auth]` at run time.
pub struct Gate {
    /// (token, name).
    tokens: Vec<(Vec<u8>, Arc<str>)>,
    grants: Arc<Vec<Grant>>,
    oauth: Option<OAuthRt>,
    /// `Authorization` value sent to the backends instead of the caller's.
    pub upstream_authorization: Option<http::HeaderValue>,
    /// `caller_header`: names the authenticated caller to the backends; removed from what
    /// clients send.
    pub caller_header: Option<http::HeaderName>,
}

struct OAuthRt {
    policy: jwt::JwtPolicy,
    keys: Arc<jwks::JwksCache>,
    /// RFC 9728 metadata, served at `metadata_paths`.
    metadata: Bytes,
    metadata_paths: Vec<String>,
    /// `resource_metadata` in `WWW-Authenticate`.
    metadata_url: String,
}

/// URL key sets outlive reloads (their refresher threads keep running), like rate zones.
static URL_KEYS: LazyLock<Mutex<HashMap<String, Arc<jwks::JwksCache>>>> =
    LazyLock::new(Default::default);

fn url_keys(url: &str, refresh: Duration) -> Result<Arc<jwks::JwksCache>, String> {
    let mut reg = URL_KEYS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = reg.get(url) {
        return Ok(Arc::clone(c));
    }
    let cache = Arc::new(jwks::JwksCache::new(jwks::JwksSource::Url(
        url.to_string(),
    ))?);
    let runner = Arc::clone(&cache);
    std::thread::Builder::new()
        .name("jwks-refresh".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(runner.run_refresher(refresh)),
                Err(e) => log::error!("jwks refresher: {e}"),
            }
        })
        .map_err(|e| format!("jwks refresher thread: {e}"))?;
    reg.insert(url.to_string(), Arc::clone(&cache));
    Ok(cache)
}

impl Gate {
    /// The gate of a configuration; None when `[auth]` names no callers at all. Errors name
    /// the key.
    pub fn build(cfg: &config::Auth) -> Result<Option<Gate>, String> {
        if cfg.tokens_file.is_none() && cfg.oauth.is_none() {
            return Ok(None);
        }
        let tokens = cfg
            .tokens
            .iter()
            .map(|(name, t)| (t.0.as_bytes().to_vec(), Arc::from(name.as_str())))
            .collect();
        let oauth = match &cfg.oauth {
            None => None,
            Some(o) => Some(OAuthRt::build(o)?),
        };
        let upstream_authorization = match &cfg.upstream_token {
            None => None,
            Some(t) => Some(
                http::HeaderValue::from_str(&format!("Bearer {}", t.0))
                    .map_err(|_| "auth.upstream_token: not a header value".to_string())?,
            ),
        };
        let caller_header = match &cfg.caller_header {
            None => None,
            Some(h) => Some(
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("auth.caller_header: {h:?} is not a header name"))?,
            ),
        };
        Ok(Some(Gate {
            tokens,
            grants: Arc::new(cfg.grants.clone()),
            oauth,
            upstream_authorization,
            caller_header,
        }))
    }

    /// The caller of a request, from `Authorization: Bearer ...`.
    pub async fn authenticate(&self, req: &RequestHeader) -> Result<Caller, Refusal> {
        let Some(token) = bearer(req) else {
            return Err(Refusal::Missing);
        };
        // Every named token is compared, in constant time for its length.
        let mut named = None;
        for (t, name) in &self.tokens {
            if t.len() == token.len() && openssl::memcmp::eq(t, token) {
                named = Some(name);
            }
        }
        if let Some(name) = named {
            return Ok(Caller {
                name: Arc::clone(name),
                scopes: Vec::new(),
                via_jwt: false,
            });
        }
        let Some(oauth) = &self.oauth else {
            return Err(Refusal::Invalid("the token is not valid".into()));
        };
        let token = std::str::from_utf8(token)
            .map_err(|_| Refusal::Invalid("the token is not valid".into()))?;
        oauth.verify(token).await
    }

    /// What a caller may do on MCP routes.
    pub fn rights(&self, caller: &Caller) -> Rights {
        if self.grants.is_empty() {
            return Rights::all();
        }
        let matched = self
            .grants
            .iter()
            .enumerate()
            .filter(|(_, g)| {
                g.callers.iter().any(|c| c == "*" || **c == *caller.name)
                    || g.scopes.iter().any(|s| caller.scopes.contains(s))
            })
            .map(|(i, _)| i)
            .collect();
        Rights {
            grants: Some((Arc::clone(&self.grants), matched)),
        }
    }

    /// `WWW-Authenticate` for a JWT caller refused by its grants, when a scope would allow the
    /// call (RFC 6750 section 3.1 `insufficient_scope`, with the scopes that would, and the
    /// metadata as the MCP authorization spec's step-up asks). None when no scope would: a
    /// client cannot fix that by asking for another token.
    pub fn scope_challenge(&self, method: &str, tool: Option<&str>) -> Option<String> {
        let o = self.oauth.as_ref()?;
        let mut scopes: Vec<&str> = Vec::new();
        for g in self.grants.iter() {
            let allows = allows(&g.methods, method)
                && tool
                    .is_none_or(|t| allows(&g.methods, "tools/call") && tool_matches(&g.tools, t));
            if allows {
                for sc in &g.scopes {
                    if !scopes.contains(&sc.as_str()) {
                        scopes.push(sc);
                    }
                }
            }
        }
        if scopes.is_empty() {
            return None;
        }
        Some(format!(
            "Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
            scopes.join(" "),
            o.metadata_url
        ))
    }

    /// `WWW-Authenticate` for a 401 (RFC 6750 section 3; RFC 9728 section 5.1 adds
    /// `resource_metadata`, which MCP clients follow to find the authorization server).
    pub fn challenge(&self, refusal: &Refusal) -> String {
        let mut v = String::from("Bearer realm=\"gateway\"");
        if let Some(o) = &self.oauth {
            v.push_str(&format!(", resource_metadata=\"{}\"", o.metadata_url));
        }
        if let Refusal::Invalid(reason) = refusal {
            v.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{}\"",
                reason.replace(['"', '\\'], "'")
            ));
        }
        v
    }

    /// The RFC 9728 metadata document when `path` is where it is served.
    pub fn metadata(&self, path: &str) -> Option<Bytes> {
        let o = self.oauth.as_ref()?;
        o.metadata_paths
            .iter()
            .any(|p| p == path)
            .then(|| o.metadata.clone())
    }
}

impl OAuthRt {
    fn build(o: &config::OAuth) -> Result<OAuthRt, String> {
        let keys = match &o.jwks {
            config::JwksSource::File(p) => Arc::new(
                jwks::JwksCache::new(jwks::JwksSource::File(p.clone()))
                    .map_err(|e| format!("auth.oauth.jwks_file: {e}"))?,
            ),
            config::JwksSource::Url(u) => {
                url_keys(u, o.jwks_refresh).map_err(|e| format!("auth.oauth.jwks_url: {e}"))?
            }
        };
        let policy = jwt::JwtPolicy {
            issuer: o.issuer.clone(),
            audiences: o.audiences.clone(),
            algorithms: o
                .algorithms
                .iter()
                .filter_map(|a| jwt::Alg::parse(a))
                .collect(),
            leeway: o.leeway,
            scope_claim: o.scope_claim.clone(),
        };
        let mut doc = serde_json::json!({
            "resource": o.resource,
            "authorization_servers": o.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_signing_alg_values_supported": o.algorithms,
        });
        if !o.scopes_supported.is_empty() {
            doc["scopes_supported"] = serde_json::json!(o.scopes_supported);
        }
        let origin = o
            .resource
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)))
            .unwrap_or_default();
        let mut metadata_paths = vec![o.metadata_path.clone()];
        if o.metadata_path != crate::config::defaults::OAUTH_METADATA_PATH {
            metadata_paths.push(crate::config::defaults::OAUTH_METADATA_PATH.to_string());
        }
        Ok(OAuthRt {
            policy,
            keys,
            metadata: Bytes::from(doc.to_string()),
            metadata_url: format!("{origin}{}", o.metadata_path),
            metadata_paths,
        })
    }

    async fn verify(&self, token: &str) -> Result<Caller, Refusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut result = jwt::verify(token, &self.keys.keys(), &self.policy, now);
        // A key the set lacks: the authorization server may have rotated its keys.
        if matches!(result, Err(jwt::JwtError::UnknownKey(_))) && self.keys.on_unknown_kid().await {
            result = jwt::verify(token, &self.keys.keys(), &self.policy, now);
        }
        match result {
            Ok(claims) => Ok(Caller {
                name: Arc::from(crate::edge::strict::bounded(&claims.subject)),
                scopes: claims.scopes,
                via_jwt: true,
            }),
            Err(e) => Err(Refusal::Invalid(e.to_string())),
        }
    }
}

/// The caller's name as a header value: itself when it is visible ASCII (token names always
/// are; JWT subjects such as `auth0|5f1c` mostly), else `sub-` and 16 hex digits of its
/// SHA-256, stable for the same subject.
pub fn caller_value(c: &Caller) -> http::HeaderValue {
    let name = &*c.name;
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) {
        if let Ok(v) = http::HeaderValue::from_str(name) {
            return v;
        }
    }
    let digest = openssl::sha::sha256(name.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    http::HeaderValue::from_str(&format!("sub-{hex}"))
        .unwrap_or(http::HeaderValue::from_static("sub-"))
}

/// The credential of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
pub fn bearer(req: &RequestHeader) -> Option<&[u8]> {
    let v = req.headers.get(http::header::AUTHORIZATION)?.as_bytes();
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = v[7..].trim_ascii();
    (!t.is_empty()).then_some(t)
}

/// What one caller may call. Without grants (`None`) everything.
#[derive(Clone)]
pub struct Rights {
    grants: Option<(Arc<Vec<Grant>>, Vec<usize>)>,
}

/// Always allowed to an authenticated caller.
fn lifecycle(method: &str) -> bool {
    matches!(method, "initialize" | "ping" | "server/discover")
        || method.starts_with("notifications/")
}

impl Rights {
    pub fn all() -> Rights {
        Rights { grants: None }
    }

    fn matched(&self) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .flat_map(|(g, m)| m.iter().map(move |i| &g[*i]))
    }

    /// Everything, with nothing to check.
    pub fn unrestricted(&self) -> bool {
        match &self.grants {
            None => true,
            Some(_) => self
                .matched()
                .any(|g| g.methods.iter().any(|m| m == "*") && g.tools.iter().any(|t| t == "*")),
        }
    }

    /// Some tools are out of reach: `tools/list` answers are filtered.
    pub fn restricts_tools(&self) -> bool {
        self.grants.is_some()
            && !self
                .matched()
                .any(|g| allows(&g.methods, "tools/call") && g.tools.iter().any(|t| t == "*"))
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.grants.is_none()
            || lifecycle(method)
            || self.matched().any(|g| allows(&g.methods, method))
    }

    /// May call this tool (`tools/call` granted together with the tool).
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.grants.is_none()
            || self
                .matched()
                .any(|g| allows(&g.methods, "tools/call") && tool_matches(&g.tools, tool))
    }
}

fn tool_matches(tools: &[String], tool: &str) -> bool {
    tools.iter().any(|t| match t.strip_suffix('*') {
        Some(prefix) => tool.starts_with(prefix),
        None => t == tool,
    })
}

fn allows(methods: &[String], method: &str) -> bool {
    methods.iter().any(|m| m == "*" || m == method)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(callers: &[&str], scopes: &[&str], methods: &[&str], tools: &[&str]) -> Grant {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Grant {
            callers: v(callers),
            scopes: v(scopes),
            methods: v(methods),
            tools: v(tools),
        }
    }

    fn caller(name: &str, scopes: &[&str]) -> Caller {
        Caller {
            name: Arc::from(name),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            via_jwt: !scopes.is_empty(),
        }
    }

    #[test]
    fn rights_are_the_union_of_matching_grants() {
        let gate = Gate {
            tokens: Vec::new(),
            grants: Arc::new(vec![
                grant(
                    &["reader"],
                    &["mcp:read"],
                    &["tools/list", "tools/call"],
                    &["change.list", "spec.*"],
                ),
                grant(&["admin"], &[], &["*"], &["*"]),
            ]),
            oauth: None,
            upstream_authorization: None,
            caller_header: None,
        };
        let r = gate.rights(&caller("reader", &[]));
        assert!(r.allows_method("tools/list") && r.allows_method("initialize"));
        assert!(!r.allows_method("resources/read"));
        assert!(r.allows_tool("change.list") && r.allows_tool("spec.show"));
        assert!(!r.allows_tool("change.archive"));
        assert!(r.restricts_tools() && !r.unrestricted());
        let by_scope = gate.rights(&caller("someone", &["mcp:read"]));
        assert!(by_scope.allows_tool("change.list"));
        let admin = gate.rights(&caller("admin", &[]));
        assert!(admin.unrestricted() && admin.allows_tool("change.archive"));
        let nobody = gate.rights(&caller("nobody", &[]));
        assert!(!nobody.allows_method("tools/list") && nobody.allows_method("ping"));
        assert!(!nobody.allows_tool("change.list"));
    }
}
