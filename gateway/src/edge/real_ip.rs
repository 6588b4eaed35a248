//! The client address a request is accounted to (rate zones, sticky splits, hash balancing):
//! the connection's peer, or — only when that peer is a trusted proxy (`[real_ip]`, like
//! nginx's `set_real_ip_from` + `real_ip_recursive on`) — the address its header names.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::config::RealIp;

/// The client of a request that arrived from `peer`. Several header lines are read as one
/// comma-separated list, in order.
pub fn client_ip(cfg: &RealIp, peer: IpAddr, req: &RequestHeader) -> IpAddr {
    if cfg.trusted_proxies.is_empty() || !cfg.is_trusted(peer) {
        return peer;
    }
    let mut values = req
        .headers
        .get_all(cfg.header.as_str())
        .iter()
        .filter_map(|v| v.to_str().ok());
    let Some(first) = values.next() else {
        return peer;
    };
    match values.next() {
        None => cfg.client_ip(peer, Some(first)),
        Some(second) => {
            let mut joined = format!("{first},{second}");
            for v in values {
                joined.push(',');
                joined.push_str(v);
            }
            cfg.client_ip(peer, Some(&joined))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    fn cfg() -> RealIp {
        RealIp {
            trusted_proxies: vec![Cidr {
                network: "127.0.0.0".parse().unwrap(),
                prefix: 8,
            }],
            header: "X-Forwarded-For".into(),
        }
    }

    #[test]
    fn header_believed_only_from_trusted_peers() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-forwarded-for", "203.0.113.7").unwrap();
        let trusted: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_ip(&cfg(), trusted, &req),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&cfg(), stranger, &req), stranger);
        let none = RealIp {
            trusted_proxies: vec![],
            header: "X-Forwarded-For".into(),
        };
        assert_eq!(client_ip(&none, trusted, &req), trusted);
    }

    #[test]
    fn several_header_lines_form_one_list() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-forwarded-for", "203.0.113.7").unwrap();
        req.append_header("x-forwarded-for", "198.51.100.2, 127.0.0.5")
            .unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // Rightmost untrusted hop wins: 127.0.0.5 is a trusted proxy, 198.51.100.2 is not.
        assert_eq!(
            client_ip(&cfg(), peer, &req),
            "198.51.100.2".parse::<IpAddr>().unwrap()
        );
    }
}
