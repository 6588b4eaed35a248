//! Upstream pools at run time: the current backend set of each pool and how one is picked.
//!
//! - least_conn: our own selector ([`least_conn`]), since it needs live in-flight counts.
//! - round_robin: Pingora's `Weighted<RoundRobin>` through its `BackendSelection` trait.
//! - hash: Pingora's `KetamaHashing` (consistent hashing) through `BackendSelection`, keyed by
//!   client IP, a header or a cookie ([`hash`]).
//!
//! A pool's backend set is swapped whole (DNS re-resolution, reload); per-backend counters live
//! in [`stats::BackendStats`] and survive the swap.

pub mod hash;
pub mod least_conn;
pub mod stats;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, RoundRobin};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

use crate::config;
use stats::{now_ms, BackendStats};

/// One backend address of a pool, as the balancer sees it.
pub struct BackendEntry {
    pub addr: SocketAddr,
    pub weight: u32,
    /// The name it was configured with (SNI / health-check Host), e.g. "backend" or "127.0.0.1".
    pub host: Arc<str>,
    pub stats: Arc<BackendStats>,
}

impl BackendEntry {
    pub fn new(pool: &Arc<str>, addr: SocketAddr, weight: u32, host: Arc<str>) -> Arc<Self> {
        Arc::new(BackendEntry {
            addr,
            weight,
            host,
            stats: BackendStats::get(pool, addr),
        })
    }
}

/// An immutable snapshot of a pool's backends with the selectors built over it.
pub struct BackendSet {
    pub backends: Vec<Arc<BackendEntry>>,
    wheel: Vec<u32>,
    cursor: AtomicUsize,
    selector: Selector,
}

enum Selector {
    LeastConn,
    RoundRobin(Arc<RoundRobin>),
    Hash(Arc<Consistent>),
}

impl BackendSet {
    pub fn build(balance: &config::Balance, backends: Vec<Arc<BackendEntry>>) -> BackendSet {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let selector = match balance {
            config::Balance::LeastConn => Selector::LeastConn,
            config::Balance::RoundRobin => {
                Selector::RoundRobin(Arc::new(RoundRobin::build(&pingora_set(&backends))))
            }
            config::Balance::Hash(_) => {
                Selector::Hash(Arc::new(Consistent::build(&pingora_set(&backends))))
            }
        };
        BackendSet {
            wheel: least_conn::build_wheel(&weights),
            backends,
            cursor: AtomicUsize::new(0),
            selector,
        }
    }

    /// Addresses and weights, to tell whether a rebuild changes anything.
    pub fn signature(&self) -> Vec<(SocketAddr, u32)> {
        let mut v: Vec<_> = self.backends.iter().map(|b| (b.addr, b.weight)).collect();
        v.sort();
        v
    }

    fn select(
        &self,
        key: &[u8],
        accept: impl Fn(&BackendEntry) -> bool,
    ) -> Option<Arc<BackendEntry>> {
        match &self.selector {
            Selector::LeastConn => {
                least_conn::select(&self.backends, &self.wheel, &self.cursor, accept)
                    .map(|i| self.backends[i].clone())
            }
            Selector::RoundRobin(rr) => self.first_accepted(rr.iter(key), &accept),
            Selector::Hash(ring) => self.first_accepted(ring.iter(key), &accept),
        }
    }

    /// Walk a Pingora selection iterator, then fall back to a scan so an acceptable backend is
    /// never missed because the iterator's fallback order is random.
    fn first_accepted(
        &self,
        mut iter: impl BackendIter,
        accept: &impl Fn(&BackendEntry) -> bool,
    ) -> Option<Arc<BackendEntry>> {
        let limit = self.backends.len() * 2 + 8;
        for _ in 0..limit {
            let Some(b) = iter.next() else { break };
            if let Some(entry) = b.ext.get::<Arc<BackendEntry>>() {
                if accept(entry) {
                    return Some(entry.clone());
                }
            }
        }
        self.backends.iter().find(|b| accept(b)).cloned()
    }
}

