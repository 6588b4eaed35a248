//! Per-backend live state shared by every pool build that contains the backend: in-flight
//! count (least-conn), active health (rise/fall) and passive health (max_fails/fail_timeout).
//! Kept in a registry keyed by (pool, address) so a DNS rebuild or a config reload that keeps a
//! backend keeps its counts: requests still running on the old build decrement the same counter.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use crate::metrics::METRICS;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds on a monotonic clock (process-relative).
pub fn now_ms() -> u64 {
    START.elapsed().as_millis() as u64
}

pub struct BackendStats {
    pub pool: Arc<str>,
    /// Label value and display form: "ip:port".
    pub label: Arc<str>,
    /// In-flight requests; also exported as `gateway_backend_in_flight`.
    pub in_flight: IntGauge,
    up_gauge: IntGauge,
    active_up: AtomicBool,
    /// An active check has passed at least once (the `/readyz` rule of a checked pool).
    passed_check: AtomicBool,
    consecutive_ok: AtomicU32,
    consecutive_fail: AtomicU32,
    passive_fails: AtomicU32,
    passive_window_start: AtomicU64,
    down_until_ms: AtomicU64,
}

type Registry = Mutex<HashMap<(Arc<str>, SocketAddr), Weak<BackendStats>>>;
static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Mutex::new(HashMap::new()));

impl BackendStats {
    /// The live stats of `addr` in `pool`, created on first use.
    pub fn get(pool: &Arc<str>, addr: SocketAddr) -> Arc<BackendStats> {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let key = (pool.clone(), addr);
        if let Some(existing) = reg.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let label: Arc<str> = addr.to_string().into();
        let stats = Arc::new(BackendStats {
            pool: pool.clone(),
            in_flight: METRICS.backend_in_flight.with_label_values(&[pool, &label]),
            up_gauge: METRICS.backend_up.with_label_values(&[pool, &label]),
            label,
            active_up: AtomicBool::new(true),
            passed_check: AtomicBool::new(false),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            passive_fails: AtomicU32::new(0),
            passive_window_start: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
        });
        stats.up_gauge.set(1);
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(key, Arc::downgrade(&stats));
        stats
    }

    /// Takes traffic: the active check says up and no passive penalty is running.
    #[inline]
    pub fn available(&self, now_ms: u64) -> bool {
        self.active_up.load(Relaxed) && self.down_until_ms.load(Relaxed) <= now_ms
    }

    pub fn active_up(&self) -> bool {
        self.active_up.load(Relaxed)
    }

    /// An active check of this backend has passed at least once since it was first seen (a
    /// reload keeps it: the stats outlive pool rebuilds).
    pub fn passed_check(&self) -> bool {
        self.passed_check.load(Relaxed)
    }

    /// Milliseconds left of a passive "down" penalty, 0 when none.
    pub fn passive_down_ms(&self, now_ms: u64) -> u64 {
        self.down_until_ms.load(Relaxed).saturating_sub(now_ms)
    }

