//! The HTTP face of the backend: one axum router for MCP (Streamable HTTP and the 2024-11-05
//! SSE transport), the Task MCP API, health probes and metrics.
//!
//! Layers, outermost first: `observe` (request id, access log, HTTP metrics), then `guard`
//! (Host and Origin checks, CORS, bearer auth, rate limit). Both wrap every route and the fallbacks, so
//! 404s and 405s carry the envelope and the request id too.

pub mod body;
pub mod guard;
pub mod health;
pub mod mcp_entry;
pub mod oauth;
pub mod observe;
pub mod ratelimit;
pub mod reply;
pub mod sse_transport;
pub mod task_api;

use crate::config::Config;
use crate::exec::Executor;
use crate::mcp::McpHandler;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use axum::routing::{get, post};
use axum::Router;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use sse_transport::SseSessions;
use std::sync::Arc;
use std::time::Instant;

pub type McpService = StreamableHttpService<McpHandler, NeverSessionManager>;

/// Everything a handler needs; shared as `Arc<AppState>`.
pub struct AppState {
    pub config: Arc<Config>,
    pub exec: Arc<Executor>,
    pub metrics: Arc<Metrics>,
    pub handler: McpHandler,
    pub mcp: McpService,
    pub sse_sessions: SseSessions,
    pub limiter: Option<ratelimit::RateLimiter>,
    pub shutdown: Arc<Shutdown>,
    pub started: Instant,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        exec: Arc<Executor>,
        metrics: Arc<Metrics>,
        shutdown: Arc<Shutdown>,
    ) -> AppState {
        let handler = McpHandler::new(exec.clone());
        let mcp_config = StreamableHttpServerConfig::default()
            // Stateless: no server-held sessions, so any replica serves any request.
            .with_legacy_session_mode(false)
            // Plain JSON for a call that sends no notification first; SSE when it reports
            // progress (rmcp falls back by itself).
            .with_json_response(true)
            .with_sse_keep_alive(Some(config.heartbeat))
            // Host (ALLOWED_HOSTS; behind the gateway it is the public name) and Origin (the
            // same list as CORS) are checked by `guard` for every route, answering the envelope.
            .disable_allowed_hosts()
            .disable_allowed_origins()
            .with_max_request_body_bytes(config.max_request_bytes)
            // Cancelled at the end of the shutdown grace period: closes open MCP streams.
            .with_cancellation_token(shutdown.streams_token());
        let factory_handler = handler.clone();
        let mcp = StreamableHttpService::new(
            move || Ok(factory_handler.clone()),
            Arc::new(NeverSessionManager::default()),
            mcp_config,
        );
        let limiter = ratelimit::RateLimiter::from_config(&config, &metrics);
        AppState {
            config,
            exec,
            metrics,
            handler,
            mcp,
            sse_sessions: SseSessions::default(),
            limiter,
            shutdown,
            started: Instant::now(),
        }
    }
}

/// The whole router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/mcp",
            post(mcp_entry::post_mcp)
                .get(mcp_entry::mcp_method_not_allowed)
                .delete(mcp_entry::mcp_method_not_allowed),
        )
        .route(
            "/sse",
            get(sse_transport::open_session).post(task_api::post_sse),
        )
        .route("/messages", post(sse_transport::post_message))
        .route("/tools", get(task_api::list_tools))
        .route("/tools/execute", post(task_api::execute))
        .route("/tools/{name}", post(task_api::execute_named))
        .route("/servers", get(task_api::list_servers))
        .route("/healthz", get(health::live))
        .route("/health/live", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/health/ready", get(health::ready))
        .route("/health", get(health::summary))
        .route("/health/metrics", get(health::health_metrics))
        .route("/metrics", get(health::metrics))
        // The same exposition where the user's compose file scrapes it.
        .route("/security/metrics", get(health::metrics))
        .route(crate::config::OAUTH_METADATA_PATH, get(oauth::metadata))
        .route(
            "/.well-known/oauth-protected-resource/{*resource}",
            get(oauth::metadata),
        )
        .fallback(reply::not_found)
        .method_not_allowed_fallback(reply::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}
