//! OAuth 2.0 Protected Resource Metadata (RFC 9728), as the MCP authorization spec asks of a
//! protected server: `GET /.well-known/oauth-protected-resource` (and the form with the
//! resource's path appended, RFC 9728 section 3.1) names this resource and the authorization
//! servers that issue its tokens, so a client that got a 401 knows where to get one. Open, like
//! the probes. Without OAUTH_RESOURCE there is nothing to publish: 404.

use super::reply::{self, RequestId};
use super::AppState;
use crate::api_error::ApiError;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

pub async fn metadata(
    State(state): State<Arc<AppState>>,
    axum::Extension(RequestId(rid)): axum::Extension<RequestId>,
    uri: Uri,
) -> Response {
    let found = state.config.oauth.as_ref().filter(|o| {
        let p = uri.path().trim_end_matches('/');
        p == o.metadata_path || p == crate::config::OAUTH_METADATA_PATH
    });
    let Some(o) = found else {
        let err = ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "this server publishes no OAuth protected resource metadata",
        )
        .with_hint("set OAUTH_RESOURCE and OAUTH_AUTHORIZATION_SERVERS to publish it");
        return reply::error(&err, &rid);
    };
    let mut doc = json!({
        "resource": o.resource,
        "authorization_servers": o.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": crate::SERVICE_NAME,
    });
    if !o.scopes.is_empty() {
        doc["scopes_supported"] = json!(o.scopes);
    }
    let mut resp = reply::json(StatusCode::OK, &doc);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}
