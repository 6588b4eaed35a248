//! Default values, taken from the nginx.conf it replaces where it has one.

use std::time::Duration;

/// The replaced nginx.conf's `add_header` lines (HSTS is separate: HTTPS only), plus `Referrer-Policy`.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-XSS-Protection", "1; mode=block"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
];

/// The replaced nginx.conf's `Strict-Transport-Security ... always`.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Replaces the upstream's `Server` header: no version.
pub const SERVER_HEADER: &str = "gateway";

/// The replaced nginx.conf's `gzip_types` (nginx always adds text/html; the tool server serves no HTML).
pub const GZIP_TYPES: &[&str] = &[
    "text/plain",
    "text/css",
    "application/json",
    "application/javascript",
    "text/xml",
    "application/xml",
    "application/xml+rss",
    "text/javascript",
];
/// The replaced nginx.conf's `gzip_min_length 1024`.
pub const GZIP_MIN_LENGTH: u64 = 1024;
/// zlib's usual speed/ratio middle (nginx's own default is 1).
pub const GZIP_LEVEL: u32 = 6;

/// Mozilla's "intermediate" TLS 1.2 cipher list (ssl-config.mozilla.org, guideline 5.7).
/// The replaced nginx.conf's own list names `*-SHA512` GCM suites that do not exist in OpenSSL (nginx drops
/// them silently) and lacks CHACHA20 and AES128; this is the list it was meant to be.
pub const MOZILLA_INTERMEDIATE_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:\
ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:\
DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

/// The replaced nginx.conf's `ssl_session_timeout 10m`.
pub const TLS_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

pub const THREADS: u64 = 2;
pub const GRACE_PERIOD: Duration = Duration::from_secs(30);
pub const PID_FILE: &str = "/tmp/gateway.pid";
pub const UPGRADE_SOCK: &str = "/tmp/gateway_upgrade.sock";

pub const REDIRECT_EXEMPT: &[&str] = &["/.well-known/acme-challenge/"];

pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE: u64 = 64;
/// The replaced nginx.conf's `max_fails=3 fail_timeout=30s`.
pub const MAX_FAILS: u64 = 3;
pub const FAIL_TIMEOUT: Duration = Duration::from_secs(30);

pub const HC_PATH: &str = "/healthz";
pub const HC_INTERVAL: Duration = Duration::from_secs(2);
pub const HC_TIMEOUT: Duration = Duration::from_secs(1);
pub const HC_RISE: u64 = 2;
pub const HC_FALL: u64 = 2;

/// nginx's `limit_req_zone ... :10m` of the replaced nginx.conf.
pub const ZONE_SIZE: u64 = 10 << 20;
/// nginx allocates a zone of at least 8 pages; below that it refuses ("too small").
pub const ZONE_MIN_SIZE: u64 = 32 << 10;
pub const ZONE_STATUS: u64 = 429;

pub const SPLIT_COOKIE: &str = "gw_split";
pub const SPLIT_FORCE_HEADER: &str = "X-Gateway-Pool";
pub const ROLLBACK_WINDOW: Duration = Duration::from_secs(60);
pub const ROLLBACK_MIN_REQUESTS: u64 = 50;

/// nginx's proxy_connect_timeout is 60s; a replica that takes 5s to accept is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// nginx's proxy_read_timeout / proxy_send_timeout default.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The replaced nginx.conf's `proxy_read_timeout 86400` on its streaming locations.
pub const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(86_400);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's client_max_body_size default.
pub const MAX_BODY_SIZE: u64 = 1 << 20;
pub const RETRIES: u64 = 1;

/// nginx's `large_client_header_buffers 4 8k`: a request line or header line fits one 8k buffer,
/// the whole header section four of them.
pub const HEADER_LINE_SIZE: u64 = 8 << 10;
pub const HEADER_TOTAL_SIZE: u64 = 32 << 10;
/// Pingora refuses a header section over 1 MiB itself (its `MAX_HEADER_SIZE`, a constant).
pub const HEADER_MAX_SIZE: u64 = (1 << 20) - 1;

/// nginx's `client_header_timeout 60s`: the whole request header, from its first byte (and the
/// wait for the first request on a new connection).
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `client_body_timeout 60s`: between two reads of the request body.
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `send_timeout 60s`: between two writes of the response the client does not accept.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `keepalive_timeout 75s`: an idle keep-alive connection, HTTP/1.1 and HTTP/2 alike.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// nginx's `keepalive_requests 1000`: requests on one HTTP/1.1 connection before it closes.
pub const KEEPALIVE_REQUESTS: u64 = 1000;

/// Bytes of an MCP request body read ahead for its method and tool (the replay buffer's size).
pub const MCP_PEEK: u64 = 64 * 1024;
/// `[auth.oauth]`: a `jwks_url` is fetched again this often.
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// `[auth.oauth]`: clock skew allowed on `exp` and `nbf`.
pub const JWT_LEEWAY: Duration = Duration::from_secs(60);
/// `[auth.oauth]`: JWS algorithms accepted unless `algorithms` says otherwise.
pub const JWT_ALGORITHMS: &[&str] = &["RS256", "ES256"];
/// RFC 9728's well-known path prefix.
pub const OAUTH_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
