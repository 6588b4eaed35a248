//! Keys generated at test time and their JWK form, for the `jwks` and `jwt` tests.

use std::sync::OnceLock;

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::{json, Value};

pub fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn cached(
    cell: &'static OnceLock<PKey<Private>>,
    make: fn() -> PKey<Private>,
) -> &'static PKey<Private> {
    cell.get_or_init(make)
}

pub fn rsa() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    cached(&K, || PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

/// A second RSA key, to sign with under another key's `kid`.
pub fn rsa_other() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    cached(&K, || PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

pub fn p256() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    cached(&K, || {
        let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
    })
}

pub fn ed25519() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    cached(&K, || PKey::generate_ed25519().unwrap())
}

/// The public JWK of `key` with this `kid`.
pub fn jwk(key: &PKey<Private>, kid: &str) -> Value {
    if let Ok(rsa) = key.rsa() {
        return json!({"kty": "RSA", "kid": kid, "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
    }
    if let Ok(ec) = key.ec_key() {
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        let mut ctx = BigNumContext::new().unwrap();
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .unwrap();
        let (x, y) = (x.to_vec_padded(32).unwrap(), y.to_vec_padded(32).unwrap());
        return json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&x), "y": b64(&y)});
    }
    let x = key.raw_public_key().unwrap();
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&x)})
}

pub fn set(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}
