//! Automatic canary rollback (`[splits.NAME.rollback]`, beyond nginx): the 5xx ratio of one
//! pool of a split over a sliding window; once it exceeds the threshold with at least
//! `min_requests` requests in the window, the pool's weight is 0 until the next reload (a
//! reload builds a fresh watch). Logged, shown in `/status` and in
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
}

pub struct RollbackWatch {
    /// Index of the watched pool among the split's (= the route's) targets.
    pub pool_index: usize,
    pub pool: String,
    pub max_ratio: f64,
    pub window_ms: u64,
    pub min_requests: u64,
    step_ms: u64,
    buckets: Mutex<VecDeque<Bucket>>,
    tripped: AtomicBool,
    /// What was seen when it tripped: (5xx, total).
    tripped_at: Mutex<Option<(u64, u64)>>,
}

impl RollbackWatch {
    pub fn new(cfg: &config::Rollback, pool_index: usize) -> RollbackWatch {
        let window_ms = (cfg.window.as_millis() as u64).max(1);
        RollbackWatch {
            pool_index,
            pool: cfg.pool.clone(),
            max_ratio: cfg.max_5xx_ratio,
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

    /// (5xx, total) within the window when it tripped.
    pub fn tripped_at(&self) -> Option<(u64, u64)> {
        *self
            .tripped_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// (5xx, total) in the current window.
    pub fn window(&self) -> (u64, u64) {
        let slot = now_ms() / self.step_ms;
        let b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        sum(&b, slot)
    }

    /// Counts a finished request of the watched pool. Returns true when this one tripped it.
    pub fn record(&self, split: &str, status: u16) -> bool {
        self.record_at(split, status, now_ms())
    }

    fn record_at(&self, split: &str, status: u16, now: u64) -> bool {
        if self.tripped() {
            return false;
        }
        let slot = now / self.step_ms;
        let (errors, total) = {
            let mut b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
            match b.back_mut() {
                Some(last) if last.slot == slot => {}
                _ => b.push_back(Bucket {
                    slot,
                    total: 0,
                    errors: 0,
                }),
            }
            if let Some(last) = b.back_mut() {
                last.total += 1;
                if status >= 500 {
                    last.errors += 1;
                }
            }
            while b.front().is_some_and(|f| f.slot + BUCKETS <= slot) {
                b.pop_front();
            }
            sum(&b, slot)
        };
        if total < self.min_requests || (errors as f64) <= self.max_ratio * total as f64 {
            return false;
        }
        if self.tripped.swap(true, Ordering::Relaxed) {
            return false;
        }
        *self
            .tripped_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((errors, total));
        let g = &*SPLIT_GAUGES;
        g.rollback.with_label_values(&[split, &self.pool]).set(1);
        g.weight.with_label_values(&[split, &self.pool]).set(0);
        log::warn!(
            "split {split}: pool {} rolled back: {errors} of {total} responses were 5xx in the last {} ms (limit {:.1}%); its weight is 0 until the next reload",
            self.pool,
            self.window_ms,
            self.max_ratio * 100.0
        );
        true
    }
}

fn sum(b: &VecDeque<Bucket>, slot: u64) -> (u64, u64) {
    b.iter()
        .filter(|x| x.slot + BUCKETS > slot)
        .fold((0, 0), |(e, t), x| (e + x.errors, t + x.total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn watch(ratio: f64, min: u64) -> RollbackWatch {
        let cfg = config::Rollback {
            pool: "canary".into(),
            max_5xx_ratio: ratio,
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
            assert!(!w.record_at("trip", 500, 1000 + i));
        }
        assert!(!w.tripped());
        assert!(w.record_at("trip", 500, 1100));
        assert!(w.tripped());
        assert_eq!(w.tripped_at(), Some((10, 10)));
        let g = &*SPLIT_GAUGES;
        assert_eq!(g.rollback.with_label_values(&["trip", "canary"]).get(), 1);
        assert_eq!(g.weight.with_label_values(&["trip", "canary"]).get(), 0);
    }

    #[test]
    fn old_errors_leave_the_window() {
        let w = watch(0.5, 4);
        for i in 0..3 {
            w.record_at("s", 502, i);
        }
        // 11 s later the errors are gone: 4 successes do not trip it.
        for i in 0..4 {
            assert!(!w.record_at("s", 200, 11_000 + i));
        }
        assert!(!w.tripped());
        // At the ratio exactly: not above it.
        let w = watch(0.5, 4);
        for (i, s) in [500, 200, 500, 200].into_iter().enumerate() {
            w.record_at("s", s, i as u64);
        }
        assert!(!w.tripped());
    }
}
