//! How the backend answered an MCP request at the MCP level. A tool that fails answers HTTP
//! 200 with `result.isError: true`, and a refused request answers a JSON-RPC `error` (HTTP 200
//! in an SSE stream, or under revisions before 2026-07-28): a status-based check never sees
//! either. The answer is scanned as it passes, never held back: a JSON body is copied up to
//! [`COPY_LIMIT`] bytes (beyond that only its first and last bytes are looked at), and an SSE
//! stream event by event (each event's data up to [`COPY_LIMIT`]), the last JSON-RPC response
//! in it deciding.

use pingora::http::ResponseHeader;
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Bytes of a JSON answer (or of one SSE event's data) copied for parsing.
pub const COPY_LIMIT: usize = 64 * 1024;
/// Bytes kept from each end of a JSON answer over the copy limit.
const EDGE: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A JSON-RPC result (not a failed tool call), or nothing recognisable in a 2xx answer.
    Ok,
    /// A `tools/call` result with `isError: true`.
    ToolError,
    /// A JSON-RPC error response.
    RpcError,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::RpcError => "rpc_error",
        }
    }

    /// Counts against a pool's tool-error ratio.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Ok)
    }
}

#[derive(Deserialize)]
struct Answer {
    method: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
    result: Option<AnswerResult>,
}

#[derive(Deserialize)]
struct AnswerResult {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
}

