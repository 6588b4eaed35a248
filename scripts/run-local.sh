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
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/run
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
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
stop() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping (pids ${pids[*]:-none})"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit 0
}
trap stop INT TERM EXIT

for port in 3001 3002; do
  PORT=$port "$BIN/backend" > "$RUN/logs/backend-$port.log" 2>&1 &
  pids+=($!)
done
# The JSON access log (stdout) and the program log (stderr) in separate files.
"$BIN/gateway" -c "$ROOT/conf/local.toml" > "$RUN/logs/access.log" 2> "$RUN/logs/gateway.log" &
pids+=($!)

# Wait for the gateway's admin port to say it is ready (every route has a healthy backend).
ready=
for _ in $(seq 1 150); do
  if curl -fsS -o /dev/null http://127.0.0.1:9464/readyz 2>/dev/null; then ready=1; break; fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "run: a process exited; logs in run/logs:"; tail -n 20 "$RUN"/logs/*.log; exit 1; }
  done
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "run: the gateway did not report ready within 15 s (http://127.0.0.1:9464/readyz); logs in run/logs:"
  tail -n 20 "$RUN"/logs/*.log
  exit 1
fi

first_token=${AUTH_TOKENS%%,*}
cat <<EOF

  Stack is up (logs in run/logs/: gateway.log, access.log, backend-*.log; Ctrl-C stops everything)

  MCP endpoint     https://localhost:8443/mcp        (self-signed: curl -k, or --cacert run/tls/cert.pem)
  Legacy SSE API   https://localhost:8443/sse
  HTTP redirect    http://localhost:8080/  -> https
  Gateway admin    http://127.0.0.1:9464/metrics  /status  /readyz
  Backends         http://127.0.0.1:3001  http://127.0.0.1:3002  (/metrics, /health)
  Bearer token     $first_token

  Try:
    curl --cacert run/tls/cert.pem https://localhost:8443/mcp \\
      -H "Authorization: Bearer $first_token" -H 'Content-Type: application/json' \\
      -d '{"tool":"change.list","input":{}}'

EOF
# Exit (and stop the rest) as soon as any process dies.
wait -n "${pids[@]}" || true
echo "run: a process exited; see run/logs"
stop
