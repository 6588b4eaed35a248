//! Checks that need more than the text: files the config names (certificate, key, CA bundle,
//! access-log directory) and the cipher list, which only OpenSSL can judge. Like `nginx -t`,
//! the certificate and key are parsed and matched, not just opened.

use std::path::Path;
use std::sync::Arc;

use pingora::protocols::tls::CaType;

use openssl::ocsp::{OcspCertId, OcspResponse, OcspResponseStatus};
use pingora::tls::hash::MessageDigest;
use pingora::tls::pkey::PKey;
use pingora::tls::ssl::{SslContextBuilder, SslMethod};
use pingora::tls::x509::X509;

use super::model::{CertKey, Secret};
use super::reader::Errors;

fn read(errs: &mut Errors, key: &str, path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| {
            let mut reason = format!("cannot read {:?}: {e}", path.display().to_string());
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                reason.push_str(&permission_hint());
            }
            errs.add(key, reason)
        })
        .ok()
}

/// What to do about a file this process may not read: name the identity it runs as (in a
/// container, uid 1001, while a mounted key is often root's with mode 0600).
fn permission_hint() -> String {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    format!(
        " (the gateway runs as uid {uid}, gid {gid}: make the file readable by it, \
         e.g. `chgrp {gid} FILE && chmod 0640 FILE`, and its directory searchable)"
    )
}

/// OpenSSL's error stack as one line.
fn ssl_reason(e: &pingora::tls::error::ErrorStack) -> String {
    let reasons: Vec<String> = e
        .errors()
        .iter()
        .map(|x| x.reason().unwrap_or("unknown error").to_string())
        .collect();
    if reasons.is_empty() {
        "invalid".to_string()
    } else {
        reasons.join("; ")
    }
}

/// The cipher list must name at least one cipher OpenSSL knows (OpenSSL, like nginx, quietly
/// skips unknown names when others are valid).
pub fn check_ciphers(errs: &mut Errors, key: &str, ciphers: &str) {
    let result =
        SslContextBuilder::new(SslMethod::tls()).and_then(|mut b| b.set_cipher_list(ciphers));
    if let Err(e) = result {
        errs.add(
            key,
            format!("OpenSSL accepts none of these ciphers ({})", ssl_reason(&e)),
        );
    }
}

/// The certificate chain and key must parse, and the key must belong to the first certificate.
/// Returns them parsed, for the listener to serve (None after an error, which is recorded).
pub fn load_cert_key(
    errs: &mut Errors,
    cert_key: &str,
    cert: &Path,
    key_key: &str,
    key: &Path,
) -> Option<CertKey> {
    let certs = read(errs, cert_key, cert).and_then(|pem| {
        X509::stack_from_pem(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .or_else(|| {
                errs.add(
                    cert_key,
                    format!("{:?} holds no PEM certificate", cert.display().to_string()),
                );
                None
            })
    });
    let pkey = read(errs, key_key, key).and_then(|pem| {
        PKey::private_key_from_pem(&pem)
            .map_err(|e| {
                errs.add(
                    key_key,
                    format!(
                        "{:?} holds no PEM private key ({})",
                        key.display().to_string(),
                        ssl_reason(&e)
                    ),
                )
            })
            .ok()
    });
    let (chain, key) = (certs?, pkey?);
    let matches = chain[0]
        .public_key()
        .map(|pk| pk.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        errs.add(
            key_key,
            format!("does not match the certificate in {cert_key}"),
        );
        return None;
    }
    Some(CertKey {
        chain,
        key,
        ocsp: None,
    })
}

/// An OCSP response to staple (DER, as `openssl ocsp -respout` writes it) must be a successful
/// one, give a status for the leaf certificate of `chain` (its issuer is the next certificate
/// in the chain, or the leaf itself when self-signed) and be current (thisUpdate / nextUpdate,
/// 5 minutes of clock skew). Returns the DER to send.
pub fn load_ocsp(errs: &mut Errors, key: &str, path: &Path, chain: &[X509]) -> Option<Vec<u8>> {
    let der = read(errs, key, path)?;
    let shown = path.display().to_string();
    let mut fail = |why: String| {
        errs.add(key, format!("{shown:?}: {why}"));
        None
    };
    let resp = match OcspResponse::from_der(&der) {
        Ok(r) => r,
        Err(e) => return fail(format!("not a DER OCSP response ({})", ssl_reason(&e))),
    };
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return fail(format!(
            "the OCSP response is not successful (status {})",
            resp.status().as_raw()
        ));
    }
    let basic = match resp.basic() {
        Ok(b) => b,
        Err(e) => return fail(format!("no basic OCSP response ({})", ssl_reason(&e))),
    };
    let leaf = &chain[0];
    let issuer = chain.get(1).unwrap_or(leaf);
    let id = match OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer) {
        Ok(id) => id,
        Err(e) => {
            return fail(format!(
                "cannot identify the certificate ({})",
                ssl_reason(&e)
            ))
        }
    };
    let Some(status) = basic.find_status(&id) else {
        return fail(
            "the response gives no status for the certificate in cert (issued by the next \
             certificate of its chain)"
                .into(),
        );
    };
    if status.check_validity(300, None).is_err() {
        return fail(format!(
            "the response is not current (thisUpdate {}, nextUpdate {}): fetch a new one",
            status.this_update,
            status
                .next_update()
                .map_or("none".to_string(), |t| t.to_string())
        ));
    }
    Some(der)
}

