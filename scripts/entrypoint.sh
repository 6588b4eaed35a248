#!/bin/sh
# The image's entrypoint (run by tini as pid 1's child). It prepares what the process needs
# and then execs it, so signals from the engine reach the gateway or backend directly.
#   gateway ...   the ingress: checks the certificate directory first; with none mounted it
#                 makes a self-signed certificate (and says so loudly)
#   backend       the tool server: checks the workspace volume first; an empty volume is seeded
#                 from the example when SEED_WORKSPACE=example, else it stops saying what to mount
#   healthcheck   the image's HEALTHCHECK: probes whichever of the two this container runs
#   anything else is run as given (backend backup, backend restore, gateway -t, sh, ...)
set -eu

TLS_DIR=${GATEWAY_TLS_DIR:-/var/lib/gateway/tls}
EXAMPLE=/usr/share/mcp-gateway/example-workspace

say() { printf '%s\n' "$*" >&2; }
fail() { say "$*"; exit 2; }

prepare_gateway() {
  cert=$TLS_DIR/cert.pem
  key=$TLS_DIR/key.pem
  if [ ! -e "$cert" ] && [ ! -e "$key" ]; then
    if [ ! -w "$TLS_DIR" ]; then
      fail "gateway: no certificate in $TLS_DIR and the directory is not writable by uid $(id -u): mount a directory holding cert.pem and key.pem there (readable by uid $(id -u) or gid $(id -g)), or leave it unmounted (a volume) for a self-signed certificate"
    fi
    cn=${TLS_SELF_SIGNED_NAME:-localhost}
    say "gateway: WARNING ****************************************************************"
    say "gateway: WARNING no certificate mounted at $TLS_DIR: making a SELF-SIGNED one for"
    say "gateway: WARNING CN=$cn (clients will not trust it). For production, mount a directory"
    say "gateway: WARNING with cert.pem (chain, leaf first) and key.pem readable by uid $(id -u)."
    say "gateway: WARNING ****************************************************************"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$cn" \
      -addext "subjectAltName=DNS:$cn,DNS:localhost,IP:127.0.0.1,IP:::1" \
      -keyout "$key.tmp" -out "$cert.tmp" 2>/dev/null \
      || fail "gateway: cannot make a self-signed certificate in $TLS_DIR"
    mv "$key.tmp" "$key"
    mv "$cert.tmp" "$cert"
    chmod 0644 "$cert"
    return
  fi
  for f in "$cert" "$key"; do
    [ -e "$f" ] || fail "gateway: $f is missing: the certificate directory $TLS_DIR needs both cert.pem and key.pem"
    [ -r "$f" ] || fail "gateway: cannot read $f as uid $(id -u) gid $(id -g): on the host, make it readable by that user or group, e.g. chgrp $(id -g) key.pem && chmod 0640 key.pem (the directory needs o+x or group x)"
  done
}

# WORKING_DIRECTORY holds openspec/ (or is the openspec folder itself).
prepare_backend() {
  wd=${WORKING_DIRECTORY:-/app/workspace}
  if [ -d "$wd/openspec" ] || [ -d "$wd/specs" ] || [ -d "$wd/changes" ]; then
    return
  fi
  case "${SEED_WORKSPACE:-}" in
    "") fail "backend: the workspace $wd has no openspec/ folder. Mount your OpenSpec project there (a volume shared by every backend replica), or set SEED_WORKSPACE=example to start from the example workspace." ;;
    example) ;;
    *) fail "backend: SEED_WORKSPACE=$SEED_WORKSPACE is not understood: the only value is \"example\"" ;;
  esac
  [ -d "$wd" ] && [ -w "$wd" ] || fail "backend: cannot seed $wd: it is not a directory writable by uid $(id -u)"
  # Replicas may start together on one empty volume: each copies into its own temp dir and
  # renames it into place; rename(2) lets exactly one win, the others drop their copy.
  tmp=$(mktemp -d "$wd/.seed.XXXXXX")
  cp -R "$EXAMPLE/openspec" "$tmp/openspec"
  if mv -T "$tmp/openspec" "$wd/openspec" 2>/dev/null; then
    say "backend: seeded the empty workspace $wd from the example (SEED_WORKSPACE=example)"
  fi
  rm -rf "$tmp"
}

healthcheck() {
  # pid 1 is tini; its arguments say which program this container runs.
  role=$(tr '\0' ' ' </proc/1/cmdline)
  case "$role" in
    *" gateway"*) url=${HEALTHCHECK_URL:-http://127.0.0.1:9464/healthz} ;;
    *) url=${HEALTHCHECK_URL:-http://127.0.0.1:${PORT:-3000}/health/ready} ;;
  esac
  exec curl -fsS -o /dev/null --max-time 3 "$url"
}

case "${1:-}" in
  gateway)
    prepare_gateway
    ;;
  backend)
    # The server only: `backend backup`, `backend restore`, `backend --help` need no workspace check.
    if [ "$#" -eq 1 ]; then prepare_backend; fi
    ;;
  healthcheck)
    healthcheck
    ;;
esac
exec "$@"
