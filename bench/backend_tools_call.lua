-- wrk script for bench/backend.sh: MCP JSON-RPC tools/call of change.open on POST /mcp
-- (stateless Streamable HTTP, JSON response), one call per request. No per-response Lua hook:
-- it would cost the load generator more CPU than the server spends; bench/backend.sh checks
-- one answer by hand, and wrk counts non-2xx answers as errors.
local slug = os.getenv("BENCH_SLUG") or "add-two-factor-auth"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"change.open","arguments":{"slug":"' .. slug .. '"}}}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0,
    e.status + e.connect + e.read + e.write + e.timeout,
    e.connect + e.read + e.write + e.timeout))
end
