//! A small OTLP/HTTP receiver for the tracing tests: an HTTP/1.1 server on a free loopback port
//! that records every POSTed JSON `ExportTraceServiceRequest` and answers `200 {}` as a
//! collector does. Spans are read back flattened, each with its resource's `service.name`.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One POST as received.
#[derive(Clone, Debug)]
pub struct Export {
    pub path: String,
    pub content_type: String,
    pub body: Value,
}

/// One span of an export, with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct RecordedSpan {
    pub service: String,
    pub span: Value,
}

impl RecordedSpan {
    pub fn trace_id(&self) -> &str {
        self.span["traceId"].as_str().unwrap_or("")
    }
    pub fn span_id(&self) -> &str {
        self.span["spanId"].as_str().unwrap_or("")
    }
    /// The parent span id; None for a root span.
    pub fn parent(&self) -> Option<&str> {
        self.span["parentSpanId"].as_str().filter(|p| !p.is_empty())
    }
    pub fn name(&self) -> &str {
        self.span["name"].as_str().unwrap_or("")
    }
    pub fn kind(&self) -> i64 {
        self.span["kind"].as_i64().unwrap_or(0)
    }
    /// `status.code` (0 when unset).
    pub fn status_code(&self) -> i64 {
        self.span["status"]["code"].as_i64().unwrap_or(0)
    }
    /// An attribute's value as text, whatever its type (`intValue` is a string in OTLP JSON).
    pub fn attr(&self, key: &str) -> Option<String> {
        let a = self.span["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)?;
        let v = &a["value"];
        for k in ["stringValue", "intValue"] {
            if let Some(s) = v[k].as_str() {
                return Some(s.to_string());
            }
        }
        if let Some(b) = v["boolValue"].as_bool() {
            return Some(b.to_string());
        }
        v["intValue"].as_i64().map(|n| n.to_string())
    }
}

pub struct OtlpReceiver {
    pub port: u16,
    exports: Arc<Mutex<Vec<Export>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        let port = listener.local_addr().expect("local addr").port();
        let exports: Arc<Mutex<Vec<Export>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (exports2, stop2) = (exports.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let exports = exports2.clone();
                thread::spawn(move || receive(stream, &exports));
            }
        });
        OtlpReceiver {
            port,
            exports,
            stop,
            accept: Some(accept),
        }
    }

    /// The traces endpoint to configure.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    pub fn exports(&self) -> Vec<Export> {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every span received so far, in order.
    pub fn spans(&self) -> Vec<RecordedSpan> {
        let mut out = Vec::new();
        for e in self.exports() {
            for rs in e.body["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or("")
                    .to_string();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        out.push(RecordedSpan {
                            service: service.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The spans of `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<RecordedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect()
    }

    /// Waits until `trace_id` has at least `n` spans; fails with what arrived otherwise.
    pub fn wait_trace(&self, trace_id: &str, n: usize, timeout: Duration) -> Vec<RecordedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.trace(trace_id);
            if spans.len() >= n {
                return spans;
            }
            if Instant::now() > deadline {
                panic!(
                    "trace {trace_id}: {} of {n} spans within {timeout:?}; received: {:#?}",
                    spans.len(),
                    self.spans()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Reads requests from one connection (keep-alive or not) and answers each.
fn receive(stream: TcpStream, exports: &Mutex<Vec<Export>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some(head) = crate::http1::read_head(&mut reader) else {
            return;
        };
        let length = head.content_length();
        let content_type = head.header("content-type").unwrap_or("").to_string();
        let close = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (method, path) = (head.method, head.path);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let parsed = serde_json::from_slice::<Value>(&body);
        let (status, answer) = match (&*method, parsed) {
            ("POST", Ok(v)) => {
                exports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Export {
                        path,
                        content_type,
                        body: v,
                    });
                ("200 OK", "{}")
            }
            _ => (
                "400 Bad Request",
                r#"{"code":3,"message":"not an OTLP JSON POST"}"#,
            ),
        };
        let _ = write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if close {
            let _ = writer.flush();
            return;
        }
    }
}
