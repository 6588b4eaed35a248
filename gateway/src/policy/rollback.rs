//! Automatic canary rollback (`[splits.NAME.rollback]`, beyond nginx): the 5xx ratio of one
//! pool of a split over a sliding window, and on MCP routes its tool-error ratio (tool calls
//! answered with a JSON-RPC error or `isError: true`, which are HTTP 200: a canary that breaks
//! tools shows no 5xx at all). Once either exceeds its threshold with at least `min_requests`
//! requests (tool calls, for the second) in the window, the pool's weight is 0 until the next
//! reload (a reload builds a fresh watch). Logged, shown in `/status` and in
//! `gateway_split_rollback{split,pool}` / `gateway_split_weight{split,pool}`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use prometheus::{IntGaugeVec, Opts};

use crate::config;
use crate::metrics::METRICS;
use crate::upstream::balance::stats::now_ms;

/// `gateway_split_weight{split,pool}` and `gateway_split_rollback{split,pool}`: published by
/// `split::publish` when a state is swapped in, and changed here when a watch trips.
pub struct SplitGauges {
    pub weight: IntGaugeVec,
    pub rollback: IntGaugeVec,
}

pub static SPLIT_GAUGES: LazyLock<SplitGauges> = LazyLock::new(|| {
    // startup: constant, valid names and labels, registered once.
    let weight = IntGaugeVec::new(
        Opts::new(
            "gateway_split_weight",
            "Effective weight of each pool of a split (0 after an automatic rollback)",
        ),
        &["split", "pool"],
    )
    .expect("startup: valid metric");
    let rollback = IntGaugeVec::new(
        Opts::new(
            "gateway_split_rollback",
            "1 while a split's pool is rolled back automatically (until the next reload)",
        ),
        &["split", "pool"],
    )
    .expect("startup: valid metric");
    for c in [weight.clone(), rollback.clone()] {
        if let Err(e) = METRICS.registry.register(Box::new(c)) {
            log::error!("metrics: cannot register split gauges: {e}");
        }
    }
    SplitGauges { weight, rollback }
});

/// Buckets per window: the window slides in steps of window / BUCKETS.
const BUCKETS: u64 = 20;

#[derive(Clone, Copy)]
struct Bucket {
    /// Start of the bucket, in `now_ms` / step units.
    slot: u64,
    total: u64,
    errors: u64,
    calls: u64,
    call_errors: u64,
}

/// What a window holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub requests: u64,
    pub errors_5xx: u64,
    pub tool_calls: u64,
    pub tool_errors: u64,
}

pub struct RollbackWatch {
    /// Index of the watched pool among the split's (= the route's) targets.
    pub pool_index: usize,
    pub pool: String,
    pub max_5xx_ratio: Option<f64>,
    pub max_tool_error_ratio: Option<f64>,
    pub window_ms: u64,
    pub min_requests: u64,
    step_ms: u64,
    buckets: Mutex<VecDeque<Bucket>>,
    tripped: AtomicBool,
    /// What the window held when it tripped.
    tripped_at: Mutex<Option<Seen>>,
}

