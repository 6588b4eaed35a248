//! The authorization server's JWK Set (RFC 7517): parsing its public signing keys, looking one
//! up for a JWS (RFC 7515 §4.1.4 `kid`), and a cache kept fresh from a file or the `jwks_uri`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use serde_json::{Map, Value};

/// A whole fetch of the `jwks_uri`: connect, request, response.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWK Set body accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// At most one refetch per this long for tokens naming an unknown `kid` (key rotation).
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);
/// After a failed refresh the refresher retries within this long, whatever its interval.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// RSA keys below 2048 bits are refused (RFC 7518 §3.3); above 8192 bound the work per token.
const RSA_BITS: std::ops::RangeInclusive<i32> = 2048..=8192;

/// The key families of RFC 7518 §6 and RFC 8037 that tokens are verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// The key family a JWS `alg` needs (RFC 7518 §3.1, RFC 8037 §3.1); None for any other alg.
    pub fn for_alg(alg: &str) -> Option<KeyKind> {
        match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => Some(KeyKind::Rsa),
            "ES256" => Some(KeyKind::P256),
            "ES384" => Some(KeyKind::P384),
            "EdDSA" => Some(KeyKind::Ed25519),
            _ => None,
        }
    }
}

/// One usable public signing key of the set.
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK `alg` (RFC 7517 §4.4): when present, the only alg this key verifies.
    pub alg: Option<String>,
    pub kind: KeyKind,
    pub key: PKey<Public>,
}

/// The signing keys of a JWK Set. `Default` is the empty set (nothing loaded yet).
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses a JWK Set. Keys whose `use` is not "sig", whose `key_ops` lack "verify", of an
    /// unknown `kty`/`crv` or with an `alg` this server does not verify are skipped; a malformed
    /// key is an error naming its index; so is a set left with no usable key.
    pub fn from_json(bytes: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWK Set: no \"keys\" array")?;
        let mut keys = Vec::new();
        for (i, v) in list.iter().enumerate() {
            if let Some(k) = parse_key(v).map_err(|e| format!("keys[{i}]: {e}"))? {
                keys.push(k);
            }
        }
        if keys.is_empty() {
            return Err("the JWK Set has no usable signing key".into());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key to verify a JWS with `alg`: the first with this `kid` that fits the alg; with no
    /// `kid` in the token, the only key of the set that fits it (none when ambiguous).
    pub fn key_for(&self, kid: Option<&str>, alg: &str) -> Option<&PKey<Public>> {
        let kind = KeyKind::for_alg(alg)?;
        let fits = |k: &&Jwk| k.kind == kind && k.alg.as_deref().is_none_or(|a| a == alg);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .find(fits)
                .map(|k| &k.key),
            None => {
                let mut it = self.keys.iter().filter(fits);
                match (it.next(), it.next()) {
                    (Some(k), None) => Some(&k.key),
                    _ => None,
                }
            }
        }
    }
}

fn parse_key(v: &Value) -> Result<Option<Jwk>, String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    let kty = str_member(obj, "kty")?.ok_or("no \"kty\"")?;
    if str_member(obj, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("\"key_ops\" is not an array")?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let kid = str_member(obj, "kid")?.map(str::to_owned);
    let alg = str_member(obj, "alg")?;
    let crv = str_member(obj, "crv")?;
    let (kind, key) = match (kty, crv) {
        ("RSA", _) => (KeyKind::Rsa, rsa_key(obj)?),
        ("EC", Some("P-256")) => (KeyKind::P256, ec_key(obj, Nid::X9_62_PRIME256V1, 32)?),
        ("EC", Some("P-384")) => (KeyKind::P384, ec_key(obj, Nid::SECP384R1, 48)?),
        ("OKP", Some("Ed25519")) => (KeyKind::Ed25519, ed25519_key(obj)?),
        ("EC" | "OKP", None) => return Err(format!("{kty} key without \"crv\"")),
        _ => return Ok(None),
    };
    if let Some(a) = alg {
        match KeyKind::for_alg(a) {
            None => return Ok(None),
            Some(k) if k != kind => return Err(format!("\"alg\" {a} does not fit this {kty} key")),
            Some(_) => {}
        }
    }
    Ok(Some(Jwk {
        kid,
        alg: alg.map(str::to_owned),
        kind,
        key,
    }))
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = str_member(obj, name)?.ok_or_else(|| format!("no \"{name}\""))?;
    decode_b64url(s.as_bytes()).ok_or_else(|| format!("\"{name}\" is not base64url"))
}

