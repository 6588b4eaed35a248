#!/usr/bin/env bash
# Installs what a fresh machine lacks, idempotently: build tools for Pingora
# (cmake for zlib-ng), the CLI clients the tests use, and the Python venv with
# the official MCP SDK. Pass "bench" to also install nginx, wrk, h2load and PostgreSQL; "compose" installs
# podman, runc, debootstrap and podman-compose for the container stack; "test" does all, plus
# Node 22 and the npm packages of tests/conformance (scripts/node.sh).
# It expects root (apt-get), the Debian, PyPI, npm and crates.io registries, and a Rust toolchain
# at least as new as Cargo.toml's rust-version, which it checks but does not install (Debian's
# rustc is older: rustup's is the one to use; it says how).
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust: rustup's cargo first (as the Makefile does), also when this shell has not sourced
# ~/.cargo/env yet or Debian's older cargo is on PATH too.
if [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
rust_min=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
rust_have=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
if ! command -v cargo >/dev/null 2>&1 || [ -z "$rust_have" ] ||
   [ "$(printf '%s\n%s\n' "$rust_min" "$rust_have" | sort -V | head -n 1)" != "$rust_min" ]; then
  echo "setup: this needs Rust $rust_min or newer (cargo and rustc, from Cargo.toml's rust-version); found: ${rust_have:-none}." >&2
  if command -v rustup >/dev/null 2>&1; then
    echo "setup: update it with: rustup update stable && rustup default stable" >&2
  else
    echo "setup: Debian's rustc is older than that; install rustup's stable toolchain, then run make again:" >&2
    echo "setup:   curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
  fi
  exit 1
fi

need_apt=()
for pair in cmake:cmake curl:curl openssl:openssl pkg-config:pkg-config; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# Pingora's openssl feature links against the system libssl.
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
# .venv (the MCP SDK, podman-compose): Debian's python3 makes venvs only with python3-venv.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
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
  # tests/python/test_monitoring_rules.py: amtool check-config and a real Alertmanager.
  command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
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
  # The local Alertmanager image is Debian's binary (tests/containers/images.sh).
  command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
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