fn pingora_set(backends: &[Arc<BackendEntry>]) -> BTreeSet<Backend> {
    backends
        .iter()
        .map(|b| {
            let mut backend = Backend {
                addr: PingoraAddr::Inet(b.addr),
                weight: b.weight.max(1) as usize,
                ext: Default::default(),
            };
            backend.ext.insert(b.clone());
            backend
        })
        .collect()
}

/// Upstream TLS as the peer builder needs it (CA bundle loaded once).
#[derive(Clone)]
pub struct UpstreamTls {
    pub verify: bool,
    pub sni: Option<String>,
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
}

/// A pool at run time.
pub struct Pool {
    pub name: Arc<str>,
    pub balance: config::Balance,
    pub servers: Vec<config::UpstreamServer>,
    pub resolve_interval: Duration,
    pub keepalive: usize,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub tls: Option<UpstreamTls>,
    pub health_check: Option<config::HealthCheck>,
    pub set: ArcSwap<BackendSet>,
}

impl Pool {
    pub fn new(
        cfg: &config::Pool,
        tls: Option<UpstreamTls>,
        resolved: Vec<ResolvedServer>,
    ) -> Pool {
        let name: Arc<str> = cfg.name.as_str().into();
        let set = BackendSet::build(&cfg.balance, entries(&name, resolved));
        Pool {
            name,
            balance: cfg.balance.clone(),
            servers: cfg.servers.clone(),
            resolve_interval: cfg.resolve_interval,
            keepalive: cfg.keepalive,
            max_fails: cfg.max_fails,
            fail_timeout: cfg.fail_timeout,
            tls,
            health_check: cfg.health_check.clone(),
            set: ArcSwap::from_pointee(set),
        }
    }

    /// Servers given by DNS name (re-resolved periodically).
    pub fn has_dns_servers(&self) -> bool {
        self.servers.iter().any(|s| s.socket_addr.is_none())
    }

    /// Replace the backend set if the resolved addresses differ; returns true when swapped.
    pub fn update_backends(&self, resolved: Vec<ResolvedServer>) -> bool {
        let mut wanted: Vec<(SocketAddr, u32)> =
            resolved.iter().map(|r| (r.addr, r.weight)).collect();
        wanted.sort();
        wanted.dedup_by_key(|w| w.0);
        if wanted == self.set.load().signature() {
            return false;
        }
        let set = BackendSet::build(&self.balance, entries(&self.name, resolved));
        self.set.store(Arc::new(set));
        true
    }

    /// Pick a backend that is healthy and not in `exclude` (backends already tried).
    pub fn select(&self, key: &[u8], exclude: &[SocketAddr]) -> Option<Arc<BackendEntry>> {
        let now = now_ms();
        self.set.load().select(key, |b| {
            b.stats.available(now) && !exclude.contains(&b.addr)
        })
    }

    /// At least one backend takes traffic.
    pub fn has_available(&self) -> bool {
        let now = now_ms();
        self.set
            .load()
            .backends
            .iter()
            .any(|b| b.stats.available(now))
    }

    /// Ready to serve (the `/readyz` rule): a backend takes traffic and, when the pool has an
    /// active health check, has passed one. Traffic itself does not wait for the first check
    /// (a backend is up until checks or failures say otherwise, as in nginx), but a readiness
    /// probe should not send clients to a gateway whose backends have never answered.
    pub fn ready(&self) -> bool {
        let now = now_ms();
        let checked = self.health_check.is_some();
        self.set
            .load()
            .backends
            .iter()
            .any(|b| b.stats.available(now) && (!checked || b.stats.passed_check()))
    }
}

/// One resolved address of a configured server.
#[derive(Debug, Clone)]
pub struct ResolvedServer {
    pub addr: SocketAddr,
    pub weight: u32,
    pub host: Arc<str>,
}