/// A CA bundle must hold at least one PEM certificate; returns them parsed.
pub fn load_ca_file(errs: &mut Errors, key: &str, path: &Path) -> Option<Arc<CaType>> {
    let pem = read(errs, key, path)?;
    match X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Some(Arc::new(certs.into_boxed_slice())),
        _ => {
            errs.add(
                key,
                format!("{:?} holds no PEM certificate", path.display().to_string()),
            );
            None
        }
    }
}

/// A log file's directory must exist (the file itself is created on start).
pub fn check_log_dir(errs: &mut Errors, key: &str, path: &Path) {
    if let Some(dir) = path.parent() {
        if !dir.is_dir() {
            errs.add(
                key,
                format!("directory {:?} does not exist", dir.display().to_string()),
            );
        }
    }
}

/// `[auth] tokens_file`: `name:token` per line; blank lines and `#` comments skipped. Names are
/// what logs and grants call the caller; tokens never appear in an error.
pub fn load_tokens(errs: &mut Errors, key: &str, path: &Path) -> Option<Vec<(String, Secret)>> {
    let bytes = read(errs, key, path)?;
    let Ok(text) = String::from_utf8(bytes) else {
        errs.add(key, "not UTF-8 text");
        return None;
    };
    let mut out: Vec<(String, Secret)> = Vec::new();
    let before = errs.list.len();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("line {}", i + 1);
        let Some((name, token)) = line.split_once(':') else {
            errs.add(key, format!("{at}: expected name:token"));
            continue;
        };
        let (name, token) = (name.trim(), token.trim());
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        if !name_ok {
            errs.add(
                key,
                format!("{at}: the name must be 1-64 of A-Z a-z 0-9 - _ . @"),
            );
        } else if !super::auth::is_token(token) {
            errs.add(
                key,
                format!(
                    "{at}: the token of {name:?} is empty or has characters a bearer token cannot"
                ),
            );
        } else if out.iter().any(|(n, _)| n == name) {
            errs.add(key, format!("{at}: the name {name:?} is given twice"));
        } else if out.iter().any(|(_, t)| t.0 == token) {
            errs.add(
                key,
                format!("{at}: the token of {name:?} is another caller's too"),
            );
        } else {
            out.push((name.to_string(), Secret(token.to_string())));
        }
    }
    if out.is_empty() && errs.list.len() == before {
        errs.add(key, "no name:token line");
    }
    (errs.list.len() == before).then_some(out)
}

/// `[auth.oauth] jwks_file`: an RFC 7517 JWK Set with at least one signature key.
pub fn load_jwks(errs: &mut Errors, key: &str, path: &Path) -> Option<crate::auth::jwks::KeySet> {
    let bytes = read(errs, key, path)?;
    crate::auth::jwks::KeySet::from_json(&bytes)
        .map_err(|reason| errs.add(key, reason))
        .ok()
}
