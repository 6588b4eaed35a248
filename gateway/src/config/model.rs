//! The validated, resolved configuration the runtime reads. Every value here has been checked:
//! durations are `Duration`, sizes are bytes, listener addresses are `SocketAddr`, references
//! between sections (route → pool / split / zone, split → pool) point at something that exists,
//! and relative paths have been made absolute against the config file's directory.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::tls::CaType;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

pub use super::units::{Cidr, Rate};

/// The whole gateway configuration, as returned by [`super::load`] / [`super::parse`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the file this was read from (relative paths inside were resolved
    /// against its directory).
    pub file: PathBuf,
    pub server: Server,
    pub listeners: Listeners,
    pub headers: Headers,
    pub gzip: Gzip,
    pub real_ip: RealIp,
    pub limits: Limits,
    /// Upstream pools by name.
    pub pools: BTreeMap<String, Pool>,
    /// Rate-limit zones by name (like `limit_req_zone`).
    pub zones: BTreeMap<String, Zone>,
    /// Weighted splits over pools by name (blue-green, canary).
    pub splits: BTreeMap<String, Split>,
    /// `[auth]`: callers of routes with `auth = true` and what they may call.
    pub auth: Auth,
    /// `[tracing]`: the gateway's own spans (W3C trace context is propagated regardless).
    pub tracing: Tracing,
    /// Routes in file order. Matching: an exact `path` first, then the longest prefix, among
    /// routes whose `host` matches (or have none); see `routing::Router`.
    pub routes: Vec<Route>,
}

/// `[server]`: process-wide settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Pingora worker threads per service. Default 2.
    pub threads: usize,
    /// SIGTERM drain time for in-flight requests and streams. Default 30s.
    pub grace_period: Duration,
    /// Default `/tmp/gateway.pid`.
    pub pid_file: PathBuf,
    /// Pingora graceful-upgrade socket. Default `/tmp/gateway_upgrade.sock`.
    pub upgrade_sock: PathBuf,
    /// Where JSON access-log lines go. Default stdout.
    pub access_log: AccessLog,
    /// Where the audit log goes: one JSON line per MCP `tools/call` (caller, tool, outcome).
    /// Default off.
    pub audit_log: AccessLog,
    /// File for the program's own log lines (append). `None`: stderr. Required with `-d`, which
    /// detaches from the terminal like nginx (stderr and stdout are not kept).
    pub error_log: Option<PathBuf>,
    /// Level for the program's own log lines. Default info. (`RUST_LOG`, if set, may still win:
    /// that is the runtime's choice.)
    pub error_log_level: log::LevelFilter,
    /// nginx's `worker_rlimit_nofile`: the open-file limit set at start-up. `None`: raised to
    /// the hard limit, so the connections the gateway holds are bounded by the hard limit
    /// (each client connection is one descriptor, each upstream connection another).
    pub worker_rlimit_nofile: Option<u64>,
}

/// `[tracing]`: every request continues the client's W3C `traceparent` (or starts a trace) and
/// passes it upstream, and its trace id is logged; with an endpoint the gateway also exports its
/// own span of each request. Read at start: a reload keeps the running setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`), used as written. None:
    /// no spans are exported. Default none.
    pub otlp_traces_endpoint: Option<otlp::Endpoint>,
    /// The spans' `service.name`. Default `gateway`.
    pub service_name: String,
    /// Deadline of one export POST. Default 10s (OTLP's default).
    pub export_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    Off,
    /// Appended to; absolute.
    File(PathBuf),
}

/// `[limits]`: how much of a request the gateway reads, how strictly (nginx's
/// `large_client_header_buffers`) and how long it waits for the client (nginx's client
/// timeouts, under their nginx names).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line or header line, bytes (414 / 431 above). Default 8k.
    pub header_line_size: usize,
    /// Largest header section, request line included (431 above). Default 32k.
    pub header_total_size: usize,
    /// Refuse `%XX` escapes of a space, `"`, `<`, `>` or control character in the request
    /// target: Pingora turns the raw characters into those escapes before the gateway sees
    /// them. Default true.
    pub strict_request_target: bool,
    /// The whole request header from its first byte, and the first request on a new
    /// connection; the connection is closed when it runs out. Default 60s.
    pub client_header_timeout: Duration,
    /// Between two reads of the request body: 408. Default 60s.
    pub client_body_timeout: Duration,
    /// Between two writes the client does not accept: the connection is closed. Default 60s.
    pub send_timeout: Duration,
    /// An idle keep-alive connection (HTTP/1.1 between requests, HTTP/2 with no open stream)
    /// is closed after this. 0 turns HTTP/1.1 keep-alive off. Default 75s.
    pub keepalive_timeout: Duration,
    /// Requests on one HTTP/1.1 connection, after which it is closed. Default 1000.
    pub keepalive_requests: u32,
}

