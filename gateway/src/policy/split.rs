//! Splits (blue-green, canary): which of a route's pools serves a request.
//!
//! * Weighted, and a pool with no healthy backend gives its share to the others.
//! * Sticky per client while the weights stay the same: `sticky = "cookie"` sets a cookie
//!   holding the chosen pool and a fingerprint of the weights (a weight change makes every
//!   cookie stale, so clients are dealt again); `bearer` / `client_ip` / `header:<Name>` hash
//!   that key onto the weights (no state, the same client lands on the same pool); `none`
//!   deals every request afresh.
//! * A force header (default `X-Gateway-Pool`, `""` disables) picks a pool by name, to try the
//!   canary by hand; it ignores weights (even 0) but not the pool's health.
//! * An optional rollback watch ([`crate::policy::rollback`]) zeroes one pool's weight.

use std::cell::Cell;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::RequestHeader;
use serde_json::{json, Value};

use crate::config::{Config, Sticky};
use crate::policy::rollback::{RollbackWatch, SPLIT_GAUGES};
use crate::routing::Target;

pub struct SplitRt {
    pub name: Arc<str>,
    /// (pool, configured weight), in the order of the route targets built from this split.
    pub pools: Vec<(String, u32)>,
    sticky: Sticky,
    cookie: String,
    force_header: Option<String>,
    /// Short hash of the weights, carried in the sticky cookie.
    fingerprint: String,
    pub rollback: Option<RollbackWatch>,
}

/// The split's decision for one request.
pub struct Pick {
    pub index: usize,
    /// `Set-Cookie` value to send with the response (cookie stickiness, new deal).
    pub set_cookie: Option<String>,
}

/// Runtime splits of `cfg`. Pure: the gauges change only in [`publish`], once the state holding
/// these splits is in use.
pub fn build_all(cfg: &Config) -> HashMap<String, Arc<SplitRt>> {
    let mut out = HashMap::with_capacity(cfg.splits.len());
    for s in cfg.splits.values() {
        let name = &s.name;
        let mut h = DefaultHasher::new();
        name.hash(&mut h);
        s.pools.hash(&mut h);
        let fingerprint = format!("{:08x}", h.finish() as u32);
        let rollback = s.rollback.as_ref().and_then(|rb| {
            let index = s.pools.iter().position(|(p, _)| *p == rb.pool)?;
            Some(RollbackWatch::new(rb, index))
        });
        out.insert(
            name.clone(),
            Arc::new(SplitRt {
                name: name.as_str().into(),
                pools: s.pools.clone(),
                sticky: s.sticky.clone(),
                cookie: s.cookie.clone(),
                force_header: s.force_header.clone().filter(|h| !h.is_empty()),
                fingerprint,
                rollback,
            }),
        );
    }
    out
}

/// The weight gauges of the splits now in use (those of removed splits are forgotten); a fresh
/// watch starts not rolled back.
pub fn publish<'a>(splits: impl IntoIterator<Item = &'a Arc<SplitRt>>) {
    let g = &*SPLIT_GAUGES;
    g.weight.reset();
    g.rollback.reset();
    for s in splits {
        for (pool, w) in &s.pools {
            g.weight
                .with_label_values(&[&*s.name, pool.as_str()])
                .set(i64::from(*w));
        }
        if let Some(rb) = &s.rollback {
            g.rollback
                .with_label_values(&[&*s.name, rb.pool.as_str()])
                .set(0);
        }
    }
}

impl SplitRt {
    /// The weight pool `i` has now (0 once rolled back).
    pub fn effective_weight(&self, i: usize, targets: &[Target]) -> u32 {
        let rolled_back = self
            .rollback
            .as_ref()
            .is_some_and(|r| r.pool_index == i && r.tripped());
        if rolled_back {
            0
        } else {
            targets.get(i).map_or(0, |t| t.weight)
        }
    }