/// The outcome of one JSON-RPC message; None for a request or notification (SSE streams carry
/// those beside the response) or something that is not JSON-RPC.
fn judge(data: &[u8]) -> Option<Outcome> {
    // A batch is an array; anything else is one message. (Not an untagged enum: serde would
    // buffer the whole document to try each shape in turn.)
    let batch = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let answers = if batch {
        serde_json::from_slice::<Vec<Answer>>(data).ok()?
    } else {
        vec![serde_json::from_slice::<Answer>(data).ok()?]
    };
    let mut seen = None;
    for a in answers.iter().filter(|a| a.method.is_none()) {
        let o = if a.error.is_some() {
            Outcome::RpcError
        } else if a.result.as_ref().and_then(|r| r.is_error) == Some(true) {
            Outcome::ToolError
        } else if a.result.is_some() {
            Outcome::Ok
        } else {
            continue;
        };
        // In a batch, the worst answer decides.
        seen = Some(match (seen, o) {
            (Some(Outcome::RpcError), _) | (_, Outcome::RpcError) => Outcome::RpcError,
            (Some(Outcome::ToolError), _) | (_, Outcome::ToolError) => Outcome::ToolError,
            _ => Outcome::Ok,
        });
    }
    seen
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Scans one answer body as it passes.
pub enum Scanner {
    Json(JsonScan),
    Sse(SseScan),
}

#[derive(Default)]
pub struct JsonScan {
    copy: Vec<u8>,
    over: bool,
    tail: Vec<u8>,
}

#[derive(Default)]
pub struct SseScan {
    line: Vec<u8>,
    line_over: bool,
    data: Vec<u8>,
    data_over: bool,
    last: Option<Outcome>,
}

impl Scanner {
    /// A scanner for a 2xx answer in JSON or SSE that is not content-encoded; None otherwise.
    pub fn for_response(resp: &ResponseHeader) -> Option<Scanner> {
        if !resp.status.is_success() || resp.headers.contains_key(http::header::CONTENT_ENCODING) {
            return None;
        }
        match crate::edge::compress::media_type(resp) {
            "application/json" => Some(Scanner::Json(JsonScan::default())),
            "text/event-stream" => Some(Scanner::Sse(SseScan::default())),
            _ => None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Scanner::Json(j) => j.feed(chunk),
            Scanner::Sse(s) => s.feed(chunk),
        }
    }

    /// The outcome once the body has ended (or been cut): Ok when nothing says otherwise.
    pub fn finish(&mut self) -> Outcome {
        match self {
            Scanner::Json(j) => j.finish(),
            Scanner::Sse(s) => {
                s.end_line();
                s.dispatch();
                s.last.unwrap_or(Outcome::Ok)
            }
        }
    }

    /// The JSON answer's copy, when it was complete (for reading the `tools/list` names).
    pub fn json_body(&self) -> Option<&[u8]> {
        match self {
            Scanner::Json(j) if !j.over => Some(&j.copy),
            _ => None,
        }
    }
}

impl JsonScan {
    fn feed(&mut self, chunk: &[u8]) {
        if !self.over && self.copy.len() + chunk.len() <= COPY_LIMIT {
            self.copy.extend_from_slice(chunk);
            return;
        }
        if !self.over {
            self.over = true;
            self.copy.truncate(EDGE);
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > EDGE {
            self.tail.drain(..self.tail.len() - EDGE);
        }
    }

    fn finish(&mut self) -> Outcome {
        if !self.over {
            return judge(&self.copy).unwrap_or(Outcome::Ok);
        }
        // Too large to copy: a JSON-RPC error names `error` near its start, and a tool result
        // (rmcp, the SDKs) ends with its `isError` member.
        let squeeze = |b: &[u8]| -> Vec<u8> {
            b.iter()
                .copied()
                .filter(|c| !c.is_ascii_whitespace())
                .collect()
        };
        if contains(&squeeze(&self.copy), b"\"error\":{") {
            Outcome::RpcError
        } else if contains(&squeeze(&self.tail), b"\"isError\":true") {
            Outcome::ToolError
        } else {
            Outcome::Ok
        }
    }
}

impl SseScan {
    fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(i) = chunk.iter().position(|b| *b == b'\n') {
            self.push_line(&chunk[..i]);
            self.end_line();
            chunk = &chunk[i + 1..];
        }
        self.push_line(chunk);
    }

    fn push_line(&mut self, part: &[u8]) {
        if self.line_over || self.line.len() + part.len() > COPY_LIMIT {
            self.line_over = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    /// One line is complete (RFC: lines end in LF, CRLF or CR; LF and CRLF are what servers send).
    fn end_line(&mut self) {
        let over = std::mem::take(&mut self.line_over);
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if over {
            self.data_over = true;
        } else if line.is_empty() {
            self.dispatch();
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if self.data.len() + rest.len() + 1 > COPY_LIMIT {
                self.data_over = true;
            } else {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
            }
        }
        self.line = line;
        self.line.clear();
    }

    /// The end of an event: its data, if whole, may be the JSON-RPC response.
    fn dispatch(&mut self) {
        if !self.data_over && !self.data.is_empty() {
            if let Some(o) = judge(&self.data) {
                self.last = Some(o);
            }
        }
        self.data.clear();
        self.data_over = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Outcome {
        let mut s = Scanner::Json(JsonScan::default());
        for part in body.as_bytes().chunks(7) {
            s.feed(part);
        }
        s.finish()
    }

    fn sse(body: &str, split: usize) -> Outcome {
        let mut s = Scanner::Sse(SseScan::default());
        for part in body.as_bytes().chunks(split) {
            s.feed(part);
        }
        s.finish()
    }

    #[test]
    fn json_answers() {
        assert_eq!(
            json(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#),
            Outcome::Ok
        );
        assert_eq!(
            json(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#),
            Outcome::ToolError
        );
        assert_eq!(
            json(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#),
            Outcome::RpcError
        );
        assert_eq!(
            json(
                r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":""}}]"#
            ),
            Outcome::RpcError
        );
        assert_eq!(json("not json"), Outcome::Ok);
        // Past the copy limit: the ends decide.
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{}"}}],"isError": true}}}}"#,
            "x".repeat(COPY_LIMIT * 2)
        );
        assert_eq!(json(&big), Outcome::ToolError);
        let big_ok = big.replace("true", "false");
        assert_eq!(json(&big_ok), Outcome::Ok);
    }

    #[test]
    fn sse_last_response_decides() {
        let stream = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
                      : heartbeat\n\n\
                      data: {\"jsonrpc\":\"2.0\",\"id\":3,\r\ndata: \"result\":{\"isError\":true,\"content\":[]}}\r\n\r\n";
        for split in [1, 3, 17, 1000] {
            assert_eq!(sse(stream, split), Outcome::ToolError, "split {split}");
        }
        let ok = "data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[]}}\n\n";
        assert_eq!(sse(ok, 5), Outcome::Ok);
        // An event cut by the end of the stream still counts.
        let cut = "data: {\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-1,\"message\":\"\"}}";
        assert_eq!(sse(cut, 4), Outcome::RpcError);
        // An oversized event is skipped, not half-parsed.
        let huge = format!("data: {}\n\n{ok}", "y".repeat(COPY_LIMIT + 10));
        assert_eq!(sse(&huge, 4096), Outcome::Ok);
    }
}
