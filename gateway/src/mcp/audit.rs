//! The audit log (`[server] audit_log`): one JSON line per MCP tool call, whoever answered it
//! (the backend, or the gateway refusing it), naming the caller by its token name or JWT
//! subject, never by its credential.

use pingora::proxy::Session;
use serde::Serialize;

use crate::access_log::AUDIT;
use crate::context::Ctx;

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    request_id: &'a str,
    /// Token name or JWT subject; "-" on a route without `auth`.
    caller: &'a str,
    client: &'a str,
    route: &'a str,
    pool: &'a str,
    backend: &'a str,
    method: &'a str,
    /// The tool as the request named it (bounded), not its metric label.
    tool: &'a str,
    outcome: &'a str,
    status: u16,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: usize,
}

/// The outcome of an MCP request as metrics and the audit log name it.
pub fn outcome_label(status: u16, ctx: &Ctx) -> &'static str {
    match status {
        0 | 500.. => "failed",
        400..=499 => ctx.refused.unwrap_or("refused"),
        _ => ctx.outcome.map_or("ok", |o| o.label()),
    }
}

pub fn record(session: &Session, ctx: &Ctx, status: u16, outcome: &str, elapsed: f64) {
    let Some(view) = ctx.mcp.as_ref().filter(|m| m.method == "tools/call") else {
        return;
    };
    if !AUDIT.enabled() {
        return;
    }
    let declared = crate::edge::headers::declared_length(session.req_header()).unwrap_or(0);
    AUDIT.write(&Line {
        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        request_id: &ctx.request_id,
        caller: ctx.caller.as_ref().map_or("-", |c| &c.name),
        client: &ctx.conn.client,
        route: ctx.route().map_or("", |r| &r.name),
        pool: ctx.target().map_or("-", |t| &t.pool.name),
        backend: ctx.attempt.slot.as_ref().map_or("", |a| &a.stats().label),
        method: view.method,
        tool: view.tool_name.as_deref().unwrap_or(""),
        outcome,
        status,
        duration_ms: (elapsed * 1e6).round() / 1e3,
        bytes_in: declared.max(ctx.body_seen),
        bytes_out: session.body_bytes_sent(),
    });
}
