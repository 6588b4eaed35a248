-- wrk script for bench/backend.sh and bench/store.sh: MCP JSON-RPC tools/call of BENCH_TOOL on
-- POST /mcp (stateless Streamable HTTP), one call per request. BENCH_ARGS is the arguments
-- object; each "%KEY%" in it becomes a number drawn from 1..BENCH_KEYS, so calls spread over
-- seeded items. Without "%KEY%" the body is fixed and wrk runs no Lua per request (it would
-- cost the load generator more CPU than the server spends). No per-response hook either: the
-- scripts check one answer by hand, and wrk counts non-2xx answers as errors.
local tool = os.getenv("BENCH_TOOL") or "change.open"
local args = os.getenv("BENCH_ARGS") or '{"slug":"add-two-factor-auth"}'
local keys = tonumber(os.getenv("BENCH_KEYS") or "1000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local prefix = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":'

if string.find(args, "%KEY%", 1, true) then
  function request()
    local a = string.gsub(args, "%%KEY%%", tostring(math.random(1, keys)))
    return wrk.format(nil, nil, nil, prefix .. a .. '}}')
  end
else
  wrk.body = prefix .. args .. '}}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0,
    e.status + e.connect + e.read + e.write + e.timeout,
    e.connect + e.read + e.write + e.timeout))
end
