//! `jwt`: access-token verification.

use super::super::jwks::testkeys::{b64, ed25519, jwk, p256, rsa, rsa_other, set};
use super::*;
use openssl::pkey::Private;
use openssl::sign::Signer;
use serde_json::json;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://auth.example";
const AUD: &str = "https://mcp.example/mcp";

fn policy() -> JwtPolicy {
    JwtPolicy {
        issuer: ISS.into(),
        audiences: vec![AUD.into()],
        algorithms: Alg::ALL.to_vec(),
        leeway: Duration::from_secs(60),
        scope_claim: "scope".into(),
    }
}

fn keyset() -> KeySet {
    let mut es = jwk(p256(), "e1");
    es["alg"] = json!("ES256");
    KeySet::from_json(&set(&[jwk(rsa(), "r1"), es, jwk(ed25519(), "o1")])).unwrap()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "user-1", "client_id": "app", "exp": NOW + 300,
           "iat": NOW - 10, "nbf": NOW - 10, "scope": "tools:read tools:call"})
}

fn sign_raw(alg: &str, key: &PKey<Private>, input: &[u8]) -> Vec<u8> {
    let md = |n| match n {
        "256" => MessageDigest::sha256(),
        "384" => MessageDigest::sha384(),
        _ => MessageDigest::sha512(),
    };
    let (family, bits) = alg.split_at(2);
    match family {
        "RS" | "PS" => {
            let mut s = Signer::new(md(bits), key).unwrap();
            if family == "PS" {
                s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
                s.set_rsa_mgf1_md(md(bits)).unwrap();
            }
            s.update(input).unwrap();
            s.sign_to_vec().unwrap()
        }
        "ES" => {
            let mut s = Signer::new(md(bits), key).unwrap();
            s.update(input).unwrap();
            let der = EcdsaSig::from_der(&s.sign_to_vec().unwrap()).unwrap();
            let mut raw = der.r().to_vec_padded(32).unwrap();
            raw.extend(der.s().to_vec_padded(32).unwrap());
            raw
        }
        _ => Signer::new_without_digest(key)
            .unwrap()
            .sign_oneshot_to_vec(input)
            .unwrap(),
    }
}

fn token_with(header: &Value, claims: &Value, key: &PKey<Private>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let alg = header["alg"].as_str().unwrap();
    format!("{input}.{}", b64(&sign_raw(alg, key, input.as_bytes())))
}

fn token(alg: &str, kid: &str, claims: &Value, key: &PKey<Private>) -> String {
    token_with(
        &json!({"alg": alg, "kid": kid, "typ": "at+jwt"}),
        claims,
        key,
    )
}

fn check(t: &str) -> Result<Claims, JwtError> {
    verify(t, &keyset(), &policy(), NOW)
}

