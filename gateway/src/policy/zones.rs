//! Rate zones at run time: the registry of [`limit::Zone`]s by name that outlives reloads (a
//! zone that still exists keeps its per-client state and counters; a changed rate or size is
//! applied in place, as nginx keeps its shared memory across `nginx -s reload`), the per-route
//! limiter (key extraction, nginx's burst / nodelay / delay=N), and the refusal: the zone's
//! status (429 by default) with `Retry-After` and the JSON error envelope.
//!
//! A request whose key is empty (no `Authorization: Bearer` token for `key = "bearer"`, the
//! header absent or empty for `key = "header:X"`, no inet peer for `key = "client_ip"`) is not
//! accounted, as nginx's limit_req says: it passes, creates no zone state, and is counted
//! nowhere (not in `gateway_zone_requests_total`, not in `/status`), so keyless clients never
//! throttle one another. Limit those with another zone (a `client_ip` one) if they must be.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use pingora::http::RequestHeader;
use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::config::{self, Config, LimitKey};
use crate::edge::errors::GatewayError;
use crate::edge::respond::Reply;
use crate::metrics::METRICS;
use crate::policy::limit::{Decision, Delay, Zone};
use crate::upstream::balance::stats::now_ms;

/// Zones by name; replaced on every successful state build (see [`sync`]).
static REGISTRY: LazyLock<Mutex<HashMap<String, Arc<Zone>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// `gateway_zone_requests_total{zone,outcome}`, registered in the gateway's registry.
static ZONE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    // startup: constant, valid name and labels, registered once.
    let v = IntCounterVec::new(
        Opts::new(
            "gateway_zone_requests_total",
            "Requests checked by a rate zone, by outcome (passed, delayed, rejected); requests with an empty key are not accounted",
        ),
        &["zone", "outcome"],
    )
    .expect("startup: valid metric");
    if let Err(e) = METRICS.registry.register(Box::new(v.clone())) {
        log::error!("metrics: cannot register gateway_zone_requests_total: {e}");
    }
    v
});

/// The zones a new state will use: the live zone of every name that already exists (state and
/// counters kept), new zones for new names. Nothing live changes until [`ZonePlan::commit`].
pub struct ZonePlan {
    zones: HashMap<String, Arc<Zone>>,
    /// New rate (milli-requests/s) and key capacity of each zone, applied at commit.
    settings: Vec<(Arc<Zone>, String, u64, usize)>,
}

/// Plans the zones of `cfg` against the live registry (read only).
pub fn plan(cfg: &Config) -> ZonePlan {
    let reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let mut zones = HashMap::with_capacity(cfg.zones.len());
    let mut settings = Vec::with_capacity(cfg.zones.len());
    for z in cfg.zones.values() {
        let rate = z.rate.milli_per_sec();
        let keys = Zone::keys_for_size(z.size);
        let zone = match reg.get(&z.name) {
            Some(live) => live.clone(),
            None => Arc::new(Zone::new(rate, keys)),
        };
        settings.push((zone.clone(), z.name.clone(), rate, keys));
        zones.insert(z.name.clone(), zone);
    }
    ZonePlan { zones, settings }
}

impl ZonePlan {
    pub fn zones(&self) -> &HashMap<String, Arc<Zone>> {
        &self.zones
    }

    /// Makes the plan live: new rates and sizes, and the registry (`/status`) holds exactly
    /// these zones. Call once the state built on the plan is in use.
    pub fn commit(self) {
        let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        for (zone, name, rate, keys) in &self.settings {
            if reg.contains_key(name) && zone.rate_milli_per_sec() != (*rate).max(1) {
                log::info!("zone {name}: rate now {rate} milli-requests/s, client state kept");
            }
            zone.set_rate(*rate);
            zone.set_max_keys(*keys);
        }
        for gone in reg.keys().filter(|k| !self.zones.contains_key(*k)) {
            log::info!("zone {gone}: removed by the new configuration");
        }
        *reg = self.zones;
    }
}

/// `/status` entries of the live zones: tracked keys and outcome totals since each zone was made.
pub fn status() -> Vec<serde_json::Value> {
    let reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let mut names: Vec<&String> = reg.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let z = &reg[n];
            let c = z.counters();
            serde_json::json!({
                "name": n,
                "rate_milli_per_sec": z.rate_milli_per_sec(),
                "keys": z.len(),
                "passed": c.passed,
                "delayed": c.delayed,
                "rejected": c.rejected,
                "evicted": c.evicted,
            })
        })
        .collect()
}

