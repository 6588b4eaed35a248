//! The exporter: a bounded queue in front of one background thread that POSTs batches of spans
//! as OTLP/HTTP JSON (`Content-Type: application/json`) to the collector's traces endpoint.
//!
//! Nothing here can slow a request: [`Exporter::submit`] is a `try_send` into a bounded
//! queue, and a full queue drops the span and counts it. The thread drains the queue on a short
//! tick rather than sleeping in `recv` (a blocked receiver would make every submit wake it, a
//! futex call per span), and sends a batch when it is full or `interval` after the previous one.
//! Each POST has one deadline (`timeout`) for connecting, writing and reading the status; a
//! batch that fails (no connection, timeout, a non-2xx answer) is dropped and counted, and the
//! failures are logged at most once a minute. HTTP/1.1 over plain TCP, one connection per batch:
//! the collector or agent is expected on the local network (`https` is refused when the
//! endpoint is parsed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::json::{encode, Resource, Span};

/// The OTLP specification's default traces endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// OTEL_EXPORTER_OTLP_TIMEOUT's default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The batch span processor's defaults (OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
pub const DEFAULT_QUEUE: usize = 2048;
pub const DEFAULT_BATCH: usize = 512;
/// Longest a span waits in the queue before its batch is sent.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// How often the thread looks at the queue.
const TICK: Duration = Duration::from_millis(100);
/// Most of a response read back (the status line is all that matters).
const RESPONSE_LIMIT: usize = 16 * 1024;

