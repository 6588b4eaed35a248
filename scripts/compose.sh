#!/usr/bin/env bash
# The compose stack with whichever engine this machine has: `docker compose` where a Docker
# engine answers, else podman-compose (installed into .venv by scripts/setup.sh compose).
#   scripts/compose.sh up            build the image, start the stack detached, wait until the
#                                    gateway answers with a backend behind it (--no-build: as built)
#   scripts/compose.sh down [-v]     stop and remove the containers (-v: the volumes too)
#   scripts/compose.sh scale N       run N backend replicas (the gateway follows by DNS)
#   scripts/compose.sh ARGS...       anything else goes to the engine: exec, logs, ps, stop ...
# Where no registry is reachable (podman here), the image is built from the host's release
# binaries on a Debian base made with debootstrap, and Prometheus and Alertmanager from Debian's packages
# (tests/containers/images.sh); with Docker, `up` builds the Dockerfile as it stands.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Where docker-compose.yml and .env are (the repository by default). COMPOSE_FILE and
# COMPOSE_PROJECT_NAME are read by both engines, e.g. COMPOSE_FILE=docker-compose.yml:conf/examples/compose-canary/docker-compose.canary.yml
cd "${COMPOSE_DIR:-$ROOT}"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
  compose() { docker compose "$@"; }
else
  ENGINE=podman
  source "$ROOT/tests/containers/env.sh"
  PC=$ROOT/.venv/bin/podman-compose
  [ -x "$PC" ] || PC=$(command -v podman-compose || true)
  [ -n "$PC" ] || { echo "compose: neither a Docker engine nor podman-compose: run scripts/setup.sh compose" >&2; exit 1; }
  # Images built locally (no registry): see tests/containers/images.sh.
  export PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-localhost/mcp-prometheus:latest}
  export ALERTMANAGER_IMAGE=${ALERTMANAGER_IMAGE:-localhost/mcp-alertmanager:latest}
  export IMAGE=${IMAGE:-localhost/mcp-gateway:latest}
  compose() { "$PC" "$@"; }
fi

PROJECT=${COMPOSE_PROJECT_NAME:-mcp-gateway}

# Both engines read .env. AUTH_TOKENS is required to create containers: say so in one line
# (podman-compose would print a traceback). Commands that create nothing get a placeholder,
# since the file cannot be read without a value.
env_has() { [ -n "${!1:-}" ] || grep -qE "^$1=.+" .env 2>/dev/null; }
case "${1:-}" in
  up|scale|run|create)
    env_has AUTH_TOKENS || {
      echo "compose: AUTH_TOKENS is not set: put AUTH_TOKENS=<token>[,<token>...] in .env (see .env.example; make one with: openssl rand -hex 24)" >&2
      exit 2
    } ;;
  *) env_has AUTH_TOKENS || export AUTH_TOKENS=unused-by-this-command ;;
esac

wait_ready() {
  local port=${HTTPS_PORT:-$(sed -n 's/^HTTPS_PORT=//p' .env 2>/dev/null | tail -n1)}
  port=${port:-443}
  local deadline=$((SECONDS + ${COMPOSE_WAIT:-120}))
  while [ $SECONDS -lt $deadline ]; do
    # /health is routed to a backend through the gateway: both tiers answer.
    if curl -ksf -o /dev/null "https://127.0.0.1:$port/health"; then
      echo "compose: the stack answers on https://127.0.0.1:$port ($ENGINE)"
      return 0
    fi
    sleep 1
  done
  echo "compose: no answer on https://127.0.0.1:$port after ${COMPOSE_WAIT:-120}s; logs:" >&2
  compose logs --tail 20 >&2 || true
  return 1
}

case "${1:-}" in
  up)
    shift
    # `up --no-build` uses the images as they are.
    if [[ " $* " == *" --no-build "* ]]; then
      compose up -d "$@"
    elif [ "$ENGINE" = docker ]; then
      compose up -d --build "$@"
    else
      bash "$ROOT/tests/containers/images.sh"
      compose up -d --no-build "$@"
    fi
    wait_ready
    ;;
  down)
    shift
    compose down "$@"
    ;;
  scale)
    n=${2:?usage: compose.sh scale N}
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] || { echo "compose: scale needs a positive number, got $n" >&2; exit 2; }
    if [ "$ENGINE" = docker ]; then
      compose up -d --no-recreate --scale "backend=$n"
    else
      # podman-compose creates missing replicas but never removes extra ones: stop (drain,
      # stop_grace_period) and remove those above N, highest first.
      compose up -d --no-build --no-recreate --scale "backend=$n" >/dev/null
      podman ps -a --filter "label=com.docker.compose.project=$PROJECT" \
          --filter label=com.docker.compose.service=backend \
          --format '{{.Names}} {{index .Labels "com.docker.compose.container-number"}}' |
      while read -r name idx; do
        if [[ $idx =~ ^[0-9]+$ ]] && [ "$idx" -gt "$n" ]; then
          podman stop -t 45 "$name" >/dev/null && podman rm "$name" >/dev/null
          echo "compose: removed $name"
        fi
      done
    fi
    ;;
  "")
    sed -n '2,11p' "$ROOT/scripts/compose.sh" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
  *)
    compose "$@"
    ;;
esac
