#!/usr/bin/env bash
# Gateway vs nginx vs direct-to-backend, and the gateway with MCP awareness off / on / full edge, in one run (see bench/gateway_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/gateway_bench.py "$@"
