//! The HTTPS listener's certificate, re-read on every reload: the TLS acceptor asks
//! [`CurrentCert`] for it during each handshake (Pingora's `TlsAccept::certificate_callback`),
//! and a reload that loaded the files successfully swaps it. Handshakes in progress and
//! established connections keep the certificate they started with.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

use crate::config::Config;

pub struct CertKey {
    /// Leaf first, then the chain as in the PEM file.
    chain: Vec<X509>,
    key: PKey<Private>,
}

static CURRENT: LazyLock<ArcSwapOption<CertKey>> = LazyLock::new(ArcSwapOption::empty);

/// Reads the certificate chain and key of `cfg`'s HTTPS listener (None without one).
pub fn load(cfg: &Config) -> Result<Option<Arc<CertKey>>, String> {
    let Some(l) = &cfg.listeners.https else {
        return Ok(None);
    };
    load_files(&l.cert, &l.key).map(|ck| Some(Arc::new(ck)))
}

fn load_files(cert: &Path, key: &Path) -> Result<CertKey, String> {
    let pem = std::fs::read(cert)
        .map_err(|e| format!("listeners.https.cert: cannot read {}: {e}", cert.display()))?;
    let chain = X509::stack_from_pem(&pem)
        .map_err(|e| format!("listeners.https.cert: {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "listeners.https.cert: {}: no certificate in the file",
            cert.display()
        ));
    }
    let pem = std::fs::read(key)
        .map_err(|e| format!("listeners.https.key: cannot read {}: {e}", key.display()))?;
    let key_parsed = PKey::private_key_from_pem(&pem)
        .map_err(|e| format!("listeners.https.key: {}: {e}", key.display()))?;
    let matches = chain[0]
        .public_key()
        .map(|pk| pk.public_eq(&key_parsed))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "listeners.https.key: {} does not match the certificate {}",
            key.display(),
            cert.display()
        ));
    }
    Ok(CertKey {
        chain,
        key: key_parsed,
    })
}

/// Makes `ck` the certificate of new handshakes.
pub fn install(ck: Option<Arc<CertKey>>) {
    if ck.is_some() {
        CURRENT.store(ck);
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
