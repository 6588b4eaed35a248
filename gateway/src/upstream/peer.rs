//! Building the Pingora peer for one attempt: the chosen backend, the route's timeouts, the
//! pool's upstream TLS (verification on unless the config turns it off).

use std::time::Duration;

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use crate::config;
use crate::upstream::balance::{BackendEntry, Pool, UpstreamTls};

/// The per-route timeouts a peer carries.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl Timeouts {
    pub fn of(route: &config::Route) -> Timeouts {
        Timeouts {
            connect: route.connect_timeout,
            read: route.read_timeout,
            write: route.write_timeout,
            idle: route.idle_timeout,
        }
    }
}

pub fn build_peer(pool: &Pool, backend: &BackendEntry, t: &Timeouts) -> Box<HttpPeer> {
    let (tls, sni) = match &pool.tls {
        None => (false, String::new()),
        Some(UpstreamTls { sni: Some(s), .. }) => (true, s.clone()),
        // The server's host is the name to send and verify. An IP literal stays the name too
        // (openssl sends no SNI for it): an empty name would make Pingora turn verification
        // *off* (nginx's habit), so `tls_verify = true`, the default, silently did nothing for
        // servers given by IP.
        Some(_) => (true, backend.host.to_string()),
    };
    let mut peer = HttpPeer::new(backend.addr, tls, sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(t.connect);
    o.read_timeout = Some(t.read);
    o.write_timeout = Some(t.write);
    o.idle_timeout = Some(t.idle);
    // HTTP/1.1 upstream with keep-alive, like the replaced nginx.conf's `proxy_http_version 1.1`.
    o.alpn = ALPN::H1;
    if let Some(up) = &pool.tls {
        o.verify_cert = up.verify;
        o.verify_hostname = up.verify;
        if let Some(ca) = &up.ca {
            o.ca = Some(ca.clone());
        }
    }
    Box::new(peer)
}

/// Load a PEM CA bundle for upstream verification.
/// A pool's TLS settings, with the CA bundle the configuration loader parsed.
pub fn upstream_tls(cfg: &config::UpstreamTls) -> Result<UpstreamTls, String> {
    if cfg.ca_file.is_some() && cfg.ca.is_none() {
        return Err("the CA bundle was not loaded".into());
    }
    Ok(UpstreamTls {
        verify: cfg.verify,
        sni: cfg.sni.clone(),
        ca: cfg.ca.clone(),
    })
}
