#!/usr/bin/env bash
# Instructions per request under callgrind: gateway vs bare Pingora vs nginx, GET /healthz and
# MCP tools/call, one backend replica (see bench/cost.py). About 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/cost.py "$@"