    /// Feed one active check result; returns Some(new state) when it flipped.
    pub fn record_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let changed = if ok {
            self.passed_check.store(true, Relaxed);
            self.consecutive_fail.store(0, Relaxed);
            let n = self.consecutive_ok.fetch_add(1, Relaxed).saturating_add(1);
            if !self.active_up.load(Relaxed) && n >= rise.max(1) {
                self.active_up.store(true, Relaxed);
                // A backend that came back is given a clean slate, like nginx after fail_timeout.
                self.down_until_ms.store(0, Relaxed);
                self.passive_fails.store(0, Relaxed);
                Some(true)
            } else {
                None
            }
        } else {
            self.consecutive_ok.store(0, Relaxed);
            let n = self
                .consecutive_fail
                .fetch_add(1, Relaxed)
                .saturating_add(1);
            if self.active_up.load(Relaxed) && n >= fall.max(1) {
                self.active_up.store(false, Relaxed);
                Some(false)
            } else {
                None
            }
        };
        self.refresh_gauge(now_ms());
        changed
    }

    /// A failed attempt (connect error, timeout, broken upstream), like nginx's max_fails: this
    /// many failures within `fail_timeout` take the backend out for `fail_timeout`.
    /// Returns true when this failure took it out.
    pub fn record_failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        if max_fails == 0 {
            return false;
        }
        let now = now_ms();
        let window = fail_timeout.as_millis() as u64;
        let start = self.passive_window_start.load(Relaxed);
        if now.saturating_sub(start) > window {
            self.passive_fails.store(0, Relaxed);
            self.passive_window_start.store(now, Relaxed);
        }
        let fails = self.passive_fails.fetch_add(1, Relaxed).saturating_add(1);
        if fails >= max_fails {
            self.passive_fails.store(0, Relaxed);
            self.passive_window_start.store(now, Relaxed);
            self.down_until_ms.store(now + window, Relaxed);
            self.up_gauge.set(0);
            return true;
        }
        false
    }

    /// A good answer clears the failure count (nginx resets `fails` on success).
    #[inline]
    pub fn record_success(&self) {
        if self.passive_fails.load(Relaxed) != 0 {
            self.passive_fails.store(0, Relaxed);
        }
    }

    /// Bring `gateway_backend_up` in line with the state (passive penalties expire lazily).
    pub fn refresh_gauge(&self, now_ms: u64) {
        self.up_gauge.set(i64::from(self.available(now_ms)));
    }
}

impl Drop for BackendStats {
    fn drop(&mut self) {
        // The backend left every pool: drop its series instead of exporting a stale value.
        let _ = METRICS
            .backend_in_flight
            .remove_label_values(&[&self.pool, &self.label]);
        let _ = METRICS
            .backend_up
            .remove_label_values(&[&self.pool, &self.label]);
    }
}

/// Holds one in-flight slot on a backend; releasing happens on drop, so every exit path
/// (end of response, error, client gone, retry to another backend) gives it back.
pub struct InFlight(Arc<BackendStats>);

impl InFlight {
    pub fn new(stats: Arc<BackendStats>) -> InFlight {
        stats.in_flight.inc();
        InFlight(stats)
    }

    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn stats_survive_rebuilds_while_referenced() {
        let pool: Arc<str> = "t-survive".into();
        let a = BackendStats::get(&pool, addr(1));
        let guard = InFlight::new(a.clone());
        drop(a);
        let again = BackendStats::get(&pool, addr(1));
        assert_eq!(again.in_flight.get(), 1);
        drop(guard);
        assert_eq!(again.in_flight.get(), 0);
    }

    #[test]
    fn rise_and_fall() {
        let pool: Arc<str> = "t-rise".into();
        let s = BackendStats::get(&pool, addr(2));
        assert_eq!(s.record_check(false, 2, 2), None);
        assert_eq!(s.record_check(false, 2, 2), Some(false));
        assert!(!s.available(now_ms()));
        assert_eq!(s.record_check(true, 2, 2), None);
        assert_eq!(s.record_check(true, 2, 2), Some(true));
        assert!(s.available(now_ms()));
    }

    #[test]
    fn passive_max_fails() {
        let pool: Arc<str> = "t-passive".into();
        let s = BackendStats::get(&pool, addr(3));
        let ft = Duration::from_secs(30);
        assert!(!s.record_failure(3, ft));
        s.record_success();
        assert!(!s.record_failure(3, ft));
        assert!(!s.record_failure(3, ft));
        assert!(s.record_failure(3, ft));
        assert!(!s.available(now_ms()));
        assert!(s.passive_down_ms(now_ms()) > 29_000);
        // max_fails = 0 disables passive health.
        let t = BackendStats::get(&pool, addr(4));
        for _ in 0..10 {
            assert!(!t.record_failure(0, ft));
        }
        assert!(t.available(now_ms()));
    }
}
