//! The background service that keeps pools current: DNS re-resolution ([`crate::upstream::discovery`]),
//! active health checks ([`crate::upstream::health`]) and the `gateway_backend_up` gauges. Runs as a
//! Pingora background service; when a reload swaps the state it drops the tasks of the old
//! pools and starts those of the new ones.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinSet;
use tokio::time::{interval, MissedTickBehavior};

use crate::state::Shared;
use crate::upstream::balance::stats::now_ms;
use crate::upstream::balance::Pool;
use crate::upstream::discovery::{self, DnsDiscovery};
use crate::upstream::health::ActiveCheck;

pub struct Maintenance {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generation = self.shared.subscribe();
        loop {
            let state = self.shared.load();
            let mut tasks = JoinSet::new();
            for pool in &state.pools {
                if pool.has_dns_servers() {
                    tasks.spawn(resolve_loop(pool.clone()));
                }
                if let Some(hc) = &pool.health_check {
                    match ActiveCheck::new(pool, hc) {
                        Ok(check) => {
                            tasks.spawn(check_loop(pool.clone(), check, hc.interval));
                        }
                        Err(e) => log::error!("health checks off: {e}"),
                    }
                }
            }
            tasks.spawn(gauge_loop(state.pools.clone()));
            drop(state);
            tokio::select! {
                _ = shutdown.changed() => {
                    tasks.abort_all();
                    return;
                }
                changed = generation.changed() => {
                    tasks.abort_all();
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn resolve_loop(pool: Arc<Pool>) {
    let dns = DnsDiscovery::for_pool(&pool);
    let mut tick = interval(pool.resolve_interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match dns.discover().await {
            Ok((set, _)) => {
                let resolved = discovery::from_backends(&set);
                let n = resolved.len();
                if pool.update_backends(resolved) {
                    log::info!("pool {}: DNS changed, now {n} backend(s)", pool.name);
                }
            }
            Err(e) => log::warn!("pool {}: discovery failed: {e}", pool.name),
        }
    }
}

async fn check_loop(pool: Arc<Pool>, check: ActiveCheck, every: Duration) {
    let mut tick = interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let set = pool.set.load_full();
        futures::future::join_all(set.backends.iter().map(|b| check.run_one(&pool.name, b))).await;
    }
}

/// Passive "down" penalties end by the clock, not by an event: refresh the gauges.
async fn gauge_loop(pools: Vec<Arc<Pool>>) {
    let mut tick = interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = now_ms();
        for p in &pools {
            for b in p.set.load().backends.iter() {
                b.stats.refresh_gauge(now);
            }
        }
    }
}