fn bignum(bytes: &[u8]) -> Result<BigNum, String> {
    BigNum::from_slice(bytes).map_err(|e| e.to_string())
}

fn rsa_key(obj: &Map<String, Value>) -> Result<PKey<Public>, String> {
    let n = bignum(&b64_member(obj, "n")?)?;
    let e = bignum(&b64_member(obj, "e")?)?;
    if !RSA_BITS.contains(&n.num_bits()) {
        return Err(format!(
            "RSA modulus of {} bits (2048 to 8192 accepted)",
            n.num_bits()
        ));
    }
    if e.num_bits() < 2 || !e.is_bit_set(0) {
        return Err("RSA exponent is not an odd number above 1".into());
    }
    let rsa = Rsa::from_public_components(n, e).map_err(|e| format!("RSA key: {e}"))?;
    PKey::from_rsa(rsa).map_err(|e| format!("RSA key: {e}"))
}

/// `x` and `y` are the full-length coordinates of a point on the curve (RFC 7518 §6.2.1).
fn ec_key(obj: &Map<String, Value>, curve: Nid, len: usize) -> Result<PKey<Public>, String> {
    let x = b64_member(obj, "x")?;
    let y = b64_member(obj, "y")?;
    if x.len() != len || y.len() != len {
        return Err(format!("EC coordinates must be {len} bytes each"));
    }
    let group = EcGroup::from_curve_name(curve).map_err(|e| e.to_string())?;
    let (x, y) = (bignum(&x)?, bignum(&y)?);
    let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
        .and_then(|k| k.check_key().map(|()| k))
        .map_err(|_| "EC point is not on the curve".to_string())?;
    PKey::from_ec_key(key).map_err(|e| format!("EC key: {e}"))
}

fn ed25519_key(obj: &Map<String, Value>) -> Result<PKey<Public>, String> {
    let x = b64_member(obj, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 \"x\" must be 32 bytes".into());
    }
    PKey::public_key_from_raw_bytes(&x, Id::ED25519).map_err(|e| format!("Ed25519 key: {e}"))
}

/// Base64url without padding (RFC 7515 §2): any other character, padding included, or
/// non-zero unused trailing bits (a non-canonical encoding) is refused.
pub fn decode_b64url(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWK Set file, read when the cache is built and on `refresh`.
    File(PathBuf),
    /// The authorization server's `jwks_uri` (http:// or https://), fetched by `refresh`.
    Url(String),
}

enum Origin {
    File(PathBuf),
    Url(Box<UrlOrigin>),
}

struct UrlOrigin {
    url: String,
    target: Target,
    connector: Connector,
}

/// The current key set of one source, swapped whole on each good load.
pub struct JwksCache {
    origin: Origin,
    current: ArcSwap<KeySet>,
    last_kid_refetch: Mutex<Option<Instant>>,
}

impl JwksCache {
    /// A file source is read now (an error fails the build); a URL source starts empty until
    /// the first `refresh` (or `run_refresher`) fetches it.
    pub fn new(source: JwksSource) -> Result<JwksCache, String> {
        let (origin, set) = match source {
            JwksSource::File(path) => {
                let set = read_file(&path)?;
                (Origin::File(path), set)
            }
            JwksSource::Url(url) => {
                let target = Target::parse(&url).map_err(|e| format!("{url}: {e}"))?;
                let connector = Connector::new(None);
                let origin = Origin::Url(Box::new(UrlOrigin {
                    url,
                    target,
                    connector,
                }));
                (origin, KeySet::default())
            }
        };
        Ok(JwksCache {
            origin,
            current: ArcSwap::from_pointee(set),
            last_kid_refetch: Mutex::new(None),
        })
    }

    /// The current key set (empty before a URL source's first good fetch).
    pub fn keys(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Loads the source again (file or URL). On failure the last good set stays and a warning
    /// naming the source is logged.
    pub async fn refresh(&self) -> Result<(), String> {
        let loaded = match &self.origin {
            Origin::File(path) => read_file(path),
            Origin::Url(u) => fetch(&u.connector, &u.target)
                .await
                .and_then(|body| KeySet::from_json(&body)),
        };
        self.install(loaded)
    }

    /// A token named a `kid` the set lacks (the server may have rotated its keys): refresh, at
    /// most once per [`UNKNOWN_KID_REFETCH`]. True when a new set was loaded, so the caller
    /// verifies the token once more against [`JwksCache::keys`].
    pub async fn on_unknown_kid(&self) -> bool {
        {
            let mut last = self
                .last_kid_refetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_REFETCH) {
                return false;
            }
            *last = Some(now);
        }
        self.refresh().await.is_ok()
    }