/// A route's `limit = { zone, burst, nodelay | delay }`.
pub struct RouteLimiter {
    zone: Arc<Zone>,
    zone_name: Arc<str>,
    key: LimitKey,
    status: u16,
    burst: u32,
    delay: Delay,
    passed: IntCounter,
    delayed: IntCounter,
    rejected: IntCounter,
}

/// What the proxy does with a request after its zone check.
pub enum Verdict {
    Pass,
    Wait(Duration),
    /// Answer with [`RouteLimiter::refuse`].
    Reject {
        retry_after: Duration,
    },
}

impl RouteLimiter {
    /// The limiter of a route, on the zones returned by [`sync`]. None if the zone is unknown
    /// (validation already refuses that).
    pub fn new(
        cfg: &Config,
        limit: &config::RouteLimit,
        zones: &HashMap<String, Arc<Zone>>,
    ) -> Option<RouteLimiter> {
        let z = cfg.zones.get(&limit.zone)?;
        let zone = zones.get(&limit.zone)?.clone();
        let m = &*ZONE_REQUESTS;
        Some(RouteLimiter {
            zone,
            zone_name: limit.zone.as_str().into(),
            key: z.key.clone(),
            status: z.status,
            burst: limit.burst,
            delay: limit.delay.into(),
            passed: m.with_label_values(&[&limit.zone, "passed"]),
            delayed: m.with_label_values(&[&limit.zone, "delayed"]),
            rejected: m.with_label_values(&[&limit.zone, "rejected"]),
        })
    }

