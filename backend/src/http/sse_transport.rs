//! The 2024-11-05 HTTP+SSE transport, for older MCP clients. rmcp 3.9 no longer ships an SSE
//! server, so this is the transport only: each `GET /sse` runs a full rmcp server session over
//! a pair of channels, with the same `McpHandler` as Streamable HTTP.
//!
//! - `GET /sse` answers `text/event-stream`: first `event: endpoint` with
//!   `/messages?sessionId=<id>`, then every server message as `event: message`, and a
//!   `: keep-alive` comment every HEARTBEAT_MS.
//! - `POST /messages?sessionId=<id>` with one JSON-RPC message → 202; the answer arrives on
//!   the session's stream. Unknown session → 404 envelope.
//!
//! The 2024-11-05 lifecycle starts with `initialize`: before it, only `ping` reaches rmcp. Any
//! other request is answered here with a plain JSON-RPC "not initialized" error (-32600),
//! because rmcp 3.9 would read it as the start of the 2026-07-28 stateless lifecycle and answer
//! about a missing `_meta` protocolVersion, which a 2024-11-05 client cannot act on. Stray
//! notifications and responses before `initialize` are dropped (rmcp would end the session).
//!
//! Sessions live in this replica's memory only (the protocol is session-bound); the gateway
//! hashes by client so both requests of one client reach the same replica. A session ends when
//! the client closes the stream, or at the end of the shutdown grace period.

use crate::api_error::ApiError;
use crate::http::body::read_limited;
use crate::http::reply::{self, RequestId};
use crate::http::AppState;
use crate::mcp::McpHandler;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, ErrorData, JsonRpcMessage, ServerJsonRpcMessage,
};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

type Inbox = mpsc::Sender<ClientJsonRpcMessage>;

/// Open sessions of this replica: id → the session's inbox.
#[derive(Default)]
pub struct SseSessions {
    map: Mutex<HashMap<String, Inbox>>,
}

impl SseSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Inbox>> {
        // A poisoned map is still a valid map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn inbox(&self, id: &str) -> Option<Inbox> {
        self.lock().get(id).cloned()
    }
}

/// Removes the session and stops its rmcp service when the stream is dropped.
struct SessionGuard {
    state: Arc<AppState>,
    id: String,
    ct: CancellationToken,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.state.sse_sessions.lock().remove(&self.id);
        self.ct.cancel();
        log::debug!("sse session {} closed", self.id);
    }
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `GET /sse`: opens a session.
pub async fn open_session(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::Extension<crate::caller::Caller>>,
) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (inbox, requests) = mpsc::channel::<ClientJsonRpcMessage>(32);
    let (replies, outbox) = mpsc::channel::<ServerJsonRpcMessage>(32);
    state.sse_sessions.lock().insert(id.clone(), inbox);

    // A child of the shutdown token: the session ends with the grace period, or on its own.
    let ct = state.shutdown.streams_token().child_token();
    let handler: McpHandler = state.handler.for_session(caller.map(|c| c.0));
    let service_ct = ct.clone();
    let session_id = id.clone();
    let requests = Box::pin(until_initialized(requests, replies.clone()));
    tokio::spawn(async move {
        match rmcp::service::serve_server_with_ct(handler, (replies, requests), service_ct).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => {
                log::debug!("sse session {session_id}: ended before initialize completed: {e}")
            }
        }
    });

    let guard = SessionGuard {
        state: state.clone(),
        id: id.clone(),
        ct: ct.clone(),
    };
    let heartbeat = state.config.heartbeat;
    let session = SessionStream {
        first: Some(event("endpoint", &format!("/messages?sessionId={id}"))),
        outbox,
        ticker: tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat),
        ct,
        _guard: guard,
    };
    // Endpoint first, then messages and heartbeats until either side ends.
    let body = futures::stream::unfold(session, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, Infallible>(first), s));
        }
        let chunk = tokio::select! {
            message = s.outbox.next() => match message {
                Some(m) => match serde_json::to_string(&m) {
                    Ok(data) => event("message", &data),
                    Err(e) => {
                        log::error!("sse session: cannot encode a server message: {e}");
                        return None;
                    }
                },
                None => return None,
            },
            _ = s.ticker.tick() => Bytes::from_static(b": keep-alive\n\n"),
            _ = s.ct.cancelled() => return None,
        };
        Some((Ok(chunk), s))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// What a session does with a client message that arrives before `initialize`.
