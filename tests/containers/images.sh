#!/usr/bin/env bash
# Builds the images the container tests and `make compose-up` use, without a registry:
#   localhost/mcp-base:bookworm        Debian from debootstrap (base-image.sh, cached)
#   localhost/mcp-gateway:latest       the Dockerfile's runtime stage, with the host's release
#                                      binaries (BINARIES=prebuilt): the image users get, minus
#                                      the Rust stage that needs a registry
#   localhost/mcp-prometheus:latest    Debian's Prometheus laid out like prom/prometheus
#   localhost/mcp-alertmanager:latest  Debian's Alertmanager laid out like prom/alertmanager
#   localhost/mcp-postgres:latest      deploy/postgres/Containerfile and deploy/redis/Containerfile:
#   localhost/mcp-redis:latest         Debian's postgresql and redis-server packages for the
#                                      compose profiles postgres and redis
# Needs `cargo build --release --workspace --bins` first.
# SERVICE_IMAGES="postgres redis" (the default) names the service images to build; empty: none.
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

# Alertmanager the same way: Debian's binaries in deploy/alertmanager/Containerfile's layout.
am=$(command -v prometheus-alertmanager || true); amtool=$(command -v amtool || true)
[ -n "$am" ] && [ -n "$amtool" ] || { echo "images: prometheus-alertmanager/amtool missing: run scripts/setup.sh compose" >&2; exit 1; }
ctx=$CONTAINERS_STATE/alertmanager-context
rm -rf "$ctx"; mkdir -p "$ctx"
cp "$am" "$ctx/alertmanager"; cp "$amtool" deploy/alertmanager/Containerfile "$ctx/"
# Debian's build reads its notification templates from here (not compiled in).
cp -r /usr/share/prometheus/alertmanager "$ctx/share"
podman build -q --format docker --build-arg BASE_IMAGE="$base" -t localhost/mcp-alertmanager:latest "$ctx" >/dev/null
rm -rf "$ctx"
echo "images: localhost/mcp-alertmanager:latest" >&2

# The service images install Debian's packages with apt-get in the build: build containers
# reach the Debian mirror here (no registry is needed). Rebuilt only when their Containerfile,
# entrypoint or the base image changed (a hash of the three in a label); otherwise the image
# is left as it is, and a rebuild reuses the apt layer from podman's cache when only the
# entrypoint changed.
build_service() {
  local dir=deploy/$1 image=localhost/mcp-$1:latest hash log
  hash=$( (cat "$dir/Containerfile" "$dir/entrypoint.sh"; podman image inspect --format '{{.Id}}' "$base") \
    | md5sum | cut -c1-16)
  if [ "$(podman image inspect --format '{{index .Labels "mcp.build-hash"}}' "$image" 2>/dev/null)" = "$hash" ]; then
    echo "images: $image (up to date)" >&2
    return
  fi
  log=$CONTAINERS_STATE/build-$1.log
  podman build --format docker --build-arg BASE_IMAGE="$base" --label "mcp.build-hash=$hash" \
      -t "$image" "$dir" >"$log" 2>&1 || {
    tail -n 20 "$log" >&2
    echo "images: building $image failed (log: $log); its apt-get needs the Debian mirror from inside the build container" >&2
    exit 1
  }
  echo "images: $image" >&2
}
for s in ${SERVICE_IMAGES-postgres redis}; do
  case "$s" in
    postgres|redis) build_service "$s" ;;
    *) echo "images: SERVICE_IMAGES: unknown image $s (postgres, redis)" >&2; exit 2 ;;
  esac
done