    /// Accounts the request in its zone. `client_ip` is the address after `[real_ip]`, `caller`
    /// the name the edge authenticated.
    pub fn check(
        &self,
        req: &RequestHeader,
        client_ip: Option<IpAddr>,
        caller: Option<&str>,
    ) -> Verdict {
        let mut ip_buf = [0u8; 16];
        let key: &[u8] = match &self.key {
            LimitKey::ClientIp => match client_ip {
                // nginx's $binary_remote_addr: 4 or 16 bytes.
                Some(IpAddr::V4(v4)) => {
                    ip_buf[..4].copy_from_slice(&v4.octets());
                    &ip_buf[..4]
                }
                Some(IpAddr::V6(v6)) => {
                    ip_buf = v6.octets();
                    &ip_buf
                }
                None => b"",
            },
            LimitKey::Bearer => crate::auth::bearer(req).unwrap_or(b""),
            LimitKey::Caller => caller.map(str::as_bytes).unwrap_or(b""),
            LimitKey::Header(name) => req
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes())
                .unwrap_or(b""),
        };
        // nginx: "requests with an empty key value are not accounted" (no state, no counter).
        if key.is_empty() {
            return Verdict::Pass;
        }
        match self.zone.check(key, now_ms(), self.burst, self.delay) {
            Decision::Pass => {
                self.passed.inc();
                Verdict::Pass
            }
            Decision::Delay(d) => {
                self.delayed.inc();
                Verdict::Wait(d)
            }
            Decision::Reject { retry_after } => {
                self.rejected.inc();
                Verdict::Reject { retry_after }
            }
        }
    }

    /// The refusal: the zone's status, `Retry-After` in whole seconds (rounded up, at least 1)
    /// and the error envelope.
    pub fn refusal(&self, request_id: &str, retry_after: Duration) -> Reply {
        let secs = retry_after.as_millis().div_ceil(1000).max(1);
        let err = GatewayError {
            status: self.status,
            code: "RATE_LIMITED",
            message: format!(
                "too many requests (rate zone {}); retry after {secs} s",
                self.zone_name
            ),
            hint: "slow down: wait the number of seconds in Retry-After",
        };
        Reply::error(&err, request_id).with_header(http::header::RETRY_AFTER, secs.to_string())
    }

    /// The refusal on an MCP route: a JSON-RPC error naming what was limited (`what`: the tool
    /// or method), the zone's status and `Retry-After`.
    pub fn jsonrpc_refusal(
        &self,
        id: Option<&serde_json::Value>,
        what: &str,
        retry_after: Duration,
    ) -> Reply {
        let secs = retry_after.as_millis().div_ceil(1000).max(1);
        let body = crate::mcp::view::jsonrpc_error(
            id,
            crate::mcp::view::RATE_LIMITED,
            &format!(
                "rate limited: {what} (rate zone {}); retry after {secs} s",
                self.zone_name
            ),
            Some(serde_json::json!({"retryAfter": secs as u64, "zone": &*self.zone_name})),
        );
        Reply::jsonrpc_error(self.status, body)
            .with_header(http::header::RETRY_AFTER, secs.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
[listeners.http]
address = "127.0.0.1:8080"
redirect_https = false
[pools.p]
servers = ["127.0.0.1:3001"]
[zones.z]
key = "bearer"
rate = "1r/s"
[[routes]]
path = "/"
pool = "p"
limit = { zone = "z", burst = 1, nodelay = true }
"#;

    fn req(token: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("authorization", format!("Bearer {token}"))
            .unwrap();
        r
    }

    #[test]
    fn zone_state_survives_a_reload_and_takes_the_new_rate() {
        let cfg = config::parse(CONF, std::path::Path::new("/tmp/t.toml")).unwrap();
        let planned = plan(&cfg);
        let zones = planned.zones().clone();
        planned.commit();
        let lim = RouteLimiter::new(&cfg, cfg.routes[0].limit.as_ref().unwrap(), &zones).unwrap();
        // burst 1 nodelay: two pass at once, the third is refused.
        assert!(matches!(lim.check(&req("a"), None, None), Verdict::Pass));
        assert!(matches!(lim.check(&req("a"), None, None), Verdict::Pass));
        assert!(matches!(
            lim.check(&req("a"), None, None),
            Verdict::Reject { .. }
        ));
        // Another client has its own bucket.
        assert!(matches!(lim.check(&req("b"), None, None), Verdict::Pass));

        let cfg2 = config::parse(
            &CONF.replace("1r/s", "2r/m"),
            std::path::Path::new("/tmp/t.toml"),
        )
        .unwrap();
        let planned = plan(&cfg2);
        let zones2 = planned.zones().clone();
        assert!(Arc::ptr_eq(&zones["z"], &zones2["z"]), "same zone kept");
        // A reload that is only planned (its state never swapped in) changes nothing live.
        assert_eq!(zones2["z"].rate_milli_per_sec(), 1000);
        planned.commit();
        assert_eq!(zones2["z"].rate_milli_per_sec(), 33);
        let lim2 =
            RouteLimiter::new(&cfg2, cfg2.routes[0].limit.as_ref().unwrap(), &zones2).unwrap();
        // Client a is still in debt after the reload.
        assert!(matches!(
            lim2.check(&req("a"), None, None),
            Verdict::Reject { .. }
        ));
        assert_eq!(zones2["z"].counters().rejected, 2);

        let cfg3 = config::parse(
            &CONF
                .replace("zones.z", "zones.y")
                .replace("zone = \"z\"", "zone = \"y\""),
            std::path::Path::new("/tmp/t.toml"),
        )
        .unwrap();
        let planned = plan(&cfg3);
        assert!(!planned.zones().contains_key("z"));
        planned.commit();
        assert!(
            status().iter().all(|z| z["name"] != "z"),
            "removed from /status"
        );
    }

    #[test]
    fn empty_keys_are_not_accounted() {
        let conf = CONF
            .replace("zones.z", "zones.e")
            .replace("zone = \"z\"", "zone = \"e\"");
        let cfg = config::parse(&conf, std::path::Path::new("/tmp/t.toml")).unwrap();
        // Not through `plan`: the registry is shared with the reload test running beside this.
        let zones = HashMap::from([("e".to_string(), Arc::new(Zone::new(1000, 100)))]);
        let lim = RouteLimiter::new(&cfg, cfg.routes[0].limit.as_ref().unwrap(), &zones).unwrap();
        let anonymous = RequestHeader::build("GET", b"/", None).unwrap();
        for _ in 0..10 {
            assert!(matches!(lim.check(&anonymous, None, None), Verdict::Pass));
        }
        let c = zones["e"].counters();
        assert_eq!((c.passed, c.delayed, c.rejected), (0, 0, 0));
        assert_eq!(zones["e"].len(), 0, "no state for the empty key");
        assert_eq!(lim.passed.get(), 0);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(crate::auth::bearer(&req("abc")), Some(&b"abc"[..]));
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("authorization", "Basic xyz").unwrap();
        assert_eq!(crate::auth::bearer(&r), None);
    }
}
