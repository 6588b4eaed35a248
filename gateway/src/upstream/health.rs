//! Active health checks: an HTTP GET of the pool's check path on every backend, every
//! `interval`, with a `timeout` on connect and on the answer, so a replica that accepts TCP but
//! never answers fails its checks and, after `fall` of them, stops getting traffic; after `rise`
//! good ones it is back. The probe itself is Pingora's `HttpHealthCheck` (its `HealthCheck::check`);
//! the rise/fall bookkeeping is ours ([`crate::upstream::balance::stats::BackendStats::record_check`]) because
//! it must live in the per-backend stats that survive pool rebuilds and reloads.
//!
//! Passive health (max_fails / fail_timeout) is fed by the proxy on failed attempts.

use std::sync::Arc;

use pingora::lb::health_check::{HealthCheck as _, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

use crate::config;
use crate::upstream::balance::{BackendEntry, Pool};

pub struct ActiveCheck {
    probe: HttpHealthCheck,
    rise: u32,
    fall: u32,
}

impl ActiveCheck {
    pub fn new(pool: &Pool, hc: &config::HealthCheck) -> Result<ActiveCheck, String> {
        let host = pool
            .servers
            .first()
            .map(|s| s.host.clone())
            .unwrap_or_else(|| "localhost".into());
        let tls = pool.tls.is_some();
        let mut probe = HttpHealthCheck::new(&host, tls);
        let mut req = pingora::http::RequestHeader::build("GET", hc.path.as_bytes(), None)
            .map_err(|e| format!("pools.{}.health_check.path: {e}", pool.name))?;
        req.append_header("Host", host.as_str())
            .map_err(|e| format!("pools.{}: host {host:?}: {e}", pool.name))?;
        req.append_header("User-Agent", "gateway-health-check")
            .map_err(|e| format!("pools.{}: {e}", pool.name))?;
        probe.req = req;
        probe.peer_template.options.connection_timeout = Some(hc.timeout);
        probe.peer_template.options.total_connection_timeout = Some(hc.timeout);
        probe.peer_template.options.read_timeout = Some(hc.timeout);
        probe.peer_template.options.write_timeout = Some(hc.timeout);
        if let Some(up) = &pool.tls {
            probe.peer_template.options.verify_cert = up.verify;
            probe.peer_template.options.verify_hostname = up.verify;
            if let Some(ca) = &up.ca {
                probe.peer_template.options.ca = Some(ca.clone());
            }
            if let Some(sni) = &up.sni {
                probe.peer_template.sni = sni.clone();
            }
        }
        Ok(ActiveCheck {
            probe,
            rise: hc.rise,
            fall: hc.fall,
        })
    }

    /// Check one backend and record the result; logs when its state flips.
    pub async fn run_one(&self, pool: &str, backend: &Arc<BackendEntry>) {
        let target = Backend {
            addr: PingoraAddr::Inet(backend.addr),
            weight: backend.weight as usize,
            ext: Default::default(),
        };
        let result = self.probe.check(&target).await;
        let ok = result.is_ok();
        match backend.stats.record_check(ok, self.rise, self.fall) {
            Some(true) => log::info!(
                "pool {pool}: backend {} is up (passed {} checks)",
                backend.addr,
                self.rise
            ),
            Some(false) => log::warn!(
                "pool {pool}: backend {} is down after {} failed checks: {}",
                backend.addr,
                self.fall,
                result.err().map(|e| e.to_string()).unwrap_or_default()
            ),
            None => {}
        }
    }
}