/// `[listeners.*]`. At least one of `http` / `https` is present.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub http: Option<HttpListener>,
    pub https: Option<HttpsListener>,
    pub admin: Option<AdminListener>,
}

/// `[listeners.http]`: plain HTTP, normally redirecting to HTTPS.
#[derive(Debug, Clone)]
pub struct HttpListener {
    pub address: SocketAddr,
    /// 301 to `https://{host}{:https_port}{path}?{query}`. Default true.
    pub redirect_https: bool,
    /// Port written in the redirect's Location; omitted there when 443. Default: the HTTPS
    /// listener's port if there is one, else 443.
    pub https_port: u16,
    /// Path prefixes that are proxied by the routes on plain HTTP instead of redirected
    /// (ACME challenges, probes). Each starts with `/`. Default `["/.well-known/acme-challenge/"]`.
    pub redirect_exempt: Vec<String>,
}

/// `[listeners.https]`: TLS termination.
#[derive(Debug, Clone)]
pub struct HttpsListener {
    pub address: SocketAddr,
    /// PEM certificate chain, absolute.
    pub cert: PathBuf,
    /// PEM private key, absolute.
    pub key: PathBuf,
    /// Offer h2 by ALPN beside http/1.1. Default true.
    pub http2: bool,
    /// Lowest protocol accepted; the highest is always TLS 1.3. Default 1.2.
    pub min_tls: TlsVersion,
    /// OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults).
    /// Default: Mozilla "intermediate" ([`super::defaults::MOZILLA_INTERMEDIATE_CIPHERS`]).
    pub ciphers: String,
    /// Session resumption lifetime (tickets and cache). Default 10m (the replaced nginx.conf's
    /// `ssl_session_timeout 10m`).
    pub session_timeout: Duration,
    /// A DER OCSP response for the certificate, stapled to handshakes whose client asks for
    /// the status (nginx's `ssl_stapling_file`); re-read on reload. Default none.
    pub stapling_file: Option<PathBuf>,
    /// `cert` and `key` as parsed and matched by the loader: the listener serves exactly what
    /// `-t` checked. None only from [`super::parse`], which reads no files.
    pub material: Option<Arc<CertKey>>,
}

