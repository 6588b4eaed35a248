#!/bin/bash
# The redis image's entrypoint (tini is pid 1, this script its child, then redis-server).
#   redis-server [ARGS]  the server in the foreground: every address (IPv6 where there is one),
#                        REDIS_PORT (6379), appendonly in /data, and with REDIS_PASSWORD set,
#                        `requirepass` (given on stdin, so it shows in no process list). Without
#                        a password it runs open with protected mode off and says so: only for
#                        a private network. ARGS are more options (e.g. --maxmemory 256mb).
#   healthcheck          redis-cli ping answers PONG (with the password)
#   anything else        run as given (redis-cli, bash, ...)
set -euo pipefail
PORT=${REDIS_PORT:-6379}

say() { printf 'redis: %s\n' "$*" >&2; }
fail() { say "$*"; exit 2; }

case "${1:-redis-server}" in
  healthcheck)
    [ -z "${REDIS_PASSWORD:-}" ] || export REDISCLI_AUTH=$REDIS_PASSWORD
    out=$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>&1) || { say "$out"; exit 1; }
    [ "$out" = PONG ] || { say "$out"; exit 1; }
    exit 0
    ;;
  redis-server | -*)
    [ "$1" != redis-server ] || shift
    [ -d /data ] && [ -w /data ] || fail "/data is not writable by uid $(id -u): mount a volume there owned by uid $(id -u) (or set fsGroup: $(id -g))"
    conf="bind * -::*
port $PORT
dir /data
appendonly yes
appendfsync everysec
save \"\""
    if [ -n "${REDIS_PASSWORD:-}" ]; then
      case "$REDIS_PASSWORD" in
        *$'\n'* | *$'\r'*) fail "REDIS_PASSWORD must be one line" ;;
      esac
      pw=${REDIS_PASSWORD//\\/\\\\}
      pw=${pw//\"/\\\"}
      conf+=$'\n'"protected-mode yes"$'\n'"requirepass \"$pw\""
    else
      say "WARNING: no REDIS_PASSWORD: anyone who reaches port $PORT may use this Redis (protected mode off). Set REDIS_PASSWORD, and redis://:PASSWORD@host:$PORT in the backend's REDIS_URL."
      conf+=$'\n'"protected-mode no"
    fi
    exec redis-server - "$@" <<<"$conf"
    ;;
  *)
    exec "$@"
    ;;
esac
