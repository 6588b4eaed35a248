#!/usr/bin/env bash
# The vendored Pingora crates' own unit tests, with the workspace's patches applied.
#
# vendor/pingora-core, vendor/pingora-proxy and vendor/pingora-http are used through
# [patch.crates-io] and are not workspace members, so `cargo test --workspace` does not run their
# tests (cargo refuses to test a non-member's dev-dependencies). This copies them into a small
# workspace of their own, with
# the main workspace's Cargo.lock so the same dependency versions are built, and runs their
# library tests. Pingora's connector tests dial public addresses (1.1.1.1, one.one.one.one),
# which a machine without network cannot reach: they are skipped, all but the keep-alive pool's
# (connectors::idle_pool, the workspace's own), which run on their own afterwards.
#
# Usage: bash scripts/test-vendored.sh   (target dir: target/vendored, kept between runs)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
work="$repo/target/vendored/src"
mkdir -p "$work"
rm -rf "$work/pingora-core" "$work/pingora-proxy" "$work/pingora-http"
cp -r "$repo/vendor/pingora-core" "$repo/vendor/pingora-proxy" "$repo/vendor/pingora-http" "$work/"
cat > "$work/Cargo.toml" <<'TOML'
[workspace]
members = ["pingora-core", "pingora-proxy", "pingora-http"]
resolver = "2"

[patch.crates-io]
pingora-core = { path = "pingora-core" }
pingora-proxy = { path = "pingora-proxy" }
pingora-http = { path = "pingora-http" }
TOML
cp "$repo/Cargo.lock" "$work/Cargo.lock"
cd "$work"
CARGO_TARGET_DIR="$repo/target/vendored/target" cargo test --release --lib \
    -p pingora-core -p pingora-proxy -p pingora-http -- --skip connectors::
CARGO_TARGET_DIR="$repo/target/vendored/target" cargo test --release --lib \
    -p pingora-core -p pingora-proxy -p pingora-http -- connectors::idle_pool::
