#!/usr/bin/env bash
# Installs what a fresh machine lacks, idempotently: build tools for Pingora
# (cmake for zlib-ng), the CLI clients the tests use, and the Python venv with
# the official MCP SDK. Pass "bench" to also install nginx, wrk, h2load and PostgreSQL; "compose" installs
# podman, runc, debootstrap and podman-compose for the container stack; "test" does all, plus
# Node 22 and the npm packages of tests/conformance (scripts/node.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in cmake:cmake curl:curl openssl:openssl pkg-config:pkg-config; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# Pingora's openssl feature links against the system libssl.
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
if [ "${1:-}" = bench ] || [ "${1:-}" = test ]; then
  command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
  command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
  command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
  # PostgreSQL's server binaries (the item store's second backend): backend_todo and
  # backend_memory start their own server from them, and so does bench/store.sh.
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_apt+=(postgresql)
fi
if [ "${1:-}" = bench ]; then
  # bench/cost.sh counts instructions per request under callgrind (callgrind_annotate too).
  command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
fi
if [ "${1:-}" = test ]; then
  command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
  # gateway_dns_scaling gives the gateway a private /etc/hosts (unshare + mount --bind).
  command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
  command -v mount >/dev/null 2>&1 || need_apt+=(mount)
  # backend_rate_limit_redis: a real Redis shared by three replicas (redis-cli comes with it).
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
fi
if [ "${1:-}" = compose ] || [ "${1:-}" = test ]; then
  # podman with runc and netavark/aardvark-dns (name resolution between containers), and
  # debootstrap for the base image (tests/containers/base-image.sh).
  for pair in podman:podman runc:runc debootstrap:debootstrap netavark:netavark \
              aardvark-dns:aardvark-dns strip:binutils; do
    cmd=${pair%%:*}; pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/lib/podman/$cmd" ] || need_apt+=("$pkg")
  done
  [ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
  command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The venv with the MCP SDK: for the tests, and for the README's SDK example after `make run`.
if [ "${1:-}" != compose ]; then
  if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c 'import mcp, httpx, h2, jwt, cryptography' 2>/dev/null; then
    echo "setup: creating .venv with the MCP Python SDK"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r tests/python/requirements.txt
  fi
fi

if [ "${1:-}" = compose ] || [ "${1:-}" = test ]; then
  if [ ! -x .venv/bin/podman-compose ]; then
    echo "setup: installing podman-compose into .venv"
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install -q -r tests/containers/requirements.txt
  fi
fi

# Node 22 with the MCP conformance suite and the TypeScript MCP clients (tests/conformance).
if [ "${1:-}" = test ]; then bash scripts/node.sh; fi
