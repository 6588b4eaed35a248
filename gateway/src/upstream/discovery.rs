//! DNS re-resolution of pool servers given by name, so replicas that appear or vanish (compose
//! `--scale`) join and leave the pool without a restart. Implemented as Pingora's
//! `ServiceDiscovery` trait; the maintenance service ([`crate::upstream::maintenance`]) calls it every
//! `resolve_interval` and swaps the pool's backend set when the answer changed.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

use crate::config::UpstreamServer;
use crate::upstream::balance::{Pool, ResolvedServer};

pub struct DnsDiscovery {
    servers: Vec<UpstreamServer>,
    /// Last good answer per name: a failed lookup keeps it rather than emptying the pool.
    last: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl DnsDiscovery {
    pub fn new(servers: Vec<UpstreamServer>) -> DnsDiscovery {
        DnsDiscovery {
            servers,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Discovery for a running pool, remembering the addresses the pool holds now as the last
    /// good answer. Without this seed, a lookup failing on the first tick (a DNS outage across a
    /// config reload, which restarts this loop) recalled nothing and emptied the pool.
    pub fn for_pool(pool: &Pool) -> DnsDiscovery {
        DnsDiscovery::knowing(pool.servers.clone(), Some(pool))
    }

    /// Discovery for `servers`, remembering what `previous` (the pool they replace on a
    /// reload, if any) holds for each name as the last good answer.
    pub fn knowing(servers: Vec<UpstreamServer>, previous: Option<&Pool>) -> DnsDiscovery {
        let d = DnsDiscovery::new(servers);
        if let Some(pool) = previous {
            for s in d.servers.iter().filter(|s| s.socket_addr.is_none()) {
                let known = known_addrs(pool, s);
                if !known.is_empty() {
                    d.remember(&s.address, &known);
                }
            }
        }
        d
    }

    /// [`DnsDiscovery::resolve`] from blocking code (start-up, a reload on the blocking pool):
    /// on the current runtime when there is one, else on a small runtime of its own.
    pub fn resolve_blocking(&self) -> Vec<ResolvedServer> {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return handle.block_on(self.resolve());
        }
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(self.resolve()),
            Err(e) => {
                log::error!("cannot start a runtime for DNS lookups: {e}");
                Vec::new()
            }
        }
    }

    /// The current addresses of every server, with weight and configured host name.
    pub async fn resolve(&self) -> Vec<ResolvedServer> {
        let mut out = Vec::new();
        for s in &self.servers {
            let addrs: Vec<SocketAddr> = match s.socket_addr {
                Some(a) => vec![a],
                None => match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
                    Ok(found) => {
                        let found: Vec<SocketAddr> = found.collect();
                        self.remember(&s.address, &found);
                        found
                    }
                    Err(e) => {
                        let kept = self.recall(&s.address);
                        log::warn!(
                            "cannot resolve {}: {e}; keeping {} known address(es)",
                            s.address,
                            kept.len()
                        );
                        kept
                    }
                },
            };
            let host: Arc<str> = s.host.as_str().into();
            out.extend(addrs.into_iter().map(|addr| ResolvedServer {
                addr,
                weight: s.weight,
                host: host.clone(),
            }));
        }
        out
    }

    fn remember(&self, name: &str, addrs: &[SocketAddr]) {
        if let Ok(mut m) = self.last.lock() {
            m.insert(name.to_string(), addrs.to_vec());
        }
    }

    fn recall(&self, name: &str) -> Vec<SocketAddr> {
        self.last
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
            .unwrap_or_default()
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let set = self
            .resolve()
            .await
            .into_iter()
            .map(|r| {
                let mut b = Backend {
                    addr: PingoraAddr::Inet(r.addr),
                    weight: r.weight.max(1) as usize,
                    ext: Default::default(),
                };
                b.ext.insert(r.host);
                b
            })
            .collect();
        Ok((set, HashMap::new()))
    }
}

/// The addresses `pool` currently holds for `server` (a name): what a failed lookup keeps.
pub fn known_addrs(pool: &Pool, server: &UpstreamServer) -> Vec<SocketAddr> {
    pool.set
        .load()
        .backends
        .iter()
        .filter(|b| *b.host == *server.host && b.addr.port() == server.port)
        .map(|b| b.addr)
        .collect()
}

/// Back from Pingora's backend set to our resolved list.
pub fn from_backends(set: &BTreeSet<Backend>) -> Vec<ResolvedServer> {
    set.iter()
        .filter_map(|b| match &b.addr {
            PingoraAddr::Inet(addr) => Some(ResolvedServer {
                addr: *addr,
                weight: b.weight as u32,
                host: b
                    .ext
                    .get::<Arc<str>>()
                    .cloned()
                    .unwrap_or_else(|| addr.ip().to_string().into()),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_names_and_literals() {
        let servers = vec![
            UpstreamServer {
                address: "localhost:3001".into(),
                host: "localhost".into(),
                port: 3001,
                weight: 2,
                socket_addr: None,
            },
            UpstreamServer {
                address: "127.0.0.1:3002".into(),
                host: "127.0.0.1".into(),
                port: 3002,
                weight: 1,
                socket_addr: Some("127.0.0.1:3002".parse().unwrap()),
            },
        ];
        let d = DnsDiscovery::new(servers);
        let (set, _) = d.discover().await.unwrap();
        let resolved = from_backends(&set);
        assert!(resolved
            .iter()
            .any(|r| r.addr.port() == 3001 && r.weight == 2 && &*r.host == "localhost"));
        assert!(resolved
            .iter()
            .any(|r| r.addr == "127.0.0.1:3002".parse().unwrap()));
    }
}