/// A parsed `http://host[:port][/path]` traces endpoint, used as given (the path included,
/// as the OTLP spec says of the signal-specific endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    host: String,
    port: u16,
    /// Path and query; `/` when the URL has none.
    target: String,
    /// The Host header.
    authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                format!(
                    "{url:?}: https is not supported; send to a collector or agent on the local \
                     network over http (http://collector:4318/v1/traces)"
                )
            } else {
                format!("{url:?} is not an http:// URL (e.g. {DEFAULT_ENDPOINT})")
            });
        };
        if rest.contains('#') {
            return Err(format!("{url:?}: a URL fragment (#) has no meaning here"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("{url:?}: spaces or control characters in the path"));
        }
        if authority.contains('@') {
            return Err(format!(
                "{url:?}: user information in the URL is not supported"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(format!("{url:?}: unclosed [ in the host"));
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{url:?}: {h:?} is not an IPv6 address"));
            }
            match after {
                "" => (h, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(format!("{url:?}: text after the IPv6 address")),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        {
            return Err(format!("{url:?}: {host:?} is not a host name or address"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("{url:?}: {p:?} is not a port (1-65535)")),
            },
        };
        Ok(Endpoint {
            url: url.to_string(),
            host: host.to_string(),
            port,
            target,
            authority: authority.to_string(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Where and how spans are sent.
#[derive(Clone, Debug)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub resource: Resource,
    /// Deadline of one POST. Default 10 s.
    pub timeout: Duration,
    /// Spans waiting at most; more are dropped. Default 2048.
    pub queue: usize,
    /// Spans per POST at most. Default 512.
    pub batch: usize,
    /// Longest wait before a partial batch is sent. Default 1 s.
    pub interval: Duration,
}

impl Settings {
    pub fn new(endpoint: Endpoint, resource: Resource, timeout: Duration) -> Settings {
        Settings {
            endpoint,
            resource,
            timeout,
            queue: DEFAULT_QUEUE,
            batch: DEFAULT_BATCH,
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// The exporter's counters, registered by the program under its own metric names.
#[derive(Clone)]
pub struct Counters {
    /// Spans the collector accepted (a 2xx answer).
    pub exported: IntCounter,
    /// Spans dropped because the queue was full.
    pub dropped: IntCounter,
    /// Spans of batches that could not be delivered.
    pub failed: IntCounter,
}

struct Flush {
    requested: AtomicBool,
    done: AtomicU64,
}

/// The handle every request path holds: cheap, never blocks.
pub struct Exporter<S: Span> {
    tx: SyncSender<S>,
    counters: Counters,
    flush: Arc<Flush>,
    endpoint: String,
}

impl<S: Span> Exporter<S> {
    /// Starts the exporter's thread.
    pub fn start(settings: Settings, counters: Counters) -> std::io::Result<Exporter<S>> {
        let (tx, rx) = sync_channel::<S>(settings.queue.max(1));
        let flush = Arc::new(Flush {
            requested: AtomicBool::new(false),
            done: AtomicU64::new(0),
        });
        let endpoint = settings.endpoint.url.clone();
        let worker = Worker {
            settings,
            counters: counters.clone(),
            flush: flush.clone(),
            failures: Failures::default(),
        };
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || worker.run(rx))?;
        Ok(Exporter {
            tx,
            counters,
            flush,
            endpoint,
        })
    }

    /// Queues a finished span; a full queue drops it (counted).
    pub fn submit(&self, span: S) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.inc();
            }
        }
    }

    /// Sends what is queued now and waits up to `wait` for it to be done (at shutdown).
    pub fn flush(&self, wait: Duration) -> bool {
        let before = self.flush.done.load(Ordering::Acquire);
        self.flush.requested.store(true, Ordering::Release);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.flush.done.load(Ordering::Acquire) > before {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Failed exports since the last warning, so a collector that is down is not logged per batch.
#[derive(Default)]
struct Failures {
    since_warning: u64,
    last_warning: Option<Instant>,
    failing: bool,
}

const WARN_EVERY: Duration = Duration::from_secs(60);

struct Worker {
    settings: Settings,
    counters: Counters,
    flush: Arc<Flush>,
    failures: Failures,
}

impl Worker {
    fn run<S: Span>(mut self, rx: Receiver<S>) {
        let mut batch: Vec<S> = Vec::with_capacity(self.settings.batch.max(1));
        let mut last_sent = Instant::now();
        loop {
            let mut closed = false;
            loop {
                match rx.try_recv() {
                    Ok(span) => {
                        batch.push(span);
                        if batch.len() >= self.settings.batch.max(1) {
                            self.send(&mut batch);
                            last_sent = Instant::now();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let flush = self.flush.requested.swap(false, Ordering::AcqRel);
            if !batch.is_empty()
                && (flush || closed || last_sent.elapsed() >= self.settings.interval)
            {
                self.send(&mut batch);
                last_sent = Instant::now();
            }
            if flush {
                self.flush.done.fetch_add(1, Ordering::AcqRel);
            }
            if closed {
                return;
            }
            std::thread::sleep(TICK);
        }
    }

    fn send<S: Span>(&mut self, batch: &mut Vec<S>) {
        let n = batch.len() as u64;
        let body = encode(&self.settings.resource, batch);
        batch.clear();
        match post(&self.settings.endpoint, &body, self.settings.timeout) {
            Ok(()) => {
                self.counters.exported.inc_by(n);
                if self.failures.failing {
                    log::info!("trace export to {} works again", self.settings.endpoint.url);
                    self.failures = Failures::default();
                }
            }
            Err(e) => {
                self.counters.failed.inc_by(n);
                let f = &mut self.failures;
                f.failing = true;
                f.since_warning += 1;
                if f.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    log::warn!(
                        "trace export to {} failed ({} batch(es) dropped since the last warning): {e}",
                        self.settings.endpoint.url,
                        f.since_warning
                    );
                    f.since_warning = 0;
                    f.last_warning = Some(Instant::now());
                }
            }
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("timed out".into())
    } else {
        Ok(left)
    }
}

/// One POST of `body`; Ok on a 2xx answer.
fn post(ep: &Endpoint, body: &[u8], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", ep.host))?
        .collect();
    let mut last = format!("{} resolves to no address", ep.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    let _ = s.set_nodelay(true);
    s.set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mcp-gateway-otlp/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ep.target,
        ep.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("sending: {e}"))?;
    let mut resp = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if resp.len() > RESPONSE_LIMIT {
            return Err("response header too long".into());
        }
        s.set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => return Err("connection closed before a response".into()),
            Ok(n) => resp.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    };
    let status_line = resp[..header_end]
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or(b"");
    let status_line = String::from_utf8_lossy(status_line);
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    if (200..300).contains(&code) {
        return Ok(());
    }
    let body = &resp[header_end + 4..];
    let shown = String::from_utf8_lossy(&body[..body.len().min(300)]);
    Err(format!("the collector answered {code}: {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://collector:4318/v1/traces").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("collector", 4318, "/v1/traces")
        );
        assert_eq!(e.authority, "collector:4318");
        let e = Endpoint::parse("http://[::1]:4318").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("::1", 4318, "/")
        );
        let e = Endpoint::parse("http://127.0.0.1?x=1").unwrap();
        assert_eq!((e.port, e.target.as_str()), (80, "/?x=1"));
        for bad in [
            "https://collector:4318/v1/traces",
            "collector:4318",
            "http://",
            "http://:4318/v1/traces",
            "http://collector:0/",
            "http://collector:99999/",
            "http://collector:x/",
            "http://user@collector/",
            "http://[::1/",
            "http://[zz]/",
            "http://collector/v1 traces",
            "http://collector/v1#x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