#[test]
fn valid_tokens_of_each_family() {
    let cases: [(&str, &str, &PKey<Private>); 8] = [
        ("RS256", "r1", rsa()),
        ("RS384", "r1", rsa()),
        ("RS512", "r1", rsa()),
        ("PS256", "r1", rsa()),
        ("PS384", "r1", rsa()),
        ("PS512", "r1", rsa()),
        ("ES256", "e1", p256()),
        ("EdDSA", "o1", ed25519()),
    ];
    for (alg, kid, key) in cases {
        let got = check(&token(alg, kid, &claims(), key)).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(
            got,
            Claims {
                subject: "user-1".into(),
                scopes: vec!["tools:read".into(), "tools:call".into()],
                client_id: Some("app".into()),
                expires_at: NOW + 300,
            }
        );
    }
    // PKCS#1 v1.5 and PSS are not interchangeable.
    let t = token("PS256", "r1", &claims(), rsa());
    let (head, rest) = t.split_once('.').unwrap();
    let rs_head = b64(json!({"alg": "RS256", "kid": "r1"}).to_string().as_bytes());
    assert!(head != rs_head);
    assert_eq!(
        check(&format!("{rs_head}.{rest}")),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn typ_and_kid_rules() {
    for typ in ["JWT", "AT+JWT", "application/at+jwt"] {
        let t = token_with(
            &json!({"alg": "EdDSA", "kid": "o1", "typ": typ}),
            &claims(),
            ed25519(),
        );
        assert!(check(&t).is_ok(), "{typ}");
    }
    for typ in [json!("JOSE"), json!("dpop+jwt"), json!(1)] {
        let t = token_with(
            &json!({"alg": "EdDSA", "kid": "o1", "typ": typ}),
            &claims(),
            ed25519(),
        );
        assert!(matches!(check(&t), Err(JwtError::Malformed(_))), "{typ}");
    }
    let t = token_with(
        &json!({"alg": "EdDSA", "kid": "o1", "crit": ["exp"]}),
        &claims(),
        ed25519(),
    );
    assert_eq!(
        check(&t),
        Err(JwtError::Malformed("unsupported critical header"))
    );
    // No kid: the only key fitting the alg.
    let t = token_with(&json!({"alg": "ES256"}), &claims(), p256());
    assert!(check(&t).is_ok());
    // A kid naming a key of another family.
    let t = token_with(&json!({"alg": "RS256", "kid": "e1"}), &claims(), rsa());
    assert_eq!(check(&t), Err(JwtError::UnknownKey(Some("e1".into()))));
}

#[test]
fn time_claims() {
    let mut c = claims();
    c["exp"] = json!(NOW - 61);
    assert_eq!(
        check(&token("ES256", "e1", &c, p256())),
        Err(JwtError::Expired)
    );
    c["exp"] = json!(NOW - 59);
    assert!(
        check(&token("ES256", "e1", &c, p256())).is_ok(),
        "within leeway"
    );
    c["exp"] = json!((NOW + 10) as f64 + 0.5);
    assert_eq!(
        check(&token("ES256", "e1", &c, p256())).unwrap().expires_at,
        NOW + 10
    );
    c["exp"] = json!(-5);
    assert!(matches!(
        check(&token("ES256", "e1", &c, p256())),
        Err(JwtError::Malformed(_))
    ));
    c["exp"] = json!("soon");
    assert!(matches!(
        check(&token("ES256", "e1", &c, p256())),
        Err(JwtError::Malformed(_))
    ));
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        check(&token("ES256", "e1", &c, p256())),
        Err(JwtError::MissingExp)
    );

    let mut c = claims();
    c["nbf"] = json!(NOW + 61);
    assert_eq!(
        check(&token("ES256", "e1", &c, p256())),
        Err(JwtError::NotYetValid)
    );
    c["nbf"] = json!(NOW + 59);
    assert!(check(&token("ES256", "e1", &c, p256())).is_ok());
    let mut c = claims();
    c["iat"] = json!(NOW + 3600);
    assert_eq!(
        check(&token("ES256", "e1", &c, p256())),
        Err(JwtError::IssuedInFuture)
    );
}

#[test]
fn issuer_and_audience() {
    let mut c = claims();
    c["iss"] = json!("https://auth.example/");
    assert_eq!(
        check(&token("EdDSA", "o1", &c, ed25519())),
        Err(JwtError::WrongIssuer)
    );
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        check(&token("EdDSA", "o1", &c, ed25519())),
        Err(JwtError::WrongIssuer)
    );

    let mut c = claims();
    c["aud"] = json!("https://other.example/mcp");
    assert_eq!(
        check(&token("EdDSA", "o1", &c, ed25519())),
        Err(JwtError::WrongAudience)
    );
    c["aud"] = json!(["https://other.example", AUD]);
    assert!(check(&token("EdDSA", "o1", &c, ed25519())).is_ok());
    c["aud"] = json!([]);
    assert_eq!(
        check(&token("EdDSA", "o1", &c, ed25519())),
        Err(JwtError::WrongAudience)
    );
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        check(&token("EdDSA", "o1", &c, ed25519())),
        Err(JwtError::WrongAudience)
    );
}

