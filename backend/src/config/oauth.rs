//! OAUTH_RESOURCE and friends: the RFC 9728 protected resource metadata the backend publishes.

use super::ConfigError;

/// What the MCP authorization spec asks a protected MCP server to publish: its resource
/// identifier and the authorization servers that issue tokens for it (RFC 9728).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthResource {
    /// The resource identifier, as configured (`https://mcp.example.com/mcp`).
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes: Vec<String>,
    /// Where the metadata is published: `/.well-known/oauth-protected-resource` inserted
    /// between the resource's host and its path (RFC 9728 section 3.1).
    pub metadata_path: String,
    /// The metadata's absolute URL, for `WWW-Authenticate: Bearer resource_metadata="..."`.
    pub metadata_url: String,
}

pub const OAUTH_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// An absolute http(s) URL without fragment; http only for a loopback host (OAuth 2.1 wants
/// TLS elsewhere). Returns (scheme://authority, path).
fn oauth_url(var: &'static str, v: &str) -> Result<(String, String), ConfigError> {
    let bad = |why: &str| ConfigError {
        var,
        reason: format!("{:?} {why}", crate::bounded::bounded(v)),
    };
    let uri: http::Uri = v
        .parse()
        .map_err(|_| bad("is not a URL (write https://host[:port]/path)"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad(
            "is not an absolute URL (write https://host[:port]/path)",
        ));
    };
    if v.contains('#') {
        return Err(bad("has a fragment"));
    }
    let loopback = matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]");
    match scheme {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(bad("must be https (http only for localhost)")),
    }
    let path = uri.path().trim_end_matches('/').to_string();
    Ok((format!("{scheme}://{authority}"), path))
}

pub(super) fn oauth_from(
    resource: Option<String>,
    servers: Vec<String>,
    scopes: Vec<String>,
) -> Result<Option<OAuthResource>, ConfigError> {
    let Some(resource) = resource else {
        if !servers.is_empty() {
            return Err(ConfigError {
                var: "OAUTH_AUTHORIZATION_SERVERS",
                reason: "is set without OAUTH_RESOURCE (the URL of this MCP endpoint)".into(),
            });
        }
        return Ok(None);
    };
    let (origin, path) = oauth_url("OAUTH_RESOURCE", &resource)?;
    if servers.is_empty() {
        return Err(ConfigError {
            var: "OAUTH_AUTHORIZATION_SERVERS",
            reason: "is required with OAUTH_RESOURCE: the issuer URL(s) of the authorization \
                     server(s)"
                .into(),
        });
    }
    for s in &servers {
        oauth_url("OAUTH_AUTHORIZATION_SERVERS", s)?;
    }
    let metadata_path = format!("{OAUTH_METADATA_PATH}{path}");
    Ok(Some(OAuthResource {
        metadata_url: format!("{origin}{metadata_path}"),
        metadata_path,
        resource,
        authorization_servers: servers,
        scopes,
    }))
}