/// A certificate chain and its private key.
#[derive(Clone)]
pub struct CertKey {
    /// Leaf first, then the chain as in the PEM file.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// The `stapling_file` response (DER), checked to be successful, current and about the
    /// leaf certificate.
    pub ocsp: Option<Vec<u8>>,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertKey({} certificates)", self.chain.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `[listeners.admin]`: /metrics /healthz /readyz /status. Absent = no admin listener.
#[derive(Debug, Clone)]
pub struct AdminListener {
    pub address: SocketAddr,
}

/// `[headers]`: response headers added to every proxied and gateway-made response.
#[derive(Debug, Clone)]
pub struct Headers {
    /// `Strict-Transport-Security` value, sent on HTTPS responses only. None = disabled (`""`).
    /// Default `max-age=31536000; includeSubDomains` (the replaced nginx.conf's).
    pub hsts: Option<String>,
    /// Value that replaces the upstream's `Server` header; None (`""`) removes it.
    /// Default `gateway` (no version, unlike nginx's default).
    pub server: Option<String>,
    /// `[headers.set]`, sorted by name (TOML tables keep no order), names as written. Default: the replaced nginx.conf's security headers
    /// ([`super::defaults::SECURITY_HEADERS`]). Each route carries its merged copy in
    /// [`Route::response_headers`]; this is the global list for gateway-made responses outside any
    /// route (404 no route, redirects).
    pub set: Vec<(String, String)>,
}

/// `[gzip]`: response compression (never applied to stream routes or stream content types).
#[derive(Debug, Clone)]
pub struct Gzip {
    /// Default true.
    pub enabled: bool,
    /// Bytes; responses with a smaller Content-Length are sent as they are. Default 1024.
    pub min_length: u64,
    /// 1..=9. Default 6.
    pub level: u32,
    /// Lower-case media types without parameters. Default: the replaced nginx.conf's `gzip_types`.
    pub types: Vec<String>,
    /// Add `Vary: Accept-Encoding` (the replaced nginx.conf's `gzip_vary on`). Default true.
    pub vary: bool,
}

/// `[real_ip]`: where the client address comes from.
#[derive(Debug, Clone)]
pub struct RealIp {
    /// Peers whose `header` is believed. Default empty: the connection's peer is the client.
    pub trusted_proxies: Vec<Cidr>,
    /// Default `X-Forwarded-For`.
    pub header: String,
}

impl RealIp {
    /// The client address for a connection from `peer` carrying `header_value` (the configured
    /// header, all its values joined by `,`), like nginx's `real_ip_recursive on`: when the
    /// peer is trusted, walk the list from the right, skipping trusted proxies, and take the
    /// first untrusted address. An untrusted peer, a missing or malformed header gives `peer`:
    /// a client can never choose its own key by sending the header itself.
    pub fn client_ip(&self, peer: IpAddr, header_value: Option<&str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(value) = header_value else {
            return peer;
        };
        let mut client = peer;
        for part in value.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                // Garbage in the chain: stop at the last good hop rather than trust what
                // lies left of it.
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// `[pools.NAME]`: a set of upstream servers and how to pick one.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// Default least_conn.
    pub balance: Balance,
    /// At least one.
    pub servers: Vec<UpstreamServer>,
    /// DNS re-resolution period for servers given by name. Default 5s.
    pub resolve_interval: Duration,
    /// Idle upstream connections kept. Default 64.
    pub keepalive: usize,
    /// Passive health: this many failures within `fail_timeout` mark a server down for
    /// `fail_timeout` (nginx's max_fails / fail_timeout). 0 disables. Default 3.
    pub max_fails: u32,
    /// Default 30s.
    pub fail_timeout: Duration,
    /// Upstream TLS; None = plain HTTP. Default None.
    pub tls: Option<UpstreamTls>,
    /// Active health checks; None = passive only.
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Fewest in-flight requests, weighted; ties broken fairly.
    LeastConn,
    /// Weighted round robin.
    RoundRobin,
    /// Consistent choice by a request key.
    Hash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client address (after `[real_ip]`).
    ClientIp,
    /// A request header's value (name as written; compare case-insensitively).
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

/// One `servers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// As written: `"127.0.0.1:3001"`, `"backend:3000"`.
    pub address: String,
    /// Host part: an IP literal or a DNS name (brackets stripped for IPv6).
    pub host: String,
    pub port: u16,
    /// ≥ 1. Default 1. A name resolving to several IPs gives each IP this weight.
    pub weight: u32,
    /// Set when `host` is an IP literal: nothing to resolve.
    pub socket_addr: Option<SocketAddr>,
}

/// Upstream TLS settings (`tls = true`).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Verify the upstream certificate. Default true.
    pub verify: bool,
    /// SNI and verification name. None = the server's host (an IP literal sends no SNI).
    pub sni: Option<String>,
    /// Extra CA bundle, absolute.
    pub ca_file: Option<PathBuf>,
    /// `ca_file` as parsed by the loader. None without one, and from [`super::parse`].
    pub ca: Option<Arc<CaType>>,
}

/// `[pools.NAME.health_check]`.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// GET path, starts with `/`. Default `/healthz`.
    pub path: String,
    /// Default 2s.
    pub interval: Duration,
    /// Default 1s. A server that accepts the connection but does not answer within this fails
    /// the check (the stalled-replica case).
    pub timeout: Duration,
    /// Consecutive successes to mark up. Default 2.
    pub rise: u32,
    /// Consecutive failures to mark down. Default 2.
    pub fall: u32,
}

