//! Runs one tool call for every transport: metrics, where the call runs, the time limit, the
//! response size limit and progress forwarding all live here, so MCP, the 2024-11-05 SSE
//! transport and the Task MCP API behave the same.
//!
//! Who calls: every transport passes the caller's identity (`caller::Caller`, set by `guard`),
//! which the tool sees in its context; the todo tools file rows under it.
//!
//! Where a call runs: the OpenSpec tools are synchronous filesystem work. The read-only tools
//! (a handful of small file reads) run inline on the async worker: a thread hop would cost more
//! than the read and the throughput target is 10k calls/s on 2 cores. Writers and any tool not
//! known to be a cheap read (change.archive, task.update, the todo tools, which wait on a
//! database) run on the blocking pool.
//!
//! Time limit (REQUEST_TIMEOUT_MS): applies to calls on the blocking pool. When it expires
//! the caller gets TIMEOUT (504); the filesystem work itself cannot be interrupted and may still
//! complete (an archive is all-or-nothing either way), which the error's hint says.
//!
//! Response size limit (MAX_RESPONSE_SIZE_KB): the size of a result is the byte length of its
//! structured JSON plus its text block. A larger result is not sent, not truncated: the caller
//! gets RESPONSE_TOO_LARGE (HTTP 422 outside JSON-RPC, an `isError` tool result inside MCP)
//! naming the size and the limit, with a hint to raise the limit or ask for less. 422 and not
//! 5xx so the gateway's passive health checks do not mark a healthy replica as failing.

use crate::api_error::ApiError;
use crate::caller::Caller;
use crate::metrics::Metrics;
use crate::tools::{Progress, Registry, ToolOutput};
use crate::trace::RequestSpan;
use axum::http::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// One progress report from a running tool.
#[derive(Debug, Clone)]
pub struct ProgressUpdate {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// Forwards the tool's synchronous reports to whoever streams them.
struct ChannelProgress(Option<UnboundedSender<ProgressUpdate>>);

impl Progress for ChannelProgress {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        if let Some(tx) = &self.0 {
            // The receiver is gone when the client left: nothing to tell anyone then.
            let _ = tx.send(ProgressUpdate {
                progress,
                total,
                message: message.map(str::to_string),
            });
        }
    }
}

pub struct Executor {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    max_response_bytes: usize,
}

/// Keeps `tool_active_executions` right even when the caller's future is dropped mid-call.
struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.tool_active.dec();
    }
}

impl Executor {
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Executor {
        Executor {
            registry,
            metrics,
            timeout,
            max_response_bytes,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registered name (a `&'static str`, safe as a metric label) of a known tool.
    pub fn tool_name(&self, name: &str) -> Option<&'static str> {
        self.registry
            .list()
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.name)
    }

    /// Runs `name` with `input`. Progress reports go to `progress` when given; they are all sent
    /// before this returns, so a caller that drains the channel after the call keeps the order.
    /// `span` is the request's (`trace`): the call's span is its child.
    pub async fn call(
        &self,
        name: &str,
        input: Value,
        caller: &Caller,
        progress: Option<UnboundedSender<ProgressUpdate>>,
        span: Option<RequestSpan>,
    ) -> Result<ToolOutput, ApiError> {
        let Some(tool) = self.tool_name(name) else {
            return Err(ApiError::unknown_tool(name));
        };
        self.metrics.tool_active.inc();
        let _active = ActiveGuard(&self.metrics);
        let traced = crate::trace::start_tool(span);
        let started = Instant::now();
        let result = self
            .run(tool, input, caller, progress)
            .await
            .and_then(|out| self.check_size(tool, out));
        self.metrics
            .tool_duration
            .with_label_values(&[tool])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code.to_ascii_lowercase(),
        };
        self.metrics
            .tool_executions
            .with_label_values(&[tool, &outcome])
            .inc();
        if let Some(t) = traced {
            let error = result.as_ref().err().map(|e| (e.code, e.message.as_str()));
            crate::trace::end_tool(t, tool, &outcome, error);
        }
        result
    }

    async fn run(
        &self,
        tool: &'static str,
        input: Value,
        caller: &Caller,
        progress: Option<UnboundedSender<ProgressUpdate>>,
    ) -> Result<ToolOutput, ApiError> {
        let progress = ChannelProgress(progress);
        if self.registry.runs_inline(tool) {
            return self
                .registry
                .call_as(tool, input, caller, &progress)
                .map_err(ApiError::from);
        }
        let registry = self.registry.clone();
        let caller = caller.clone();
        let job =
            tokio::task::spawn_blocking(move || registry.call_as(tool, input, &caller, &progress));
        match tokio::time::timeout(self.timeout, job).await {
            Ok(Ok(result)) => result.map_err(ApiError::from),
            Ok(Err(join_error)) => {
                log::error!("tool {tool} panicked or was cancelled: {join_error}");
                Err(ApiError::internal(format!("tool {tool} failed unexpectedly")))
            }
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "TIMEOUT",
                format!("tool {tool} did not finish within {} ms", self.timeout.as_millis()),
            )
            .with_hint(
                "the work may still complete in the background; check its effect (e.g. change.list) \
                 before retrying, or raise REQUEST_TIMEOUT_MS",
            )),
        }
    }

    fn check_size(&self, tool: &str, out: ToolOutput) -> Result<ToolOutput, ApiError> {
        let size = json_len(&out.structured) + out.text.len();
        if size <= self.max_response_bytes {
            return Ok(out);
        }
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "RESPONSE_TOO_LARGE",
            format!(
                "the result of {tool} is {size} bytes, above the limit of {} bytes",
                self.max_response_bytes
            ),
        )
        .with_hint(format!(
            "raise MAX_RESPONSE_SIZE_KB (now {} KB) or request a smaller piece",
            self.max_response_bytes / 1024
        )))
    }
}

/// Length of `value` as compact JSON, not counting escape sequences (a `\n` in a string
/// counts as one byte): a walk over the value, several times cheaper than serializing it,
/// exact for the ASCII text the tools return except for escapes.
fn json_len(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
        Value::Number(n) => number_len(n),
        Value::String(s) => s.len() + 2,
        // Brackets plus the commas between items.
        Value::Array(items) => {
            2 + items.len().saturating_sub(1) + items.iter().map(json_len).sum::<usize>()
        }
        // Braces, commas, and per entry a quoted key and a colon.
        Value::Object(map) => {
            2 + map.len().saturating_sub(1)
                + map
                    .iter()
                    .map(|(k, v)| k.len() + 3 + json_len(v))
                    .sum::<usize>()
        }
    }
}

fn number_len(n: &serde_json::Number) -> usize {
    if let Some(u) = n.as_u64() {
        u.checked_ilog10().map_or(1, |d| d as usize + 1)
    } else if let Some(i) = n.as_i64() {
        // Negative: the sign plus the digits.
        1 + i
            .unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1)
    } else {
        n.to_string().len()
    }
}

#[cfg(test)]
mod tests {
    use super::json_len;
    use serde_json::json;

    #[test]
    fn json_len_matches_serialization_without_escapes() {
        for v in [
            json!(null),
            json!({"a": [1, 22, -333, 4.5, true, false, null], "bb": {"c": "text"}, "e": []}),
            json!([]),
            json!({}),
            json!(0),
            json!(u64::MAX),
        ] {
            assert_eq!(json_len(&v), v.to_string().len(), "{v}");
        }
    }
}
