#!/usr/bin/env bash
# The item store under load: MCP tools/call of create_task (a write) and memory_recall (a read
# by key over seeded memories) on one backend replica, on SQLite (WAL, the default) and on
# PostgreSQL (Debian's server, started here on a free loopback port with its default
# durability: fsync and synchronous_commit on). wrk beside the server on loopback.
# Prints calls/s, p50 and p99 per store and tool, and checks every write landed.
#
#   bash bench/store.sh                         # defaults below
#   CONNECTIONS=16 DURATION=10 bash bench/store.sh
#
# Everything started here is stopped by pid; the data lives in a temp dir removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-1}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
KEYS=${KEYS:-1000}
BIN=${BIN:-target/release/backend}
TOKEN=bench-store-token-0123456789

command -v wrk >/dev/null || { echo "bench: installing wrk"; apt-get install -y -qq wrk >/dev/null; }
[ -x "$BIN" ] || { echo "bench: $BIN missing: run cargo build --release -p backend" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/postgres" ] || { echo "bench: PostgreSQL missing: run scripts/setup.sh bench" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
backend_pid=""
pg_pid=""
stop_backend() {
  if [ -n "$backend_pid" ]; then kill "$backend_pid" 2>/dev/null || true; wait "$backend_pid" 2>/dev/null || true; fi
  backend_pid=""
}
cleanup() {
  stop_backend
  if [ -n "$pg_pid" ]; then kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# PostgreSQL refuses to run as root: as root, exec as the postgres user in place (setpriv, not
# runuser, which would stay as a parent and not pass our signals on).
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid postgres --regid postgres --init-groups -- "$@"; else "$@"; fi; }

# PostgreSQL: a private cluster, one role and database for the backend.
pg_port=$(free_port)
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust >/dev/null
# In the background with its own pid in $pg_pid (setpriv execs; a function would add a shell).
pg_args=(-D "$work/pg/data" -p "$pg_port" -k "$work/pg" -c listen_addresses=127.0.0.1 -c max_connections=100)
if [ "$(id -u)" = 0 ]; then
  setpriv --reuid postgres --regid postgres --init-groups -- "$pgbin/postgres" "${pg_args[@]}" >"$work/pg.log" 2>&1 &
else
  "$pgbin/postgres" "${pg_args[@]}" >"$work/pg.log" 2>&1 &
fi
pg_pid=$!
for _ in $(seq 100); do
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
  sleep 0.1
done
"$pgbin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" \
  -c "CREATE DATABASE bench OWNER bench" >/dev/null

start_backend() { # $1 = extra env (DATABASE_URL=... or nothing)
  rm -rf "$work/ws"; cp -r examples/workspace "$work/ws"
  port=$(free_port)
  env PORT="$port" HOST=127.0.0.1 WORKING_DIRECTORY="$work/ws" LOG_LEVEL=warn ACCESS_LOG=off \
    TOOLS=todo,memory AUTH_TOKENS="bench:$TOKEN" $1 "$BIN" >"$work/backend.log" 2>&1 &
  backend_pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.05
  done
  curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null || { cat "$work/backend.log"; exit 1; }
  url="http://127.0.0.1:$port/mcp"
}

call() { # $1 tool, $2 arguments JSON; prints the response
  curl -fs "$url" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2025-06-18' -H "authorization: Bearer $TOKEN" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":$2}}"
}

run_wrk() { # $1 tool, $2 args template; sets rps p50 p99 errors requests
  export BENCH_TOOL=$1 BENCH_ARGS=$2 BENCH_KEYS=$KEYS BENCH_TOKEN=$TOKEN
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/tools_call.lua "$url" >/dev/null
  local out result
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/tools_call.lua "$url")
  result=$(grep '^RESULT' <<<"$out")
  requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$result")
  rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$result")
  p50=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$result")
  p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$result")
  errors=$(sed -E 's/.*errors=([0-9]+) .*/\1/' <<<"$result")
}

echo "item store: MCP tools/call on one backend replica, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, loopback"
printf "  %-10s %-14s %10s %9s %9s %7s\n" store tool calls/s p50_ms p99_ms errors
for store in sqlite postgres; do
  if [ "$store" = postgres ]; then
    start_backend "DATABASE_URL=postgres://bench:bench@127.0.0.1:$pg_port/bench DATABASE_POOL_SIZE=16"
  else
    start_backend ""
  fi
  # Seed KEYS memories (one call each would take long: a JSON-RPC batch is not served, so a
  # small parallel loop).
  seq 1 "$KEYS" | xargs -P 8 -I{} curl -fs -o /dev/null "$url" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \
    -H "authorization: Bearer $TOKEN" \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"memory_remember","arguments":{"key":"k-{}","value":"seeded value {}","tags":["bench"]}}}'
  call memory_recall '{"key":"k-1"}' | grep -q '"isError":false' || { echo "bench: memory_recall failed on $store" >&2; cat "$work/backend.log" >&2; exit 1; }
  call create_task '{"title":"bench"}' | grep -q '"isError":false' || { echo "bench: create_task failed on $store" >&2; exit 1; }

  run_wrk create_task '{"title":"bench task %KEY%"}'
  printf "  %-10s %-14s %10s %9s %9s %7s\n" "$store" create_task "$rps" "$p50" "$p99" "$errors"
  [ "$errors" = 0 ] || { echo "bench: $errors failed calls" >&2; exit 1; }
  # Every write landed: the database holds at least the creates measured.
  if [ "$store" = postgres ]; then
    stored=$("$pgbin/psql" -tAq -h 127.0.0.1 -p "$pg_port" -U postgres -d bench -c 'SELECT count(*) FROM tasks')
  else
    stored=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM tasks").fetchone()[0])' "$work/ws/.mcp/store.sqlite3")
  fi
  [ "$stored" -ge "$requests" ] || { echo "bench: $store holds $stored tasks after $requests measured creates" >&2; exit 1; }

  run_wrk memory_recall '{"key":"k-%KEY%"}'
  printf "  %-10s %-14s %10s %9s %9s %7s\n" "$store" memory_recall "$rps" "$p50" "$p99" "$errors"
  [ "$errors" = 0 ] || { echo "bench: $errors failed calls" >&2; exit 1; }
  stop_backend
done
echo "  (every measured create_task is in the database; PostgreSQL with fsync on, SQLite WAL with synchronous=NORMAL)"