#[test]
fn scopes_and_subject() {
    let mut c = claims();
    c["scope"] = json!(["a", "b:c"]);
    assert_eq!(
        check(&token("EdDSA", "o1", &c, ed25519())).unwrap().scopes,
        ["a", "b:c"]
    );
    c["scope"] = json!(7);
    assert!(matches!(
        check(&token("EdDSA", "o1", &c, ed25519())),
        Err(JwtError::Malformed(_))
    ));
    let obj = c.as_object_mut().unwrap();
    obj.remove("scope");
    obj.insert("scp".into(), json!("x  y"));
    obj.remove("sub");
    let got = check(&token("EdDSA", "o1", &c, ed25519())).unwrap();
    assert_eq!(
        (got.scopes, got.subject.as_str()),
        (vec!["x".to_string(), "y".to_string()], "app")
    );
    let obj = c.as_object_mut().unwrap();
    obj.remove("scp");
    obj.remove("client_id");
    let got = check(&token("EdDSA", "o1", &c, ed25519())).unwrap();
    assert_eq!(
        (got.scopes.len(), got.subject.as_str(), got.client_id),
        (0, "", None)
    );
}

#[test]
fn keys_and_signatures() {
    // Another key under a known kid.
    let t = token("RS256", "r1", &claims(), rsa_other());
    assert_eq!(check(&t), Err(JwtError::BadSignature));
    let t = token("RS256", "rotated-2", &claims(), rsa());
    let err = check(&t).unwrap_err();
    assert_eq!(err, JwtError::UnknownKey(Some("rotated-2".into())));
    assert_eq!(err.to_string(), "no signing key for kid rotated-2");
    // A kid not fit to echo is left out.
    let t = token("RS256", "a\" b", &claims(), rsa());
    assert_eq!(check(&t), Err(JwtError::UnknownKey(None)));
    let t = token("RS256", &"k".repeat(65), &claims(), rsa());
    assert_eq!(check(&t), Err(JwtError::UnknownKey(None)));
    // A changed claim breaks the signature.
    let t = token("ES256", "e1", &claims(), p256());
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(check(&forged), Err(JwtError::BadSignature));
    // ES256 as DER instead of R || S.
    let input = format!("{}.{}", parts[0], parts[1]);
    let mut s = Signer::new(MessageDigest::sha256(), p256()).unwrap();
    s.update(input.as_bytes()).unwrap();
    let der = s.sign_to_vec().unwrap();
    assert_eq!(
        check(&format!("{input}.{}", b64(&der))),
        Err(JwtError::BadSignature)
    );
    // Wrong-length signatures.
    assert_eq!(
        check(&format!("{input}.{}", b64(&[0; 64][..63]))),
        Err(JwtError::BadSignature)
    );
    let t = token("EdDSA", "o1", &claims(), ed25519());
    let (input, _) = t.rsplit_once('.').unwrap();
    assert_eq!(check(&format!("{input}.")), Err(JwtError::BadSignature));
    assert_eq!(
        check(&format!("{input}.{}", b64(&[0; 64]))),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn refused_algorithms() {
    // alg "none" with an empty signature.
    let head = b64(json!({"alg": "none"}).to_string().as_bytes());
    let body = b64(claims().to_string().as_bytes());
    assert_eq!(
        check(&format!("{head}.{body}.")),
        Err(JwtError::UnsupportedAlgorithm)
    );
    for name in [
        "none", "None", "HS256", "HS384", "HS512", "rs256", "ES512", "",
    ] {
        assert_eq!(Alg::parse(name), None, "{name}");
    }
    // Algorithm confusion: HS256 keyed with the RSA public key's PEM.
    let pem = rsa().public_key_to_pem().unwrap();
    let hmac = PKey::hmac(&pem).unwrap();
    let head = b64(json!({"alg": "HS256", "kid": "r1"}).to_string().as_bytes());
    let input = format!("{head}.{body}");
    let mut s = Signer::new(MessageDigest::sha256(), &hmac).unwrap();
    s.update(input.as_bytes()).unwrap();
    let t = format!("{input}.{}", b64(&s.sign_to_vec().unwrap()));
    assert_eq!(check(&t), Err(JwtError::UnsupportedAlgorithm));
    // A valid token whose alg the policy does not allow.
    let p = JwtPolicy {
        algorithms: vec![Alg::ES256],
        ..policy()
    };
    let t = token("RS256", "r1", &claims(), rsa());
    assert_eq!(
        verify(&t, &keyset(), &p, NOW),
        Err(JwtError::UnsupportedAlgorithm)
    );
}

#[test]
fn strict_encoding() {
    let t = token("EdDSA", "o1", &claims(), ed25519());
    let parts: Vec<&str> = t.split('.').collect();
    let padded = |i: usize| {
        let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        p[i].push('=');
        p.join(".")
    };
    for i in 0..3 {
        assert!(
            matches!(check(&padded(i)), Err(JwtError::Malformed(_))),
            "part {i}"
        );
    }
    let std_alphabet = t.replace('-', "+").replace('_', "/");
    if std_alphabet != t {
        assert!(matches!(check(&std_alphabet), Err(JwtError::Malformed(_))));
    }
    let not_object = format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2]);
    assert!(matches!(check(&not_object), Err(JwtError::Malformed(_))));
    let head_array = format!("{}.{}.{}", b64(b"[\"EdDSA\"]"), parts[1], parts[2]);
    assert!(matches!(check(&head_array), Err(JwtError::Malformed(_))));
}

