#!/usr/bin/env bash
# Gateway vs nginx vs direct-to-backend in one run (see bench/gateway_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/gateway_bench.py "$@"
