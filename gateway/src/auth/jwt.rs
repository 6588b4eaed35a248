//! JWT access tokens (RFC 9068) verified at the edge, as the MCP authorization spec asks of an
//! OAuth 2.1 resource server: a compact JWS (RFC 7515) signed with an asymmetric key of the
//! authorization server's JWK Set, its claims checked per RFC 7519 and RFC 8725.

use std::fmt;
use std::time::Duration;

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde_json::{Map, Value};

use super::jwks::{decode_b64url, KeySet};

/// A longer token is malformed (bounds the work per token).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `typ` values accepted when present (RFC 9068 §2.1, RFC 7519 §5.1), case-insensitively.
const TYPES: [&str; 3] = ["JWT", "at+jwt", "application/at+jwt"];

/// The JWS algorithms verified (RFC 7518 §3.1, RFC 8037 §3.1). There is no "none" and no HS*:
/// a resource server holding only public keys has no shared secret, and accepting HMAC keyed
/// with a public key would be algorithm confusion (RFC 8725 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The exact, case-sensitive JWS name; None for "none", HS*, and anything else.
    pub fn parse(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            Alg::RS256 | Alg::PS256 | Alg::ES256 => MessageDigest::sha256(),
            Alg::RS384 | Alg::PS384 | Alg::ES384 => MessageDigest::sha384(),
            Alg::RS512 | Alg::PS512 => MessageDigest::sha512(),
            // Ed25519 hashes internally; never used.
            Alg::EdDSA => MessageDigest::sha512(),
        }
    }
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct JwtPolicy {
    /// `iss`, matched exactly (the authorization server's issuer identifier).
    pub issuer: String,
    /// `aud` must contain one of these (the resource's canonical URI, RFC 8707); none
    /// configured accepts no token.
    pub audiences: Vec<String>,
    /// The allowed `alg`s; empty accepts no token.
    pub algorithms: Vec<Alg>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The scope claim: a space-separated string or a JSON array; "scp" is read when it is
    /// absent.
    pub scope_claim: String,
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`, else `client_id`, else "".
    pub subject: String,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    /// `exp`, in seconds since the epoch.
    pub expires_at: u64,
}

/// Why a token was refused. `Display` is a short reason for
/// `WWW-Authenticate: Bearer error="invalid_token", error_description="..."` (RFC 6750 §3):
/// nothing from the token but a bounded, plain `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(&'static str),
    /// `alg` is "none", HS*, unknown or not allowed by the policy.
    UnsupportedAlgorithm,
    /// No key of the set fits the `kid` and `alg` (the `kid` if short and plain).
    UnknownKey(Option<String>),
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    WrongIssuer,
    WrongAudience,
    MissingExp,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::UnsupportedAlgorithm => f.write_str("signing algorithm not accepted"),
            JwtError::UnknownKey(Some(kid)) => write!(f, "no signing key for kid {kid}"),
            JwtError::UnknownKey(None) => f.write_str("no matching signing key"),
            JwtError::BadSignature => f.write_str("invalid signature"),
            JwtError::Expired => f.write_str("token expired"),
            JwtError::NotYetValid => f.write_str("token not yet valid"),
            JwtError::IssuedInFuture => f.write_str("token issued in the future"),
            JwtError::WrongIssuer => f.write_str("wrong issuer"),
            JwtError::WrongAudience => f.write_str("token not issued for this resource"),
            JwtError::MissingExp => f.write_str("token has no expiry"),
        }
    }
}

impl std::error::Error for JwtError {}

/// Verifies a compact-serialized JWS access token and returns its claims. The header is
/// checked (alg allowlist, `typ`, no `crit`) before any key is looked up, and the signature
/// before any claim is read.
pub fn verify(
    token: &str,
    keys: &KeySet,
    policy: &JwtPolicy,
    now_unix: u64,
) -> Result<Claims, JwtError> {
    use JwtError::Malformed;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Malformed("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed("not a compact JWS"));
    };
    let header = json_object(h64, "header is not base64url JSON")?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Alg::parse(name).filter(|a| policy.algorithms.contains(a)),
        _ => None,
    }
    .ok_or(JwtError::UnsupportedAlgorithm)?;
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if TYPES.iter().any(|ok| ok.eq_ignore_ascii_case(t)) => {}
        Some(_) => return Err(Malformed("typ is not an access token type")),
    }
    // RFC 7515 §4.1.11: no extension is understood here.
    if header.contains_key("crit") {
        return Err(Malformed("unsupported critical header"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(Malformed("kid is not a string")),
    };
    let sig = decode_b64url(s64.as_bytes()).ok_or(Malformed("signature is not base64url"))?;
    let payload = json_object(p64, "payload is not base64url JSON")?;
    let key = keys
        .key_for(kid, alg.as_str())
        .ok_or_else(|| JwtError::UnknownKey(kid.filter(|k| plain_kid(k)).map(str::to_owned)))?;
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    if !signature_ok(alg, key, signing_input, &sig).unwrap_or(false) {
        return Err(JwtError::BadSignature);
    }
    check_claims(&payload, policy, now_unix)
}

/// The JOSE header or claims set: a JSON object (duplicate names: the last one wins, as
/// RFC 7515 §4 and RFC 7519 §4 allow).
fn json_object(part: &str, why: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = decode_b64url(part.as_bytes()).ok_or(JwtError::Malformed(why))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(why)),
    }
}

