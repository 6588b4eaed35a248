//! `jwks`: JWK Set parsing, lookup, file and URL sources.

use super::testkeys::{b64, ed25519, jwk, p256, rsa, set};
use super::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn all_three() -> Vec<u8> {
    set(&[jwk(rsa(), "r1"), jwk(p256(), "e1"), jwk(ed25519(), "o1")])
}

#[test]
fn parses_rsa_ec_okp_and_looks_up_by_kid_and_alg() {
    let ks = KeySet::from_json(&all_three()).unwrap();
    assert_eq!(ks.len(), 3);
    let kinds: Vec<_> = ks.keys.iter().map(|k| k.kind).collect();
    assert_eq!(kinds, [KeyKind::Rsa, KeyKind::P256, KeyKind::Ed25519]);
    assert!(ks.key_for(Some("r1"), "RS256").is_some());
    assert!(ks.key_for(Some("r1"), "PS512").is_some());
    assert!(
        ks.key_for(Some("r1"), "ES256").is_none(),
        "kid fits another kty"
    );
    assert!(ks.key_for(Some("e1"), "ES256").is_some());
    assert!(ks.key_for(Some("e1"), "ES384").is_none());
    assert!(ks.key_for(Some("o1"), "EdDSA").is_some());
    assert!(ks.key_for(Some("nope"), "RS256").is_none());
    assert!(ks.key_for(Some("r1"), "HS256").is_none());
    // No kid: the only key fitting the alg.
    assert!(ks.key_for(None, "ES256").is_some());
    let two = set(&[jwk(rsa(), "a"), jwk(super::testkeys::rsa_other(), "b")]);
    assert!(KeySet::from_json(&two)
        .unwrap()
        .key_for(None, "RS256")
        .is_none());
}

#[test]
fn jwk_alg_restricts_the_key() {
    let mut k = jwk(rsa(), "r1");
    k["alg"] = json!("PS256");
    let ks = KeySet::from_json(&set(&[k])).unwrap();
    assert!(ks.key_for(Some("r1"), "PS256").is_some());
    assert!(ks.key_for(Some("r1"), "RS256").is_none());
}

#[test]
fn skips_unusable_keys_but_needs_one() {
    let mut enc = jwk(rsa(), "enc");
    enc["use"] = json!("enc");
    let mut oaep = jwk(rsa(), "oaep");
    oaep["alg"] = json!("RSA-OAEP");
    let mut wrap = jwk(p256(), "wrap");
    wrap["key_ops"] = json!(["wrapKey"]);
    let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
    let p521 = json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
    let x25519 = json!({"kty": "OKP", "crv": "X25519", "x": "AA"});
    let junk = [enc, oaep, wrap, oct, p521, x25519];
    let err = KeySet::from_json(&set(&junk)).err().unwrap();
    assert!(err.contains("no usable signing key"), "{err}");
    let mut with_one = junk.to_vec();
    with_one.push(jwk(ed25519(), "ok"));
    let ks = KeySet::from_json(&set(&with_one)).unwrap();
    assert_eq!(ks.len(), 1);
}

#[test]
fn errors_name_the_key_and_reason() {
    let good = jwk(rsa(), "r1");
    let cases = [
        (json!({"kid": "x"}), "keys[1]: no \"kty\""),
        (json!("RSA"), "keys[1]: not a JSON object"),
        (
            json!({"kty": "RSA", "n": "a=b", "e": "AQAB"}),
            "keys[1]: \"n\" is not base64url",
        ),
        (
            json!({"kty": "RSA", "n": b64(&[0xff; 128]), "e": "AQAB"}),
            "keys[1]: RSA modulus of 1024 bits",
        ),
        (
            json!({"kty": "RSA", "n": good["n"], "e": "Ag"}),
            "keys[1]: RSA exponent",
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[1; 32])}),
            "keys[1]: EC coordinates must be 32 bytes",
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[1; 32])}),
            "keys[1]: EC point is not on the curve",
        ),
        (
            json!({"kty": "EC", "x": "AA"}),
            "keys[1]: EC key without \"crv\"",
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 31])}),
            "keys[1]: Ed25519 \"x\" must be 32 bytes",
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "kid": 7, "x": b64(&[1; 32])}),
            "keys[1]: \"kid\" is not a string",
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "alg": "RS256", "x": b64(&[1; 32])}),
            "keys[1]: \"alg\" RS256 does not fit",
        ),
    ];
    for (bad, want) in cases {
        let err = KeySet::from_json(&set(&[good.clone(), bad])).err().unwrap();
        assert!(err.starts_with(want), "{err} (wanted {want})");
    }
    assert!(KeySet::from_json(b"{")
        .err()
        .unwrap()
        .starts_with("not JSON"));
    assert!(KeySet::from_json(b"{\"keys\": {}}")
        .err()
        .unwrap()
        .contains("no \"keys\" array"));
}

#[test]
fn base64url_is_strict() {
    assert_eq!(decode_b64url(b"").unwrap(), b"");
    assert_eq!(decode_b64url(b"aGk").unwrap(), b"hi");
    assert_eq!(decode_b64url(b"-_8").unwrap(), [0xfb, 0xff]);
    assert!(decode_b64url(b"aGk=").is_none(), "padding");
    assert!(decode_b64url(b"aGl").is_none(), "non-zero trailing bits");
    assert!(decode_b64url(b"a+/A").is_none(), "standard alphabet");
    assert!(decode_b64url(b"aGk ").is_none());
    assert!(decode_b64url(b"a").is_none());
    for n in 0..40u8 {
        let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
        assert_eq!(decode_b64url(b64(&bytes).as_bytes()).unwrap(), bytes);
    }
}