fn entries(pool: &Arc<str>, mut resolved: Vec<ResolvedServer>) -> Vec<Arc<BackendEntry>> {
    resolved.sort_by_key(|r| r.addr);
    resolved.dedup_by_key(|r| r.addr);
    resolved
        .into_iter()
        .map(|r| BackendEntry::new(pool, r.addr, r.weight, r.host))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(ports: &[u16]) -> Vec<ResolvedServer> {
        ports
            .iter()
            .map(|p| ResolvedServer {
                addr: SocketAddr::from(([127, 0, 0, 1], *p)),
                weight: 1,
                host: "127.0.0.1".into(),
            })
            .collect()
    }

    fn pool(balance: config::Balance, name: &str, ports: &[u16]) -> Pool {
        let cfg = config::Pool {
            name: name.into(),
            balance,
            servers: vec![],
            resolve_interval: Duration::from_secs(5),
            keepalive: 8,
            max_fails: 3,
            fail_timeout: Duration::from_secs(30),
            tls: None,
            health_check: None,
        };
        Pool::new(&cfg, None, resolved(ports))
    }

    fn every_balance() -> [config::Balance; 3] {
        [
            config::Balance::LeastConn,
            config::Balance::RoundRobin,
            config::Balance::Hash(config::HashKey::ClientIp),
        ]
    }

    /// Client keys for `select` (the client address of a `hash(client_ip)` pool).
    fn keys() -> Vec<Vec<u8>> {
        (0..64)
            .map(|i| format!("10.0.0.{i}").into_bytes())
            .collect()
    }

    /// How a test takes a backend out, as the gateway does.
    #[derive(Clone, Copy, Debug)]
    enum Down {
        /// `fall` failed active checks.
        Active,
        /// `max_fails` failed attempts within `fail_timeout` (passive health).
        Passive,
    }

    fn mark_down(p: &Pool, b: &BackendEntry, how: Down) {
        match how {
            Down::Active => {
                assert_eq!(b.stats.record_check(false, 2, 2), None);
                assert_eq!(b.stats.record_check(false, 2, 2), Some(false));
            }
            Down::Passive => {
                for _ in 1..p.max_fails {
                    assert!(!b.stats.record_failure(p.max_fails, p.fail_timeout));
                }
                assert!(b.stats.record_failure(p.max_fails, p.fail_timeout));
            }
        }
        assert!(!b.stats.available(now_ms()), "{how:?} did not take it out");
    }

    /// Which backend each key gets, `rounds` times over.
    fn picks(p: &Pool, rounds: usize) -> Vec<SocketAddr> {
        let mut got = Vec::new();
        for _ in 0..rounds {
            for k in keys() {
                match p.select(&k, &[]) {
                    Some(b) => got.push(b.addr),
                    None => panic!("no backend for {k:?} with one still available"),
                }
            }
        }
        got
    }

    #[test]
    fn selection_skips_a_backend_marked_down_by_active_or_passive_health() {
        for how in [Down::Active, Down::Passive] {
            for balance in every_balance() {
                let what = format!("{balance:?}, {how:?}");
                let p = pool(balance, &format!("down-{what}"), &[20041, 20042, 20043]);
                let set = p.set.load_full();
                let target = set.backends[1].clone();
                // The others are busy, so least_conn would pick the idle target if it ignored
                // health; round robin and hash give it a share of the keys anyway.
                let _busy: Vec<stats::InFlight> = set
                    .backends
                    .iter()
                    .filter(|b| b.addr != target.addr)
                    .flat_map(|b| (0..4).map(|_| stats::InFlight::new(b.stats.clone())))
                    .collect();
                assert!(
                    picks(&p, 2).contains(&target.addr),
                    "{what}: the healthy pool never picks the target, the test proves nothing"
                );
                mark_down(&p, &target, how);
                let after = picks(&p, 2);
                assert!(
                    !after.contains(&target.addr),
                    "{what}: a backend marked down was selected"
                );
                assert!(p.has_available(), "{what}");
                if matches!(how, Down::Active) {
                    // `rise` good checks bring it back into the selection.
                    target.stats.record_check(true, 2, 2);
                    assert_eq!(target.stats.record_check(true, 2, 2), Some(true));
                    assert!(
                        picks(&p, 2).contains(&target.addr),
                        "{what}: a backend back up is never selected"
                    );
                }
            }
        }
    }

    #[test]
    fn a_checked_pool_is_ready_once_a_backend_passed_a_check() {
        let plain = pool(config::Balance::LeastConn, "ready-plain", &[20061, 20062]);
        assert!(
            plain.ready(),
            "a pool without checks is ready while a backend is up"
        );

        let mut checked = pool(config::Balance::LeastConn, "ready-checked", &[20063, 20064]);
        checked.health_check = Some(config::HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        });
        let set = checked.set.load_full();
        assert!(
            checked.has_available(),
            "traffic does not wait for the first check"
        );
        assert!(!checked.ready(), "no backend has answered a check yet");
        // A failed first check (under `fall`) leaves it up for traffic, still not ready.
        assert_eq!(set.backends[0].stats.record_check(false, 2, 2), None);
        assert!(checked.has_available());
        assert!(!checked.ready());
        // One passed check is enough for readiness, even under `rise` (it was never down).
        assert_eq!(set.backends[1].stats.record_check(true, 2, 2), None);
        assert!(checked.ready());
        // A backend that passed and is then taken out by its checks no longer counts.
        set.backends[1].stats.record_check(false, 2, 2);
        assert_eq!(set.backends[1].stats.record_check(false, 2, 2), Some(false));
        assert!(!checked.ready());
    }

    #[test]
    fn selection_returns_none_when_no_backend_is_available() {
        for balance in every_balance() {
            let what = format!("{balance:?}");
            let p = pool(balance, &format!("none-{what}"), &[20051, 20052, 20053]);
            let set = p.set.load_full();
            mark_down(&p, &set.backends[0], Down::Active);
            mark_down(&p, &set.backends[1], Down::Passive);
            // One left: every key lands on it.
            let last = set.backends[2].addr;
            assert!(picks(&p, 1).iter().all(|a| *a == last), "{what}");
            mark_down(&p, &set.backends[2], Down::Active);
            for k in keys() {
                if let Some(b) = p.select(&k, &[]) {
                    panic!("{what}: selected {} with every backend down", b.addr);
                }
            }
            assert!(!p.has_available(), "{what}");
        }
    }

    #[test]
    fn round_robin_and_hash_skip_excluded() {
        for balance in [
            config::Balance::RoundRobin,
            config::Balance::Hash(config::HashKey::ClientIp),
            config::Balance::LeastConn,
        ] {
            let p = pool(
                balance.clone(),
                &format!("sel-{balance:?}"),
                &[20001, 20002],
            );
            let a = SocketAddr::from(([127, 0, 0, 1], 20001));
            for _ in 0..10 {
                let got = p.select(b"10.0.0.1", &[a]).unwrap();
                assert_ne!(got.addr, a, "{balance:?}");
            }
            let both = [a, SocketAddr::from(([127, 0, 0, 1], 20002))];
            assert!(p.select(b"10.0.0.1", &both).is_none());
        }
    }

    #[test]
    fn hash_is_sticky_and_round_robin_spreads() {
        let p = pool(
            config::Balance::Hash(config::HashKey::ClientIp),
            "sticky",
            &[20011, 20012, 20013],
        );
        let first = p.select(b"192.0.2.7", &[]).unwrap().addr;
        for _ in 0..20 {
            assert_eq!(p.select(b"192.0.2.7", &[]).unwrap().addr, first);
        }
        let rr = pool(config::Balance::RoundRobin, "spread", &[20021, 20022]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            seen.insert(rr.select(b"", &[]).unwrap().addr);
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn in_flight_survives_backend_set_rebuild() {
        let p = pool(config::Balance::LeastConn, "rebuild", &[20031, 20032]);
        let picked = p.select(b"", &[]).unwrap();
        let guard = stats::InFlight::new(picked.stats.clone());
        assert!(p.update_backends(resolved(&[20031, 20032, 20033])));
        assert!(!p.update_backends(resolved(&[20033, 20032, 20031])));
        let same = p
            .set
            .load()
            .backends
            .iter()
            .find(|b| b.addr == picked.addr)
            .unwrap()
            .clone();
        assert_eq!(same.stats.in_flight.get(), 1);
        // The busy one is avoided by least_conn after the rebuild.
        for _ in 0..5 {
            assert_ne!(p.select(b"", &[]).unwrap().addr, picked.addr);
        }
        drop(guard);
        assert_eq!(same.stats.in_flight.get(), 0);
    }
}
