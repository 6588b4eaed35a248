#!/usr/bin/env bash
# `make run`: the whole stack on loopback, from the release binaries.
#   gateway  HTTP 127.0.0.1:8080 (-> HTTPS), HTTPS 127.0.0.1:8443, admin 127.0.0.1:9464
#   backend  replicas on 127.0.0.1:3001 and 127.0.0.1:3002
# State lives in ./run (git-ignored): the TLS certificate, a copy of the
# example OpenSpec workspace, the token, pid files and logs.
# Environment passed to the backends: AUTH_TOKENS, ALLOWED_ORIGINS, ALLOWED_HOSTS (the
# backends listen on 127.0.0.1, so only localhost names pass unless it lists the public
# name the gateway is reached by), HEARTBEAT_MS, RATE_LIMIT, MAX_RESPONSE_SIZE_KB, MAX_REQUEST_SIZE_KB, REQUEST_TIMEOUT_MS,
# LOG_LEVEL. Ctrl-C or SIGTERM stops everything.
#   CONFIG=FILE       the gateway's configuration (default conf/local.toml; a path relative to
#                     the repository root). It must keep make run's addresses, as
#                     conf/examples/canary.toml and blue-green.toml do: stable/blue on :3001,
#                     canary/green on :3002, admin on 127.0.0.1:9464.
#   NEW_BACKEND=BIN   the backend binary (or a script that execs one) for the replica on :3002,
#                     the canary/green pool of those examples: the new version beside the
#                     current one (default: the same build as :3001).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/run
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CONFIG=${CONFIG:-conf/local.toml}
NEW_BACKEND=${NEW_BACKEND:-$BIN/backend}
ADMIN=http://127.0.0.1:9464

# A stack already on these ports (an earlier make run) would answer the readiness check below
# in place of this one.
for port in 8080 8443 9464 3001 3002; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run: 127.0.0.1:$port is already in use (another make run?): stop it first" >&2
    exit 1
  fi
done
[ -e "$CONFIG" ] || { echo "run: CONFIG=$CONFIG: no such file" >&2; exit 1; }
[ -x "$NEW_BACKEND" ] || { echo "run: NEW_BACKEND=$NEW_BACKEND is not an executable file" >&2; exit 1; }
mkdir -p "$RUN/tls" "$RUN/logs"
# Keep the previous run's logs one generation back instead of overwriting them.
for f in "$RUN"/logs/*.log; do
  [ -e "$f" ] && mv -f "$f" "$f.1"
done

if [ ! -s "$RUN/tls/cert.pem" ] || [ ! -s "$RUN/tls/key.pem" ]; then
  echo "run: making a self-signed certificate for localhost in run/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -keyout "$RUN/tls/key.pem.tmp" -out "$RUN/tls/cert.pem.tmp" 2>/dev/null
  mv "$RUN/tls/key.pem.tmp" "$RUN/tls/key.pem"
  mv "$RUN/tls/cert.pem.tmp" "$RUN/tls/cert.pem"
fi

if [ ! -d "$RUN/workspace/openspec" ]; then
  echo "run: copying the example OpenSpec workspace to run/workspace"
  rm -rf "$RUN/workspace.tmp"
  cp -a "$ROOT/examples/workspace" "$RUN/workspace.tmp"
  mv "$RUN/workspace.tmp" "$RUN/workspace"
fi

if [ -z "${AUTH_TOKENS:-}" ]; then
  if [ ! -s "$RUN/token" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/token")
  fi
  AUTH_TOKENS=$(cat "$RUN/token")
fi
export AUTH_TOKENS
export HEARTBEAT_MS=${HEARTBEAT_MS:-25000}
export LOG_LEVEL=${LOG_LEVEL:-info}
export WORKING_DIRECTORY=$RUN/workspace
export HOST=127.0.0.1

pids=()
# Stops every process by pid. Ctrl-C and SIGTERM exit 0; an exit on a failure keeps its status.
stop() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping (pids ${pids[*]:-none})"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit "$1"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

# The certificate exists now: check the configuration before starting anything.
if ! check=$("$BIN/gateway" -t -c "$CONFIG" 2>&1); then
  echo "$check" >&2
  echo "run: fix $CONFIG, then make run again" >&2
  exit 1
fi

PORT=3001 "$BIN/backend" > "$RUN/logs/backend-3001.log" 2>&1 &
pids+=($!)
PORT=3002 "$NEW_BACKEND" > "$RUN/logs/backend-3002.log" 2>&1 &
pids+=($!)
# The JSON access log (stdout) and the program log (stderr) in separate files.
"$BIN/gateway" -c "$CONFIG" > "$RUN/logs/access.log" 2> "$RUN/logs/gateway.log" &
pids+=($!)

# Ready when both backends answer their own /readyz and then the gateway's admin port says every
# route has a healthy backend. The backends are asked first: the gateway counts a backend as
# healthy until its first health checks fail, so its /readyz alone can say ready for a moment
# while a backend is still starting or never answers.
not_ready() {
  local url
  for url in http://127.0.0.1:3001/readyz http://127.0.0.1:3002/readyz "$ADMIN/readyz"; do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null || { echo "$url"; return 0; }
  done
  return 1
}
waiting=
for _ in $(seq 1 150); do
  waiting=$(not_ready) || { waiting=; break; }
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "run: a process exited; logs in run/logs:"; tail -n 20 "$RUN"/logs/*.log; exit 1; }
  done
  sleep 0.1
done
if [ -n "$waiting" ]; then
  echo "run: not ready within 15 s: $waiting answers $(curl -sS --max-time 2 "$waiting" 2>&1 | head -c 300); logs in run/logs:"
  tail -n 20 "$RUN"/logs/*.log
  exit 1
fi

first_token=${AUTH_TOKENS%%,*}
new_note=
[ "$NEW_BACKEND" = "$BIN/backend" ] || new_note="
                   :3002 runs $NEW_BACKEND"
cat <<EOF

  Stack is up (logs in run/logs/: gateway.log, access.log, backend-*.log; Ctrl-C stops everything)

  MCP endpoint     https://localhost:8443/mcp        (self-signed: curl -k, or --cacert run/tls/cert.pem)
  Legacy SSE API   https://localhost:8443/sse
  HTTP redirect    http://localhost:8080/  -> https
  Gateway admin    http://127.0.0.1:9464/metrics  /status  /readyz
  Backends         http://127.0.0.1:3001  http://127.0.0.1:3002  (/metrics, /health)$new_note
  Bearer token     $first_token (also in run/token unless AUTH_TOKENS is set)
  Config           $CONFIG
                   reload: target/release/gateway -t -c $CONFIG && target/release/gateway -s reload -c $CONFIG

  Try:
    curl --cacert run/tls/cert.pem https://localhost:8443/mcp \\
      -H "Authorization: Bearer $first_token" -H 'Content-Type: application/json' \\
      -d '{"tool":"change.list","input":{}}'

EOF
# Exit (and stop the rest) as soon as any process dies.
wait -n "${pids[@]}" || true
echo "run: a process exited; see run/logs"
stop 1