#[test]
fn garbage_never_panics() {
    let t = token("ES256", "e1", &claims(), p256());
    let huge = format!("{t}{}", "A".repeat(MAX_TOKEN_BYTES));
    let fixed = [
        "",
        ".",
        "..",
        "...",
        "a",
        "a.b",
        "a.b.c.d",
        &t[..t.len() - 1],
        "\u{00e9}.\u{00e9}.\u{00e9}",
    ];
    for g in fixed.iter().copied().chain([huge.as_str()]) {
        assert!(check(g).is_err(), "{g:.40}");
    }
    assert_eq!(check(&huge), Err(JwtError::Malformed("token too large")));
    assert_eq!(
        check("a.b.c.d"),
        Err(JwtError::Malformed("not a compact JWS"))
    );
    // Pseudo-random strings over the base64url alphabet and dots, and mutations of a
    // valid token.
    let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2000 {
        let len = (next() % 200) as usize;
        let s: String = (0..len)
            .map(|_| char::from(abc[(next() % abc.len() as u64) as usize]))
            .collect();
        assert!(check(&s).is_err());
        let mut m = t.clone().into_bytes();
        let i = (next() % m.len() as u64) as usize;
        m[i] = abc[(next() % abc.len() as u64) as usize];
        if let Ok(m) = String::from_utf8(m) {
            if m != t {
                assert!(check(&m).is_err(), "{m}");
            }
        }
    }
    // Header and claims that are valid JSON of the wrong shape.
    for head in [
        json!({}),
        json!({"alg": null}),
        json!({"alg": "ES256", "kid": 1}),
    ] {
        let g = format!("{}.{}.AAAA", b64(head.to_string().as_bytes()), b64(b"{}"));
        assert!(check(&g).is_err());
    }
}

#[test]
fn error_descriptions_are_header_safe() {
    let all = [
        JwtError::Malformed("token too large"),
        JwtError::UnsupportedAlgorithm,
        JwtError::UnknownKey(Some("k-1".into())),
        JwtError::UnknownKey(None),
        JwtError::BadSignature,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::IssuedInFuture,
        JwtError::WrongIssuer,
        JwtError::WrongAudience,
        JwtError::MissingExp,
    ];
    for e in all {
        let s = e.to_string();
        // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
        assert!(
            s.bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
            "{s}"
        );
    }
}