/// `[zones.NAME]`: like `limit_req_zone`.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    /// Default client_ip.
    pub key: LimitKey,
    pub rate: Rate,
    /// Memory bound in bytes; the limiter converts it to a key count. Default 10m.
    pub size: u64,
    /// Status for rejected requests, 400..=599. Default 429.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    /// The caller authenticated at the edge (`auth = true` routes): its token name or JWT
    /// subject. Unauthenticated requests share the empty key (not accounted).
    Caller,
    /// The bearer token of `Authorization: Bearer ...` (requests without one share the empty key).
    Bearer,
    Header(String),
}

/// `[splits.NAME]`: weighted choice among pools.
#[derive(Debug, Clone)]
pub struct Split {
    pub name: String,
    /// (pool, weight) sorted by pool name; every pool exists, weights sum > 0.
    pub pools: Vec<(String, u32)>,
    /// Default cookie.
    pub sticky: Sticky,
    /// Cookie name when sticky = cookie. Default `gw_split`.
    pub cookie: String,
    /// Request header that forces a pool by name; None (`""`) disables. Default `X-Gateway-Pool`.
    pub force_header: Option<String>,
    pub rollback: Option<Rollback>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Cookie,
    Bearer,
    ClientIp,
    Header(String),
    None,
}

/// `[splits.NAME.rollback]`: drop `pool`'s weight to 0 when its 5xx ratio over `window`
/// exceeds `max_5xx_ratio`, or its MCP tool-error ratio exceeds `max_tool_error_ratio`, with at
/// least `min_requests` requests (tool calls for the second) in the window.
#[derive(Debug, Clone)]
pub struct Rollback {
    /// One of the split's pools.
    pub pool: String,
    /// In (0, 1]. At least one of the two ratios is set.
    pub max_5xx_ratio: Option<f64>,
    /// In (0, 1]: `tools/call` answers that are a JSON-RPC error or `isError: true` (HTTP 200
    /// all the same), among the pool's `tools/call` answers on MCP routes.
    pub max_tool_error_ratio: Option<f64>,
    /// Default 60s.
    pub window: Duration,
    /// Default 50.
    pub min_requests: u64,
}

/// `[[routes]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique; used as a metrics label. Default: the path.
    pub name: String,
    /// As written: a prefix (`/mcp`), matched on segment boundaries (`/mcp`, `/mcp/x`, not
    /// `/mcpfoo`; a prefix ending in `/` matches everything under it), or `= /health`, an exact
    /// match like nginx's `location =`. Requests are matched on their normalised path.
    pub path: String,
    /// Exact host (lower case, no port) or None for any.
    pub host: Option<String>,
    pub target: RouteTarget,
    /// SSE / NDJSON: no buffering, no gzip. Default false.
    pub stream: bool,
    /// An MCP endpoint (Streamable HTTP, JSON-RPC over POST): the gateway reads the method and
    /// tool of each request (`mcp::view`) for its metrics, limits, grants and the audit log.
    /// Default false.
    pub mcp: bool,
    /// Bytes of a JSON-RPC body read ahead for the MCP view when the request has no
    /// `Mcp-Method` header; larger bodies pass as method "unknown". At most 64k (the replay
    /// buffer). Default 64k.
    pub mcp_peek: u64,
    /// Per-method and per-tool rate limits on an MCP route, each checked after the route's own.
    pub mcp_limits: Vec<McpLimit>,
    /// Require a caller (`[auth]`): a named token or a valid JWT access token; 401 with
    /// `WWW-Authenticate` otherwise, and the grants on MCP routes. Default false.
    pub auth: bool,
    /// `Origin` values accepted (scheme://host[:port], lower case); a request with another
    /// Origin is refused (403). Empty = not checked. Default empty.
    pub allowed_origins: Vec<String>,
    /// `Host` names accepted (no port, lower case): DNS-rebinding protection. Empty = not
    /// checked. Default empty.
    pub allowed_hosts: Vec<String>,
    /// Default 5s.
    pub connect_timeout: Duration,
    /// Default 60s, or 86400s when `stream = true`.
    pub read_timeout: Duration,
    /// Default 60s.
    pub write_timeout: Duration,
    /// Upstream keep-alive idle time. Default 60s.
    pub idle_timeout: Duration,
    /// Request body limit in bytes (413 above); 0 = unlimited, like nginx. Default 1m.
    pub max_body_size: u64,
    /// Extra attempts on another server after a connect failure only. Default 1.
    pub retries: u32,
    pub limit: Option<RouteLimit>,
    /// Response headers for this route: `[headers.set]` merged with `[routes.headers]`
    /// (override by case-insensitive name, `""` removes), in order.
    pub response_headers: Vec<(String, String)>,
}