    /// Refreshes now, then every `interval` (within [`RETRY_AFTER_FAILURE`] after a failure).
    /// Never returns: run it as a background task.
    pub async fn run_refresher(&self, interval: Duration) {
        loop {
            let wait = match self.refresh().await {
                Ok(()) => interval,
                Err(_) => interval.min(RETRY_AFTER_FAILURE),
            };
            tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        }
    }

    fn name(&self) -> String {
        match &self.origin {
            Origin::File(path) => path.display().to_string(),
            Origin::Url(u) => u.url.clone(),
        }
    }

    fn install(&self, loaded: Result<KeySet, String>) -> Result<(), String> {
        match loaded {
            Ok(set) => {
                log::debug!("JWKS {}: {} signing keys", self.name(), set.len());
                self.current.store(Arc::new(set));
                Ok(())
            }
            Err(e) => {
                log::warn!("JWKS {}: {e}; keeping the last good key set", self.name());
                Err(e)
            }
        }
    }
}

fn read_file(path: &Path) -> Result<KeySet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("{}: over 1 MiB", path.display()));
    }
    KeySet::from_json(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A parsed `jwks_uri`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// `host:port` to resolve.
    addr: String,
    /// The name sent and verified; an IP literal stays the name (an empty one would turn
    /// Pingora's certificate verification off).
    sni: String,
    host_header: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the JWKS URL must be http:// or https://".into()),
        };
        let auth = uri.authority().ok_or("the JWKS URL has no host")?;
        if auth.as_str().contains('@') {
            return Err("user info in the JWKS URL is not supported".into());
        }
        let host = auth.host();
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            tls,
            addr: format!("{host}:{port}"),
            sni: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            host_header: auth.as_str().to_string(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }
}

async fn fetch(connector: &Connector, target: &Target) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_body(connector, target)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no response within {} s", FETCH_TIMEOUT.as_secs())),
    }
}

/// One HTTP/1.1 GET through Pingora's connector (certificates verified against the system
/// roots for https); 200 and a body up to [`MAX_JWKS_BYTES`] required. Caching headers are
/// ignored: the refresher's interval decides.
async fn fetch_body(connector: &Connector, t: &Target) -> Result<Vec<u8>, String> {
    let addr = tokio::net::lookup_host(t.addr.as_str())
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", t.addr))?
        .next()
        .ok_or_else(|| format!("{} has no address", t.addr))?;
    let mut peer = HttpPeer::new(addr, t.tls, t.sni.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(FETCH_TIMEOUT);
    o.read_timeout = Some(FETCH_TIMEOUT);
    o.write_timeout = Some(FETCH_TIMEOUT);
    o.alpn = ALPN::H1;
    o.verify_cert = true;
    o.verify_hostname = true;
    let err = |what: &str, e: Box<pingora::Error>| format!("{what}: {}", e.to_string().trim());
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| err("connect", e))?;
    let mut req =
        RequestHeader::build("GET", t.path.as_bytes(), None).map_err(|e| err("request", e))?;
    let headers = [
        ("Host", t.host_header.as_str()),
        ("Accept", "application/jwk-set+json, application/json"),
        ("Connection", "close"),
    ];
    for (name, value) in headers {
        req.insert_header(name, value)
            .map_err(|e| err("request", e))?;
    }
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| err("request", e))?;
    session
        .finish_request_body()
        .await
        .map_err(|e| err("request", e))?;
    session
        .read_response_header()
        .await
        .map_err(|e| err("response", e))?;
    let status = session.response_header().map_or(0, |h| h.status.as_u16());
    if status != 200 {
        return Err(format!("HTTP status {status} (200 required)"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| err("body", e))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err("body over 1 MiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Keys generated at test time and their JWK form, for this module's and `jwt`'s tests.
#[cfg(test)]
#[path = "tests/testkeys.rs"]
pub(crate) mod testkeys;

#[cfg(test)]
#[path = "tests/jwks.rs"]
mod tests;
