#!/usr/bin/env bash
# Builds the images the container tests and `make compose-up` use, without a registry:
#   localhost/mcp-base:bookworm        Debian from debootstrap (base-image.sh, cached)
#   localhost/mcp-gateway:latest       the Dockerfile's runtime stage, with the host's release
#                                      binaries (BINARIES=prebuilt): the image users get, minus
#                                      the Rust stage that needs a registry
#   localhost/mcp-prometheus:latest    Debian's Prometheus laid out like prom/prometheus
# Needs `cargo build --release --workspace --bins` first.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/containers/env.sh
BIN=${CARGO_TARGET_DIR:-target}/release
for b in gateway backend; do
  [ -x "$BIN/$b" ] || { echo "images: $BIN/$b is missing: run cargo build --release --workspace --bins" >&2; exit 1; }
done
base=$(bash tests/containers/base-image.sh)
mkdir -p target/image
for b in gateway backend; do
  strip -o "target/image/$b.tmp" "$BIN/$b" && mv "target/image/$b.tmp" "target/image/$b"
done
podman build -q --format docker --build-arg BINARIES=prebuilt --build-arg BASE_IMAGE="$base" \
  -t localhost/mcp-gateway:latest . >/dev/null
echo "images: localhost/mcp-gateway:latest" >&2

prom=$(command -v prometheus || true); promtool=$(command -v promtool || true)
[ -n "$prom" ] && [ -n "$promtool" ] || { echo "images: prometheus/promtool missing: run scripts/setup.sh test" >&2; exit 1; }
ctx=$CONTAINERS_STATE/prometheus-context
rm -rf "$ctx"; mkdir -p "$ctx"
cp "$prom" "$promtool" tests/containers/prometheus/Containerfile "$ctx/"
podman build -q --format docker --build-arg BASE_IMAGE="$base" -t localhost/mcp-prometheus:latest "$ctx" >/dev/null
rm -rf "$ctx"
echo "images: localhost/mcp-prometheus:latest" >&2