enum PreInit {
    /// `initialize` (the lifecycle starts) or `ping` (allowed before it): to rmcp.
    Forward(ClientJsonRpcMessage),
    /// Another request: this error goes back on the session's stream instead.
    Refuse(ServerJsonRpcMessage),
    /// A notification or a response: nothing to answer.
    Ignore,
}

fn pre_init(message: ClientJsonRpcMessage) -> PreInit {
    let JsonRpcMessage::Request(req) = &message else {
        return PreInit::Ignore;
    };
    match req.request {
        ClientRequest::InitializeRequest(_) | ClientRequest::PingRequest(_) => {
            PreInit::Forward(message)
        }
        _ => PreInit::Refuse(ServerJsonRpcMessage::error(
            ErrorData::invalid_request(
                "the session is not initialized: send initialize first",
                None,
            ),
            Some(req.id.clone()),
        )),
    }
}

fn is_initialize(message: &ClientJsonRpcMessage) -> bool {
    matches!(message, JsonRpcMessage::Request(r)
        if matches!(r.request, ClientRequest::InitializeRequest(_)))
}

/// The session's client messages as rmcp reads them: until `initialize` has been forwarded,
/// other requests are answered on `replies` and never reach rmcp (see the module comment).
/// It owns its clone of `replies`, so the event stream still ends when rmcp's session does.
fn until_initialized(
    requests: mpsc::Receiver<ClientJsonRpcMessage>,
    replies: mpsc::Sender<ServerJsonRpcMessage>,
) -> impl futures::Stream<Item = ClientJsonRpcMessage> + Send + 'static {
    let mut initialized = false;
    requests.filter_map(move |message| {
        let step = if initialized {
            PreInit::Forward(message)
        } else {
            pre_init(message)
        };
        if let PreInit::Forward(m) = &step {
            initialized |= is_initialize(m);
        }
        let mut replies = matches!(step, PreInit::Refuse(_)).then(|| replies.clone());
        async move {
            match step {
                PreInit::Forward(m) => Some(m),
                PreInit::Refuse(reply) => {
                    log::debug!("sse session: a request before initialize refused");
                    if let Some(replies) = replies.as_mut() {
                        // An error here means the stream is gone: the session is ending.
                        let _ = replies.send(reply).await;
                    }
                    None
                }
                PreInit::Ignore => None,
            }
        }
    })
}

struct SessionStream {
    first: Option<Bytes>,
    outbox: mpsc::Receiver<ServerJsonRpcMessage>,
    ticker: tokio::time::Interval,
    ct: CancellationToken,
    _guard: SessionGuard,
}

/// `POST /messages?sessionId=<id>`: hands one JSON-RPC message to the session.
pub async fn post_message(
    State(state): State<Arc<AppState>>,
    axum::Extension(RequestId(rid)): axum::Extension<RequestId>,
    req: Request,
) -> Response {
    let session = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "sessionId" || *k == "session_id")
            .map(|(_, v)| v.to_string())
    });
    let Some(session) = session else {
        let err = ApiError::invalid_input("query parameter `sessionId` is required")
            .with_hint("use the endpoint URL sent by GET /sse");
        return reply::error(&err, &rid);
    };
    let (parts, body) = req.into_parts();
    let bytes = match read_limited(body, &parts.headers, state.config.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return reply::error(&e, &rid),
    };
    let message: ClientJsonRpcMessage = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            return reply::error(
                &ApiError::bad_request(format!("body is not a JSON-RPC message: {e}")),
                &rid,
            )
        }
    };
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no open SSE session {session:?}"),
        )
        .with_hint("open a new session with GET /sse")
    };
    let Some(mut inbox) = state.sse_sessions.inbox(&session) else {
        return reply::error(&not_found(), &rid);
    };
    if inbox.send(message).await.is_err() {
        return reply::error(&not_found(), &rid);
    }
    let mut resp = Response::new(Body::from("Accepted"));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
