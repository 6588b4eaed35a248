#!/usr/bin/env bash
# Backend throughput: MCP tools/call of change.open over POST /mcp (stateless Streamable HTTP,
# JSON-RPC, one call per request) at fixed concurrency, on loopback, with wrk beside the server.
# Prints calls/s, p50, p99 and the backend's CPU seconds per 10k calls.
#
#   bash bench/backend.sh                      # defaults below
#   CONNECTIONS=64 DURATION=10 bash bench/backend.sh
#
# The backend is the release binary over a private copy of examples/workspace, access log on
# (written to a file, as in production). Everything started here is stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SLUG=${SLUG:-add-two-factor-auth}
BIN=${BIN:-target/release/backend}

command -v wrk >/dev/null || { echo "bench: installing wrk"; apt-get install -y -qq wrk >/dev/null; }
[ -x "$BIN" ] || { echo "bench: $BIN missing: run cargo build --release -p backend" >&2; exit 1; }

work=$(mktemp -d)
backend_pid=""
cleanup() {
  [ -n "$backend_pid" ] && kill "$backend_pid" 2>/dev/null && wait "$backend_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cp -r examples/workspace "$work/workspace"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PORT=$port HOST=127.0.0.1 WORKING_DIRECTORY="$work/workspace" LOG_LEVEL=warn \
  "$BIN" >"$work/access.log" 2>"$work/backend.err" &
backend_pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/backend.err"; exit 1; }

url="http://127.0.0.1:$port/mcp"
script=bench/tools_call.lua
# One call by hand: the request must succeed before it is measured.
body="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"change.open\",\"arguments\":{\"slug\":\"$SLUG\"}}}"
curl -fs "$url" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  -H 'mcp-protocol-version: 2025-06-18' -d "$body" | grep -q '"structuredContent"' \
  || { echo "bench: tools/call change.open failed" >&2; exit 1; }

export BENCH_TOOL=change.open BENCH_ARGS="{\"slug\":\"$SLUG\"}"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$script" "$url" >/dev/null

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$backend_pid/stat"; }
cpu_before=$(cpu)
out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$script" "$url")
cpu_after=$(cpu)

result=$(grep '^RESULT' <<<"$out")
requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$result")
rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$result")
p50=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$result")
p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$result")
errors=$(sed -E 's/.*errors=([0-9]+) .*/\1/' <<<"$result")
cpu_per_10k=$(awk -v a="$cpu_before" -v b="$cpu_after" -v t="$ticks" -v n="$requests" \
  'BEGIN { if (n > 0) printf "%.3f", (b - a) / t / n * 10000; else print "n/a" }')

echo "backend tools/call change.open over POST /mcp (JSON-RPC, stateless Streamable HTTP)"
echo "  wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, loopback, access log on"
printf "  calls/s %s   p50 %s ms   p99 %s ms   errors %s   backend CPU %s s per 10k calls\n" \
  "$rps" "$p50" "$p99" "$errors" "$cpu_per_10k"
[ "$errors" = 0 ] || { echo "bench: $errors failed calls" >&2; exit 1; }
