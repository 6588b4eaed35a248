//! The JSON-lines logs: the access log (one object per request) and the audit log (one per MCP
//! tool call, `mcp::audit`). Each is written by a dedicated thread so a slow disk or a blocked
//! stdout never stalls the proxy (lines are dropped and counted if it falls behind).

use std::io::Write;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

use serde::Serialize;

use crate::config::AccessLog;
use crate::metrics::METRICS;

#[derive(Serialize)]
pub struct Entry<'a> {
    pub ts: String,
    pub request_id: &'a str,
    /// The W3C trace id (32 hex) the request continued or started (`trace`); absent only for
    /// a request Pingora refused before the gateway saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// The client after `[real_ip]` (nginx's `$remote_addr` with realip).
    pub client: &'a str,
    /// The TCP peer the request came from (nginx's `$realip_remote_addr`); null when not inet.
    pub peer: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub route: &'a str,
    pub pool: &'a str,
    pub backend: &'a str,
    pub http_version: &'a str,
    pub tls_version: &'a str,
    pub request_time: f64,
    pub upstream_connect_time: Option<f64>,
    pub upstream_header_time: Option<f64>,
    pub upstream_response_time: Option<f64>,
    /// On MCP routes: the JSON-RPC method and the tool of a `tools/call` (bounded labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<&'a str>,
}

/// One JSON-lines log: where it goes (set once at start) and its writer thread.
pub struct JsonLines {
    name: &'static str,
    target: OnceLock<AccessLog>,
    sink: OnceLock<Option<SyncSender<Vec<u8>>>>,
    dropped: fn() -> &'static prometheus::IntCounter,
}

pub static ACCESS: JsonLines = JsonLines {
    name: "access log",
    target: OnceLock::new(),
    sink: OnceLock::new(),
    dropped: || &METRICS.access_log_dropped,
};

pub static AUDIT: JsonLines = JsonLines {
    name: "audit log",
    target: OnceLock::new(),
    sink: OnceLock::new(),
    dropped: || &METRICS.audit_log_dropped,
};

fn open(name: &str, path: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{name} {}: {e}", path.display()))
}

impl JsonLines {
    /// Choose where lines go; checks a file target can be opened. The writer thread starts
    /// with the first line, so it lives in the serving process even after `-d` forks.
    pub fn init(&self, target: &AccessLog) -> Result<(), String> {
        if let AccessLog::File(path) = target {
            open(self.name, path)?;
        }
        let _ = self.target.set(target.clone());
        Ok(())
    }

    fn start_writer(&self) -> Option<SyncSender<Vec<u8>>> {
        let out: Box<dyn Write + Send> = match self.target.get()? {
            AccessLog::Off => return None,
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => match open(self.name, path) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    log::error!("{e}; {} off", self.name);
                    return None;
                }
            },
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(65_536);
        match std::thread::Builder::new()
            .name(self.name.replace(' ', "-"))
            .spawn(move || writer(rx, out))
        {
            Ok(_) => Some(tx),
            Err(e) => {
                log::error!("{} thread: {e}; {} off", self.name, self.name);
                None
            }
        }
    }

    pub fn enabled(&self) -> bool {
        matches!(
            self.target.get(),
            Some(AccessLog::Stdout | AccessLog::File(_))
        )
    }

    pub fn write<T: Serialize>(&self, entry: &T) {
        let Some(tx) = self.sink.get_or_init(|| self.start_writer()) else {
            return;
        };
        let mut line = Vec::with_capacity(384);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return;
        }
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            (self.dropped)().inc();
        }
    }
}

fn writer(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    use std::sync::mpsc::TryRecvError;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    // Drain on a short tick instead of blocking in recv(): a blocked receiver makes every
    // request's send wake this thread (a futex call and a context switch per line, which
    // showed up as the largest single cost under load). Lines reach the file within a tick.
    loop {
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(&line);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
        std::thread::sleep(WRITER_TICK);
    }
}

/// How long queued lines may wait before they are written.
const WRITER_TICK: std::time::Duration = std::time::Duration::from_millis(20);