impl RollbackWatch {
    pub fn new(cfg: &config::Rollback, pool_index: usize) -> RollbackWatch {
        let window_ms = (cfg.window.as_millis() as u64).max(1);
        RollbackWatch {
            pool_index,
            pool: cfg.pool.clone(),
            max_5xx_ratio: cfg.max_5xx_ratio,
            max_tool_error_ratio: cfg.max_tool_error_ratio,
            window_ms,
            min_requests: cfg.min_requests.max(1),
            step_ms: (window_ms / BUCKETS).max(1),
            buckets: Mutex::new(VecDeque::with_capacity(BUCKETS as usize + 1)),
            tripped: AtomicBool::new(false),
            tripped_at: Mutex::new(None),
        }
    }

    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// What the window held when it tripped.
    pub fn tripped_at(&self) -> Option<Seen> {
        *self
            .tripped_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the current window holds.
    pub fn window(&self) -> Seen {
        let slot = now_ms() / self.step_ms;
        let b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        sum(&b, slot)
    }

    /// Counts a finished request of the watched pool; `tool_call` is Some(failed) for an MCP
    /// `tools/call`. Returns true when this one tripped it.
    pub fn record(&self, split: &str, status: u16, tool_call: Option<bool>) -> bool {
        self.record_at(split, status, tool_call, now_ms())
    }

    fn record_at(&self, split: &str, status: u16, tool_call: Option<bool>, now: u64) -> bool {
        if self.tripped() {
            return false;
        }
        let slot = now / self.step_ms;
        let seen = {
            let mut b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
            match b.back_mut() {
                Some(last) if last.slot == slot => {}
                _ => b.push_back(Bucket {
                    slot,
                    total: 0,
                    errors: 0,
                    calls: 0,
                    call_errors: 0,
                }),
            }
            if let Some(last) = b.back_mut() {
                last.total += 1;
                if status >= 500 {
                    last.errors += 1;
                }
                if let Some(failed) = tool_call {
                    last.calls += 1;
                    // A 5xx tool call failed too.
                    if failed || status >= 500 {
                        last.call_errors += 1;
                    }
                }
            }
            while b.front().is_some_and(|f| f.slot + BUCKETS <= slot) {
                b.pop_front();
            }
            sum(&b, slot)
        };
        let over = |limit: Option<f64>, errors: u64, total: u64| {
            limit.is_some_and(|r| total >= self.min_requests && errors as f64 > r * total as f64)
        };
        let by_5xx = over(self.max_5xx_ratio, seen.errors_5xx, seen.requests);
        let by_tools = over(self.max_tool_error_ratio, seen.tool_errors, seen.tool_calls);
        if !(by_5xx || by_tools) {
            return false;
        }
        if self.tripped.swap(true, Ordering::Relaxed) {
            return false;
        }
        *self
            .tripped_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(seen);
        let g = &*SPLIT_GAUGES;
        g.rollback.with_label_values(&[split, &self.pool]).set(1);
        g.weight.with_label_values(&[split, &self.pool]).set(0);
        let why = if by_5xx {
            format!(
                "{} of {} responses were 5xx (limit {:.1}%)",
                seen.errors_5xx,
                seen.requests,
                self.max_5xx_ratio.unwrap_or(0.0) * 100.0
            )
        } else {
            format!(
                "{} of {} tool calls failed at the MCP level (limit {:.1}%)",
                seen.tool_errors,
                seen.tool_calls,
                self.max_tool_error_ratio.unwrap_or(0.0) * 100.0
            )
        };
        log::warn!(
            "split {split}: pool {} rolled back: {why} in the last {} ms; its weight is 0 until the next reload",
            self.pool,
            self.window_ms,
        );
        true
    }
}

fn sum(b: &VecDeque<Bucket>, slot: u64) -> Seen {
    b.iter()
        .filter(|x| x.slot + BUCKETS > slot)
        .fold(Seen::default(), |s, x| Seen {
            requests: s.requests + x.total,
            errors_5xx: s.errors_5xx + x.errors,
            tool_calls: s.tool_calls + x.calls,
            tool_errors: s.tool_errors + x.call_errors,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn watch(ratio: f64, min: u64) -> RollbackWatch {
        let cfg = config::Rollback {
            pool: "canary".into(),
            max_5xx_ratio: Some(ratio),
            max_tool_error_ratio: None,
            window: Duration::from_secs(10),
            min_requests: min,
        };
        RollbackWatch::new(&cfg, 1)
    }

    #[test]
    fn trips_only_above_the_ratio_with_enough_requests() {
        let w = watch(0.5, 10);
        // 9 errors out of 9: not enough requests yet.
        for i in 0..9 {
            assert!(!w.record_at("trip", 500, None, 1000 + i));
        }
        assert!(!w.tripped());
        assert!(w.record_at("trip", 500, None, 1100));
        assert!(w.tripped());
        assert_eq!(
            w.tripped_at().map(|s| (s.errors_5xx, s.requests)),
            Some((10, 10))
        );
        let g = &*SPLIT_GAUGES;
        assert_eq!(g.rollback.with_label_values(&["trip", "canary"]).get(), 1);
        assert_eq!(g.weight.with_label_values(&["trip", "canary"]).get(), 0);
    }

    #[test]
    fn old_errors_leave_the_window() {
        let w = watch(0.5, 4);
        for i in 0..3 {
            w.record_at("s", 502, None, i);
        }
        // 11 s later the errors are gone: 4 successes do not trip it.
        for i in 0..4 {
            assert!(!w.record_at("s", 200, None, 11_000 + i));
        }
        assert!(!w.tripped());
        // At the ratio exactly: not above it.
        let w = watch(0.5, 4);
        for (i, s) in [500, 200, 500, 200].into_iter().enumerate() {
            w.record_at("s", s, None, i as u64);
        }
        assert!(!w.tripped());
    }

    #[test]
    fn tool_errors_trip_it_while_every_status_is_200() {
        let cfg = config::Rollback {
            pool: "canary".into(),
            max_5xx_ratio: Some(0.05),
            max_tool_error_ratio: Some(0.3),
            window: Duration::from_secs(10),
            min_requests: 5,
        };
        let w = RollbackWatch::new(&cfg, 1);
        // Requests that are not tool calls never count for the tool ratio.
        for i in 0..20 {
            assert!(!w.record_at("tools", 200, None, i));
        }
        for (i, failed) in [false, true, false, true].into_iter().enumerate() {
            assert!(!w.record_at("tools", 200, Some(failed), 100 + i as u64));
        }
        // 3 of 5 tool calls failed: above 30 %.
        assert!(w.record_at("tools", 200, Some(true), 200));
        let seen = w.tripped_at().unwrap();
        assert_eq!(
            (seen.tool_errors, seen.tool_calls, seen.errors_5xx),
            (3, 5, 0)
        );
    }
}
