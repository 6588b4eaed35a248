//! Probes and metrics, all open (no token): `/healthz` and `/health/live` (the process
//! answers), `/readyz` and `/health/ready` (the workspace is readable, the task store, when
//! the todo family is on, answers, and we are not draining, else 503), `/health` (the existing server's shape plus details), `/health/metrics` (a JSON summary) and
//! `/metrics` (Prometheus text; also on `/security/metrics`, where the user's compose file
//! scrapes it).

use super::reply;
use super::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

pub use crate::SERVICE_NAME;

pub async fn live() -> Response {
    reply::json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Why the replica should not get traffic now, if it should not.
fn not_ready_reason(state: &AppState) -> Option<String> {
    if state.shutdown.is_draining() {
        return Some("shutting down".into());
    }
    state.exec.registry().workspace().check_readable().err()
}

/// Longest wait for the task store's answer in a probe.
const STORE_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// The task store's state: `None` without one, else `Err(why)` when it does not answer.
async fn store_status(state: &AppState) -> Option<Result<(), String>> {
    let store = state.exec.registry().store()?.clone();
    let probe = tokio::task::spawn_blocking(move || store.check().map_err(|e| e.to_string()));
    Some(match tokio::time::timeout(STORE_PROBE, probe).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("task store probe failed: {e}")),
        Err(_) => Err(format!(
            "task store did not answer within {} ms",
            STORE_PROBE.as_millis()
        )),
    })
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let store = store_status(&state).await;
    let reason = not_ready_reason(&state).or_else(|| match &store {
        Some(Err(why)) => Some(why.clone()),
        _ => None,
    });
    let (code, mut body) = match reason {
        None => (StatusCode::OK, json!({"status": "ready"})),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": reason}),
        ),
    };
    if let (Some(r), Some(o)) = (store, body.as_object_mut()) {
        o.insert(
            "store".into(),
            json!(if r.is_ok() { "ok" } else { "unavailable" }),
        );
    }
    reply::json(code, &body)
}

pub async fn summary(State(state): State<Arc<AppState>>) -> Response {
    let store = store_status(&state).await;
    let reason = not_ready_reason(&state).or_else(|| match &store {
        Some(Err(why)) => Some(why.clone()),
        _ => None,
    });
    let status = match &reason {
        None => "ok",
        Some(_) if state.shutdown.is_draining() => "draining",
        Some(_) => "degraded",
    };
    let code = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply::json(
        code,
        &json!({
            "status": status,
            "service": SERVICE_NAME,
            "version": env!("CARGO_PKG_VERSION"),
            "transport": "http",
            "capabilities": {
                "mcp": true,
                "streamableHttp": true,
                "sse": true,
                "ndjson": true,
                "tools": state.exec.registry().list().len(),
            },
            "workspace": {
                "path": state.exec.registry().workspace().root().display().to_string(),
                "readable": state.exec.registry().workspace().check_readable().is_ok(),
            },
            "store": store.map(|r| json!({
                "backend": state.exec.registry().store().map(|s| s.describe()),
                "ok": r.is_ok(),
            })),
            "reason": reason,
            "uptimeSeconds": state.started.elapsed().as_secs(),
        }),
    )
}

pub async fn health_metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let streams: i64 = ["sse", "ndjson"]
        .iter()
        .map(|k| m.streaming_active.with_label_values(&[k]).get())
        .sum();
    reply::json(
        StatusCode::OK,
        &json!({
            "uptimeSeconds": state.started.elapsed().as_secs(),
            "activeRequests": m.http_active.get(),
            "activeToolExecutions": m.tool_active.get(),
            "activeStreams": streams,
            "sseSessions": state.sse_sessions.len(),
        }),
    )
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.render() {
        Ok(text) => {
            let mut resp = Response::new(Body::from(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        Err(e) => reply::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"status": "error", "reason": format!("metrics encoding failed: {e}")}),
        ),
    }
}