/// A `kid` short and plain enough to repeat in an error description.
fn plain_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn signature_ok(
    alg: Alg,
    key: &PKey<Public>,
    input: &[u8],
    sig: &[u8],
) -> Result<bool, ErrorStack> {
    let md = alg.digest();
    match alg {
        Alg::RS256 | Alg::RS384 | Alg::RS512 => {
            let mut v = Verifier::new(md, key)?;
            v.set_rsa_padding(Padding::PKCS1)?;
            v.update(input)?;
            v.verify(sig)
        }
        // RFC 7518 §3.5: salt as long as the digest, MGF1 with the same digest.
        Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            let mut v = Verifier::new(md, key)?;
            v.set_rsa_padding(Padding::PKCS1_PSS)?;
            v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
            v.set_rsa_mgf1_md(md)?;
            v.update(input)?;
            v.verify(sig)
        }
        // RFC 7518 §3.4: R || S, each the curve's size; openssl wants DER.
        Alg::ES256 | Alg::ES384 => {
            let n = if alg == Alg::ES256 { 32 } else { 48 };
            if sig.len() != 2 * n {
                return Ok(false);
            }
            let r = BigNum::from_slice(&sig[..n])?;
            let s = BigNum::from_slice(&sig[n..])?;
            let der = EcdsaSig::from_private_components(r, s)?.to_der()?;
            let mut v = Verifier::new(md, key)?;
            v.update(input)?;
            v.verify(&der)
        }
        Alg::EdDSA => {
            if sig.len() != 64 {
                return Ok(false);
            }
            Verifier::new_without_digest(key)?.verify_oneshot(sig, input)
        }
    }
}

fn check_claims(c: &Map<String, Value>, policy: &JwtPolicy, now: u64) -> Result<Claims, JwtError> {
    let leeway = policy.leeway.as_secs();
    let exp = numeric_date(c, "exp")?.ok_or(JwtError::MissingExp)?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    if numeric_date(c, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(JwtError::NotYetValid);
    }
    if numeric_date(c, "iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(JwtError::IssuedInFuture);
    }
    if string_claim(c, "iss")? != Some(policy.issuer.as_str()) {
        return Err(JwtError::WrongIssuer);
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => policy.audiences.contains(a),
        Some(Value::Array(list)) => list.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| policy.audiences.iter().any(|p| p == a))
        }),
        _ => false,
    };
    if !aud_ok {
        return Err(JwtError::WrongAudience);
    }
    let client_id = string_claim(c, "client_id")?.map(str::to_owned);
    let subject = match string_claim(c, "sub")? {
        Some(sub) => sub.to_owned(),
        None => client_id.clone().unwrap_or_default(),
    };
    Ok(Claims {
        subject,
        scopes: scopes(c, &policy.scope_claim)?,
        client_id,
        expires_at: exp,
    })
}

fn string_claim<'a>(c: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, JwtError> {
    match c.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwtError::Malformed("a registered claim is not a string")),
    }
}

/// A NumericDate (RFC 7519 §2): non-negative seconds, fractions dropped.
fn numeric_date(c: &Map<String, Value>, name: &str) -> Result<Option<u64>, JwtError> {
    let Some(v) = c.get(name) else {
        return Ok(None);
    };
    let bad = JwtError::Malformed("a time claim is not a NumericDate");
    let n = v.as_number().ok_or(bad.clone())?;
    match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Ok(Some(u)),
        (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
        _ => Err(bad),
    }
}

/// RFC 9068 §2.2.3 `scope` (space-separated); a JSON array of strings is accepted too, and
/// "scp" when the configured claim is absent.
fn scopes(c: &Map<String, Value>, claim: &str) -> Result<Vec<String>, JwtError> {
    let claim = if claim.is_empty() { "scope" } else { claim };
    let Some(v) = c.get(claim).or_else(|| c.get("scp")) else {
        return Ok(Vec::new());
    };
    let bad = JwtError::Malformed("scope is neither a string nor an array of strings");
    match v {
        Value::String(s) => Ok(s.split_ascii_whitespace().map(str::to_owned).collect()),
        Value::Array(list) => list
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or(bad.clone()))
            .collect(),
        _ => Err(bad),
    }
}

#[cfg(test)]
#[path = "tests/jwt.rs"]
mod tests;
