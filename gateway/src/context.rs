//! Per-request state carried through the proxy phases.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use prometheus::IntGauge;

use crate::edge::compress::Gzipper;
use crate::routing::Target;
use crate::shutdown::ActiveRequest;
use crate::state::{RouteRt, State};
use crate::upstream::balance::stats::InFlight;

/// Counts an open SSE/NDJSON response in `gateway_active_streams` until dropped.
pub struct StreamGuard(IntGauge);

impl StreamGuard {
    pub fn new(gauge: &IntGauge) -> StreamGuard {
        gauge.inc();
        StreamGuard(gauge.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Who is asking, over what: the TCP peer, the client after `[real_ip]`, TLS.
#[derive(Default)]
pub struct Connection {
    /// The TCP peer's address (None on a non-inet socket).
    pub peer_ip: Option<IpAddr>,
    /// The client after `[real_ip]`: the peer, or the address a trusted proxy's header names.
    pub client_ip: Option<IpAddr>,
    /// `client_ip` as text (X-Real-IP, the access log's `client`).
    pub client: String,
    pub tls: bool,
    pub tls_version: Option<Cow<'static, str>>,
}

/// The current upstream attempt and what earlier ones left.
#[derive(Default)]
pub struct Attempt {
    /// The in-flight slot of the current attempt (released on retry and at the end).
    pub slot: Option<InFlight>,
    /// The backend of the current attempt.
    pub backend: Option<SocketAddr>,
    /// Backends that failed this request (filled only when retrying, so the first attempt
    /// allocates nothing).
    pub tried: Vec<SocketAddr>,
    pub retries_left: u32,
}

/// nginx's timings: `$request_time` from `start`; upstream connect, header and response times
/// (seconds) from the current attempt's start.
pub struct Timing {
    pub start: Instant,
    pub upstream_start: Option<Instant>,
    pub connect: Option<f64>,
    pub header: Option<f64>,
    pub response: Option<f64>,
}

/// What a split decided for this request.
#[derive(Default)]
pub struct SplitChoice {
    /// A split chose the target (its rollback watch counts the response).
    pub picked: bool,
    /// Sticky-split cookie to set on the response.
    pub cookie: Option<String>,
}

pub struct Ctx {
    /// The state this request started on; kept to its end even if a reload swaps it.
    pub state: Option<Arc<State>>,
    pub route: Option<usize>,
    /// The route target (pool) the request phase picked; None for a request answered before
    /// that (404, 413, 429, ...), which no pool served.
    pub target: Option<usize>,
    pub request_id: String,
    /// W3C trace context: the gateway's span of this request (`trace`).
    pub trace: crate::trace::Trace,
    pub conn: Connection,
    pub attempt: Attempt,
    pub timing: Timing,
    pub split: SplitChoice,
    pub stream: Option<StreamGuard>,
    pub gzip: Option<Gzipper>,
    pub body_seen: u64,
    pub redirected: bool,
    /// The normalised path (`edge::path`) when it differs from the request's, or the request
    /// was not in origin-form: routed on and sent upstream.
    pub normalized: Option<String>,
    /// Scratch buffer for hash keys.
    pub hash_buf: Vec<u8>,
    /// Method and tool on an MCP route (`mcp::view`).
    pub mcp: Option<crate::mcp::view::McpView>,
    /// Who the edge authenticated (`auth = true` routes), and what it may do.
    pub caller: Option<crate::auth::Caller>,
    pub rights: Option<crate::auth::Rights>,
    /// How the backend answered at the MCP level (`mcp::outcome`), scanned as the body passes.
    pub answer: Option<crate::mcp::outcome::Scanner>,
    /// A `tools/list` answer being cut down to the caller's grants.
    pub tools_filter: Option<crate::mcp::tools_list::Filter>,
    /// Why the gateway itself refused an MCP request ("denied", "limited"), for the audit log.
    pub refused: Option<&'static str>,
    /// The MCP-level outcome, once the answer has ended.
    pub outcome: Option<crate::mcp::outcome::Outcome>,
    /// Counted by the SIGTERM drain until the request ends.
    _active: ActiveRequest,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            state: None,
            route: None,
            target: None,
            request_id: String::new(),
            trace: crate::trace::Trace::default(),
            conn: Connection::default(),
            attempt: Attempt::default(),
            timing: Timing {
                start: Instant::now(),
                upstream_start: None,
                connect: None,
                header: None,
                response: None,
            },
            split: SplitChoice::default(),
            stream: None,
            gzip: None,
            body_seen: 0,
            redirected: false,
            normalized: None,
            hash_buf: Vec::new(),
            mcp: None,
            caller: None,
            rights: None,
            answer: None,
            tools_filter: None,
            outcome: None,
            refused: None,
            _active: ActiveRequest::new(),
        }
    }

    pub fn route(&self) -> Option<&RouteRt> {
        Some(&self.state.as_ref()?.routes[self.route?])
    }

    pub fn target(&self) -> Option<&Target> {
        self.route()?.targets.get(self.target?)
    }

    /// The path routing sees: normalised.
    pub fn path<'a>(&'a self, req: &'a pingora::http::RequestHeader) -> &'a str {
        self.normalized.as_deref().unwrap_or(req.uri.path())
    }

    pub fn since_upstream_start(&self) -> Option<f64> {
        self.timing
            .upstream_start
            .map(|t| t.elapsed().as_secs_f64())
    }
}