#[test]
fn url_targets() {
    let t = Target::parse("https://idp.example/.well-known/jwks.json?x=1").unwrap();
    assert_eq!(
        (t.tls, t.addr.as_str(), t.sni.as_str()),
        (true, "idp.example:443", "idp.example")
    );
    assert_eq!(t.path, "/.well-known/jwks.json?x=1");
    let t = Target::parse("http://[::1]:8080").unwrap();
    assert_eq!(
        (t.tls, t.addr.as_str(), t.sni.as_str(), t.path.as_str()),
        (false, "[::1]:8080", "::1", "/")
    );
    assert_eq!(t.host_header, "[::1]:8080");
    for bad in ["ftp://x/", "idp.example/jwks", "https://u:p@idp/", ""] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn file_source_refreshes_and_keeps_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, set(&[jwk(rsa(), "r1")])).unwrap();
    let cache = JwksCache::new(JwksSource::File(path.clone())).unwrap();
    assert!(cache.keys().key_for(Some("r1"), "RS256").is_some());
    std::fs::write(&path, all_three()).unwrap();
    cache.refresh().await.unwrap();
    assert_eq!(cache.keys().len(), 3);
    std::fs::write(&path, b"{\"keys\": []}").unwrap();
    assert!(cache.refresh().await.is_err());
    assert_eq!(cache.keys().len(), 3);
    std::fs::remove_file(&path).unwrap();
    assert!(JwksCache::new(JwksSource::File(path)).is_err());
}

/// A loopback HTTP/1.1 server answering every request with the current (status, body).
async fn serve(reply: Arc<Mutex<(u16, Vec<u8>)>>, hits: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (status, body) = reply.lock().unwrap().clone();
            hits.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(req.starts_with(b"GET /jwks HTTP/1.1\r\n"));
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nCache-Control: max-age=99999\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}/jwks")
}

#[tokio::test]
async fn url_refresh_over_http_keeps_last_good_set() {
    let reply = Arc::new(Mutex::new((200, set(&[jwk(rsa(), "r1")]))));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = serve(reply.clone(), hits.clone()).await;
    let cache = JwksCache::new(JwksSource::Url(url.clone())).unwrap();
    assert!(cache.keys().is_empty());
    cache.refresh().await.unwrap();
    assert!(cache.keys().key_for(Some("r1"), "RS256").is_some());

    *reply.lock().unwrap() = (500, b"oops".to_vec());
    assert!(cache
        .refresh()
        .await
        .unwrap_err()
        .contains("HTTP status 500"));
    *reply.lock().unwrap() = (200, b"{\"keys\": 1}".to_vec());
    assert!(cache.refresh().await.is_err());
    *reply.lock().unwrap() = (200, vec![b' '; MAX_JWKS_BYTES + 1]);
    assert!(cache.refresh().await.unwrap_err().contains("over 1 MiB"));
    assert!(
        cache.keys().key_for(Some("r1"), "RS256").is_some(),
        "last good set kept"
    );

    // Key rotation: one refetch for an unknown kid, then none for 30 s.
    *reply.lock().unwrap() = (200, all_three());
    let before = hits.load(Ordering::SeqCst);
    assert!(cache.on_unknown_kid().await);
    assert!(cache.keys().key_for(Some("o1"), "EdDSA").is_some());
    assert!(!cache.on_unknown_kid().await);
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);

    // Nothing listening: refused, set kept.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/jwks", dead.local_addr().unwrap());
    drop(dead);
    let other = JwksCache::new(JwksSource::Url(dead_url)).unwrap();
    assert!(other.refresh().await.is_err());
    assert!(other.keys().is_empty());
}

#[tokio::test]
async fn refresher_task_loads_the_set() {
    let reply = Arc::new(Mutex::new((200, all_three())));
    let url = serve(reply, Arc::new(AtomicUsize::new(0))).await;
    let cache = Arc::new(JwksCache::new(JwksSource::Url(url)).unwrap());
    let runner = Arc::clone(&cache);
    let task = tokio::spawn(async move { runner.run_refresher(Duration::from_secs(300)).await });
    for _ in 0..100 {
        if !cache.keys().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.keys().len(), 3);
    task.abort();
}

/// https: the certificate is verified (a self-signed one on loopback is refused).
#[tokio::test]
async fn https_verifies_the_certificate() {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::ssl::{SslAcceptor, SslMethod};
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Builder, X509NameBuilder};

    let key = p256();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "127.0.0.1").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None));
    b.append_extension(san.unwrap()).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acc.set_private_key(key).unwrap();
    acc.set_certificate(&b.build()).unwrap();
    let acc = acc.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/jwks", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let _ = acc.accept(s);
        }
    });
    let cache = JwksCache::new(JwksSource::Url(url)).unwrap();
    let err = cache.refresh().await.unwrap_err();
    assert!(err.starts_with("connect: InvalidCert"), "{err}");
    assert!(cache.keys().is_empty());
}