/// One `mcp_limits` entry: a rate limit for one tool or one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpLimit {
    pub selector: McpSelector,
    pub limit: RouteLimit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpSelector {
    /// `tools/call` of this tool.
    Tool(String),
    /// Any request with this JSON-RPC method.
    Method(String),
}

/// A secret from a file (a bearer token): shown as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `[auth]`: who may call routes with `auth = true`, and what they may do on MCP routes.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// `name:token` lines, absolute; re-read on reload. Default none.
    pub tokens_file: Option<PathBuf>,
    /// The tokens of `tokens_file` by caller name, as read by the loader (empty from
    /// [`super::parse`], which reads no files).
    pub tokens: Vec<(String, Secret)>,
    /// Sent to the backends as `Authorization: Bearer ...` in place of the caller's credential
    /// once the edge has authenticated it (a JWT means nothing to a backend holding static
    /// tokens). Default none: the caller's header is forwarded.
    pub upstream_token: Option<Secret>,
    /// A request header carrying the authenticated caller's name to the backends (which
    /// trust it from their proxies only); the gateway removes it from every client request.
    /// Default none.
    pub caller_header: Option<String>,
    /// What callers may do on MCP routes; empty = every authenticated caller may do anything.
    pub grants: Vec<Grant>,
    /// `[auth.oauth]`: JWT access tokens (OAuth 2.1 resource server). Default none.
    pub oauth: Option<OAuth>,
}

/// `[[auth.grants]]`: callers (by token name, or by JWT scope) and the methods and tools
/// they may call. A caller's rights are the union of the grants that name it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Token names or JWT subjects; `"*"` = any authenticated caller.
    pub callers: Vec<String>,
    /// JWT scopes: a token with any one of them gets this grant.
    pub scopes: Vec<String>,
    /// JSON-RPC methods; `"*"` = all. Default `["*"]`.
    pub methods: Vec<String>,
    /// Tool names, a trailing `*` matching a prefix (`"change.*"`); `"*"` = all.
    /// Default `["*"]`.
    pub tools: Vec<String>,
}

/// `[auth.oauth]`: the MCP authorization spec's resource server.
#[derive(Debug, Clone)]
pub struct OAuth {
    /// This resource's identifier (RFC 8707 / RFC 9728 `resource`): an https URL.
    pub resource: String,
    /// Authorization servers (RFC 9728 `authorization_servers`), at least one.
    pub authorization_servers: Vec<String>,
    /// The `iss` tokens must carry. Default the first authorization server.
    pub issuer: String,
    /// `aud` values accepted (one must be present). Default `[resource]`.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// How often a `jwks_url` is fetched again. Default 5m.
    pub jwks_refresh: Duration,
    /// JWS algorithms accepted (RFC 8725: an allowlist). Default `["RS256", "ES256"]`.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf`. Default 60s.
    pub leeway: Duration,
    /// RFC 9728 `scopes_supported`. Default empty.
    pub scopes_supported: Vec<String>,
    /// The claim holding scopes. Default "scope" (`scp` is also read).
    pub scope_claim: String,
    /// The path the metadata is served on: `/.well-known/oauth-protected-resource` plus the
    /// resource's path (RFC 9728 section 3.1).
    pub metadata_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// Absolute; read at start and on reload.
    File(PathBuf),
    /// http(s) URL; fetched at start and every `jwks_refresh`.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    Pool(String),
    Split(String),
}

/// `limit = { zone, burst, nodelay | delay }` (like `limit_req`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    /// A zone that exists.
    pub zone: String,
    /// Default 0.
    pub burst: u32,
    pub delay: LimitDelay,
}

/// When excess requests within the burst wait. Mirrors nginx: no option = every excess
/// request is delayed (`AfterExcess(0)`), `delay=N` = the first N excess pass at once,
/// `nodelay` = none is delayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitDelay {
    NoDelay,
    AfterExcess(u32),
}