    /// Chooses the target for a request. `client_ip` is the address after `[real_ip]`.
    pub fn choose(
        &self,
        targets: &[Target],
        req: &RequestHeader,
        client_ip: Option<IpAddr>,
        tls: bool,
    ) -> Pick {
        if let Some(name) = &self.force_header {
            if let Some(i) = req
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.index_of(v.trim()))
            {
                return Pick {
                    index: i,
                    set_cookie: None,
                };
            }
        }
        let key: Option<u64> = match &self.sticky {
            Sticky::Cookie => {
                if let Some(i) = self.cookie_pool(req).filter(|&i| self.usable(i, targets)) {
                    return Pick {
                        index: i,
                        set_cookie: None,
                    };
                }
                let index = self.deal(targets, random());
                let secure = if tls { "; Secure" } else { "" };
                return Pick {
                    index,
                    set_cookie: Some(format!(
                        "{}={}.{}; Path=/; HttpOnly; SameSite=Lax{secure}",
                        self.cookie, self.pools[index].0, self.fingerprint
                    )),
                };
            }
            Sticky::Bearer => crate::auth::bearer(req).map(hash_of),
            Sticky::ClientIp => client_ip.map(hash_of),
            Sticky::Header(h) => req.headers.get(h.as_str()).map(|v| hash_of(v.as_bytes())),
            Sticky::None => None,
        };
        Pick {
            index: self.deal(targets, key.unwrap_or_else(random)),
            set_cookie: None,
        }
    }

    /// Weighted choice at `point` among pools with a healthy backend and a weight.
    fn deal(&self, targets: &[Target], point: u64) -> usize {
        let n = targets.len().min(self.pools.len());
        let weight = |i: usize| {
            if targets[i].pool.has_available() {
                u64::from(self.effective_weight(i, targets))
            } else {
                0
            }
        };
        let total: u64 = (0..n).map(weight).sum();
        if total == 0 {
            // Nothing healthy with a weight: the first weighted pool (it answers "no healthy
            // backend"), else the first.
            return (0..n)
                .find(|&i| self.effective_weight(i, targets) > 0)
                .unwrap_or(0);
        }
        let mut point = point % total;
        for i in 0..n {
            let w = weight(i);
            if point < w {
                return i;
            }
            point -= w;
        }
        0
    }

    fn usable(&self, i: usize, targets: &[Target]) -> bool {
        self.effective_weight(i, targets) > 0 && targets[i].pool.has_available()
    }

    fn index_of(&self, pool: &str) -> Option<usize> {
        self.pools.iter().position(|(p, _)| p == pool)
    }

    /// The pool of a current (same weights) sticky cookie.
    fn cookie_pool(&self, req: &RequestHeader) -> Option<usize> {
        for line in req.headers.get_all(http::header::COOKIE) {
            let Ok(line) = line.to_str() else { continue };
            for pair in line.split(';') {
                let Some((k, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k != self.cookie {
                    continue;
                }
                let (pool, fp) = v.trim_matches('"').rsplit_once('.')?;
                return if fp == self.fingerprint {
                    self.index_of(pool)
                } else {
                    None
                };
            }
        }
        None
    }

    /// Counts a finished request on pool `index` for the rollback watch.
    /// A finished request of target `index`; `tool_call` is Some(failed) for an MCP tool call.
    pub fn observe(&self, index: usize, status: u16, tool_call: Option<bool>) {
        if let Some(rb) = &self.rollback {
            if rb.pool_index == index && status != 0 {
                rb.record(&self.name, status, tool_call);
            }
        }
    }

    /// The `/status` entry of this split, with the targets of a route using it.
    pub fn status(&self, targets: &[Target]) -> Value {
        let pools: Vec<Value> = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, (p, w))| {
                json!({
                    "pool": p,
                    "weight": w,
                    "effective_weight": self.effective_weight(i, targets),
                    "healthy": targets.get(i).is_some_and(|t| t.pool.has_available()),
                })
            })
            .collect();
        let rollback = self.rollback.as_ref().map(|rb| {
            let w = rb.window();
            json!({
                "pool": rb.pool,
                "rolled_back": rb.tripped(),
                "tripped_at": rb.tripped_at().map(|s| json!({
                    "errors_5xx": s.errors_5xx,
                    "requests": s.requests,
                    "tool_errors": s.tool_errors,
                    "tool_calls": s.tool_calls,
                })),
                "max_5xx_ratio": rb.max_5xx_ratio,
                "max_tool_error_ratio": rb.max_tool_error_ratio,
                "window_ms": rb.window_ms,
                "min_requests": rb.min_requests,
                "window_errors_5xx": w.errors_5xx,
                "window_requests": w.requests,
                "window_tool_errors": w.tool_errors,
                "window_tool_calls": w.tool_calls,
            })
        });
        json!({
            "name": &*self.name,
            "sticky": match &self.sticky {
                Sticky::Cookie => format!("cookie:{}", self.cookie),
                Sticky::Bearer => "bearer".into(),
                Sticky::ClientIp => "client_ip".into(),
                Sticky::Header(h) => format!("header:{h}"),
                Sticky::None => "none".into(),
            },
            "force_header": self.force_header,
            "pools": pools,
            "rollback": rollback,
        })
    }
}

fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// A per-thread xorshift seeded from the process's random hasher keys: enough to deal pools.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x9e37_79b9_u64) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}
