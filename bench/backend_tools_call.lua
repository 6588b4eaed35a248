-- wrk script for bench/backend.sh: MCP JSON-RPC tools/call of change.open over POST /mcp
-- (stateless Streamable HTTP, JSON response), one request per call.
local slug = os.getenv("BENCH_SLUG") or "add-login"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"change.open","arguments":{"slug":"' .. slug .. '"}}}'

local errors = 0
function response_checked(status, headers, body)
  if status ~= 200 or not string.find(body, '"structuredContent"', 1, true) then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local p50 = latency:percentile(50) / 1000.0
  local p99 = latency:percentile(99) / 1000.0
  io.write(string.format("RESULT requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    p50, p99, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
