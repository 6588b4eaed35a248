//! The HTTPS listener's certificate (and its stapled OCSP response), re-read on every reload: the TLS acceptor asks
//! [`CurrentCert`] for it during each handshake (Pingora's `TlsAccept::certificate_callback`),
//! and a reload that loaded the files successfully swaps it. Handshakes in progress and
//! established connections keep the certificate they started with.

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::error::ErrorStack;
use pingora::tls::ext;
use pingora::tls::ssl::SslRef;

use crate::config::{CertKey, Config};

static CURRENT: LazyLock<ArcSwapOption<CertKey>> = LazyLock::new(ArcSwapOption::empty);

/// The certificate chain and key of `cfg`'s HTTPS listener (None without one), as the
/// configuration loader parsed and matched them.
pub fn load(cfg: &Config) -> Result<Option<Arc<CertKey>>, String> {
    let Some(l) = &cfg.listeners.https else {
        return Ok(None);
    };
    l.material
        .clone()
        .map(Some)
        .ok_or_else(|| "listeners.https: the certificate files were not loaded".to_string())
}

/// Makes `ck` the certificate of new handshakes.
pub fn install(ck: Option<Arc<CertKey>>) {
    if ck.is_some() {
        CURRENT.store(ck);
    }
}

/// The TLS status callback: staples the OCSP response loaded with the certificate in use, if
/// its config names one (true: a response was attached).
pub fn staple_ocsp(ssl: &mut SslRef) -> Result<bool, ErrorStack> {
    let current = CURRENT.load();
    match current.as_ref().and_then(|ck| ck.ocsp.as_deref()) {
        Some(der) => ssl.set_ocsp_status(der).map(|()| true),
        None => Ok(false),
    }
}

/// The acceptor's certificate source.
pub struct CurrentCert;

#[async_trait]
impl TlsAccept for CurrentCert {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let Some(ck) = CURRENT.load_full() else {
            log::error!("TLS handshake without a loaded certificate");
            return;
        };
        if let Err(e) = ext::ssl_use_certificate(ssl, &ck.chain[0]) {
            log::error!("TLS: cannot use the certificate: {e}");
            return;
        }
        for c in &ck.chain[1..] {
            if let Err(e) = ext::ssl_add_chain_cert(ssl, c) {
                log::error!("TLS: cannot add a chain certificate: {e}");
            }
        }
        if let Err(e) = ext::ssl_use_private_key(ssl, &ck.key) {
            log::error!("TLS: cannot use the private key: {e}");
        }
    }
}
