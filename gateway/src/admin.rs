//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (config loaded and every route has a healthy backend, one that has passed a check
//! in a health-checked pool; else 503) and `/status`
//! (JSON: pools, backends, health, in-flight counts, weights).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::config;
use crate::state::{Shared, State};
use crate::upstream::balance::stats::now_ms;

pub struct AdminApp {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let state = self.shared.load();
        match path.as_str() {
            "/metrics" => reply(
                200,
                "text/plain; version=0.0.4",
                crate::metrics::METRICS.render(),
            ),
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let ready = state.ready();
                let body = json!({
                    "status": if ready { "ready" } else { "not ready" },
                    "generation": state.generation,
                });
                reply(
                    if ready { 200 } else { 503 },
                    "application/json",
                    body.to_string().into_bytes(),
                )
            }
            "/status" => reply(
                200,
                "application/json",
                status(&state).to_string().into_bytes(),
            ),
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not found"}"#.to_vec(),
            ),
        }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn balance_name(b: &config::Balance) -> String {
    match b {
        config::Balance::LeastConn => "least_conn".into(),
        config::Balance::RoundRobin => "round_robin".into(),
        config::Balance::Hash(config::HashKey::ClientIp) => "hash(client_ip)".into(),
        config::Balance::Hash(config::HashKey::Header(h)) => format!("hash(header:{h})"),
        config::Balance::Hash(config::HashKey::Cookie(c)) => format!("hash(cookie:{c})"),
    }
}

pub fn status(state: &State) -> Value {
    let now = now_ms();
    let pools: Vec<Value> = state
        .pools
        .iter()
        .map(|p| {
            let set = p.set.load();
            let backends: Vec<Value> = set
                .backends
                .iter()
                .map(|b| {
                    json!({
                        "address": b.addr.to_string(),
                        "host": &*b.host,
                        "weight": b.weight,
                        "up": b.stats.available(now),
                        "active_check_up": b.stats.active_up(),
                        "passive_down_ms": b.stats.passive_down_ms(now),
                        "in_flight": b.stats.in_flight.get(),
                    })
                })
                .collect();
            json!({
                "name": &*p.name,
                "balance": balance_name(&p.balance),
                "health_check": p.health_check.as_ref().map(|h| json!({
                    "path": h.path, "interval_ms": h.interval.as_millis() as u64,
                    "timeout_ms": h.timeout.as_millis() as u64, "rise": h.rise, "fall": h.fall,
                })),
                "keepalive": p.keepalive,
                "max_fails": p.max_fails,
                "fail_timeout_ms": p.fail_timeout.as_millis() as u64,
                "healthy": p.has_available(),
                "backends": backends,
            })
        })
        .collect();
    let routes: Vec<Value> = state
        .routes
        .iter()
        .zip(state.config.routes.iter())
        .map(|(r, c)| {
            json!({
                "name": &*r.name,
                "path": c.path,
                "host": c.host,
                "stream": r.stream,
                "active_streams": r.active_streams.get(),
                "split": r.split.as_ref().map(|s| &*s.name),
                "targets": r.targets.iter().map(|t| json!({"pool": &*t.pool.name, "weight": t.weight})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "generation": state.generation,
        "config_file": state.config.file.display().to_string(),
        "ready": state.ready(),
        "pools": pools,
        "routes": routes,
        "splits": split_status(state),
        "zones": crate::policy::zones::status(),
    })
}

/// `/status` entries of every split in use, once each.
fn split_status(state: &State) -> Vec<Value> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for r in &state.routes {
        if let Some(s) = &r.split {
            if !seen.contains(&&*s.name) {
                seen.push(&s.name);
                out.push(s.status(&r.targets));
            }
        }
    }
    out
}
