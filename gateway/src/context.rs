//! Per-request state carried through the proxy phases.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use prometheus::IntGauge;

use crate::balance::stats::InFlight;
use crate::compress::Gzipper;
use crate::shutdown::ActiveRequest;
use crate::state::{RouteRt, State, Target};

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

pub struct Ctx {
    pub start: Instant,
    /// The state this request started on; kept to its end even if a reload swaps it.
    pub state: Option<Arc<State>>,
    pub route: Option<usize>,
    pub target: usize,
    pub request_id: String,
    /// The TCP peer's address (None on a non-inet socket).
    pub peer_ip: Option<IpAddr>,
    /// The client after `[real_ip]`: the peer, or the address a trusted proxy's header names.
    pub client_ip: Option<IpAddr>,
    /// `client_ip` as text (X-Real-IP, the access log's `client`).
    pub client: String,
    pub tls: bool,
    pub tls_version: Option<Cow<'static, str>>,
    /// The in-flight slot of the current attempt (released on retry and at the end).
    pub attempt: Option<InFlight>,
    /// The backend of the current attempt.
    pub current: Option<SocketAddr>,
    /// Backends that failed this request (filled only when retrying, so the first attempt
    /// allocates nothing).
    pub tried: Vec<SocketAddr>,
    pub retries_left: u32,
    pub upstream_start: Option<Instant>,
    pub connect_time: Option<f64>,
    pub header_time: Option<f64>,
    pub response_time: Option<f64>,
    pub stream: Option<StreamGuard>,
    pub gzip: Option<Gzipper>,
    pub body_seen: u64,
    pub redirected: bool,
    /// issue 4: a split chose the target (its rollback watch counts the response).
    pub split_picked: bool,
    /// issue 4: sticky-split cookie to set on the response.
    pub split_cookie: Option<String>,
    /// Scratch buffer for hash keys.
    pub hash_buf: Vec<u8>,
    /// Counted by the SIGTERM drain until the request ends.
    _active: ActiveRequest,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            state: None,
            route: None,
            target: 0,
            request_id: String::new(),
            peer_ip: None,
            client_ip: None,
            client: String::new(),
            tls: false,
            tls_version: None,
            attempt: None,
            current: None,
            tried: Vec::new(),
            retries_left: 0,
            upstream_start: None,
            connect_time: None,
            header_time: None,
            response_time: None,
            stream: None,
            gzip: None,
            body_seen: 0,
            redirected: false,
            split_picked: false,
            split_cookie: None,
            hash_buf: Vec::new(),
            _active: ActiveRequest::new(),
        }
    }

    pub fn route(&self) -> Option<&RouteRt> {
        Some(&self.state.as_ref()?.routes[self.route?])
    }

    pub fn target(&self) -> Option<&Target> {
        self.route()?.targets.get(self.target)
    }

    pub fn since_upstream_start(&self) -> Option<f64> {
        self.upstream_start.map(|t| t.elapsed().as_secs_f64())
    }
}
