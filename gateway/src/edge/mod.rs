//! The client side of a request: the connection and its timeouts, TLS and certificates, the HTTP → HTTPS redirect, the client
//! address (realip), request and response headers, gzip, and the responses the gateway makes
//! itself (error envelopes, through one writer).

pub mod certs;
pub mod compress;
pub mod conn;
pub mod errors;
pub mod fd_limit;
pub mod headers;
pub mod path;
pub mod real_ip;
pub mod redirect;
pub mod respond;
pub mod strict;
pub mod tls;
