//! TLS termination settings for the HTTPS listener: Pingora's `TlsSettings` with OpenSSL, from
//! Mozilla's "intermediate" profile, held to TLS 1.2 (or the configured minimum) through 1.3,
//! the configured TLS 1.2 cipher list, session resumption (session cache and tickets, with the
//! configured lifetime), OCSP stapling and HTTP/2 by ALPN beside HTTP/1.1.

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ALPN;
use pingora::tls::ssl::{SslMode, SslSessionCacheMode, SslVersion};

use crate::config::{HttpsListener, TlsVersion};

extern "C" {
    // libssl's SSL_CTX_set_timeout (not wrapped by the openssl crate): session lifetime in
    // seconds, for both the server-side cache and the tickets it issues.
    fn SSL_CTX_set_timeout(
        ctx: *mut pingora::tls::ssl_sys::SSL_CTX,
        t: std::ffi::c_long,
    ) -> std::ffi::c_long;
}

pub fn settings(l: &HttpsListener) -> Result<TlsSettings, String> {
    let cert = l.cert.to_string_lossy();
    let key = l.key.to_string_lossy();
    // The certificate comes from certs.rs at each handshake, so a reload replaces it.
    let mut s = TlsSettings::with_callbacks(Box::new(crate::edge::certs::CurrentCert))
        .map_err(|e| format!("listeners.https: cannot load {cert} / {key}: {e}"))?;
    let min = match l.min_tls {
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    };
    s.set_min_proto_version(Some(min))
        .map_err(|e| format!("listeners.https.min_tls: {e}"))?;
    s.set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(|e| format!("listeners.https: TLS 1.3: {e}"))?;
    s.set_cipher_list(&l.ciphers)
        .map_err(|e| format!("listeners.https.ciphers: {e}"))?;
    s.set_session_cache_mode(SslSessionCacheMode::SERVER);
    s.set_session_id_context(b"gateway")
        .map_err(|e| format!("listeners.https: session id context: {e}"))?;
    let secs = l.session_timeout.as_secs().clamp(1, i32::MAX as u64) as std::ffi::c_long;
    // SAFETY: `as_ptr` is the live SSL_CTX owned by `s`; SSL_CTX_set_timeout only stores a value.
    unsafe {
        SSL_CTX_set_timeout(s.as_ptr(), secs);
    }
    // Memory of idle connections: OpenSSL gives a connection's record buffers back while it
    // has nothing pending (nginx sets the same mode), and reads ahead into its own buffer so a
    // record costs one read rather than two (the L4 read buffer under it is off).
    s.set_mode(SslMode::RELEASE_BUFFERS);
    // SAFETY: `as_ptr` is the live SSL_CTX owned by `s`; this only sets a flag.
    unsafe {
        pingora::tls::ssl_sys::SSL_CTX_set_read_ahead(s.as_ptr(), 1);
    }
    // OCSP stapling (nginx's ssl_stapling_file): the response loaded with the certificate now
    // in use, for clients that ask (status_request); none configured, none sent.
    s.set_status_callback(crate::edge::certs::staple_ocsp)
        .map_err(|e| format!("listeners.https: OCSP stapling: {e}"))?;
    if l.http2 {
        s.enable_h2();
    } else {
        s.set_alpn(ALPN::H1);
    }
    Ok(s)
}
