#!/bin/bash
# The postgres image's entrypoint (tini is pid 1, this script its child).
#   postgres [ARGS]   the server. On an empty PGDATA first: initdb (as the user postgres), a
#                     login role POSTGRES_USER with POSTGRES_PASSWORD owning the database
#                     POSTGRES_DB, listen_addresses '*', scram-sha-256 for every network
#                     client; made in PGDATA.init and renamed into place when complete, so an
#                     interrupted first start is simply redone. Then postgres in the
#                     foreground with ARGS (e.g. -c shared_buffers=256MB); SIGTERM and SIGINT
#                     become PostgreSQL's fast shutdown (its own SIGTERM is the "smart" one,
#                     which waits for every client, pooled connections included, to leave).
#   healthcheck       pg_isready on 127.0.0.1: the TCP listener accepts connections
#   anything else     run as given (psql, pg_dump, bash, ...)
# As root (e.g. `user: root` for a bind mount owned by someone else) it makes the volume the
# postgres user's and runs as that user.
set -euo pipefail

PGDATA=${PGDATA:-/var/lib/postgresql/data/pgdata}
PGPORT=${PGPORT:-5432}
POSTGRES_USER=${POSTGRES_USER:-mcp}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
SOCKETS=/var/run/postgresql
export PGDATA PGPORT

say() { printf 'postgres: %s\n' "$*" >&2; }
fail() { say "$*"; exit 2; }

healthcheck() {
  exec pg_isready -q -h 127.0.0.1 -p "$PGPORT" -t 3
}

initialise() {
  [ -n "${POSTGRES_PASSWORD:-}" ] || fail "POSTGRES_PASSWORD is empty: the first start creates the role \"$POSTGRES_USER\" with it. Set POSTGRES_PASSWORD (docker-compose.yml: in .env; make one with: openssl rand -hex 24) and put the same password in the backend's DATABASE_URL."
  local parent tmp
  parent=$(dirname "$PGDATA")
  tmp=$PGDATA.init
  if [ -d "$PGDATA" ]; then
    [ -z "$(ls -A "$PGDATA")" ] || fail "$PGDATA is not empty but holds no PostgreSQL cluster (no PG_VERSION): move its contents away, or set PGDATA to an empty or missing directory"
    # An empty directory: replaced by the finished one, unless it is a mount point (a volume
    # mounted at PGDATA itself), which initdb then fills in place.
    rmdir "$PGDATA" 2>/dev/null || tmp=$PGDATA
  fi
  if [ "$tmp" = "$PGDATA" ]; then
    [ -w "$PGDATA" ] || fail "cannot initialise $PGDATA: not writable by uid $(id -u) (make the volume uid $(id -u)'s, or set fsGroup: $(id -g))"
  else
    [ -d "$parent" ] && [ -w "$parent" ] || fail "cannot create $PGDATA: $parent is not a directory writable by uid $(id -u) (mount a volume there owned by uid $(id -u), or set fsGroup: $(id -g))"
    rm -rf "$tmp"
  fi
  say "first start: initialising $PGDATA (role \"$POSTGRES_USER\", database \"$POSTGRES_DB\")"
  initdb -D "$tmp" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # Local socket: the superuser by peer (uid postgres), anyone else by password. Network:
  # scram-sha-256 for every address (the role's password is stored as a SCRAM verifier).
  cat > "$tmp/pg_hba.conf" <<'HBA'
# TYPE  DATABASE  USER      ADDRESS  METHOD
local   all       postgres           peer
local   all       all                scram-sha-256
host    all       all       all      scram-sha-256
HBA
  cat >> "$tmp/postgresql.conf" <<CONF

# --- mcp-postgres image ---
listen_addresses = '*'
port = $PGPORT
unix_socket_directories = '$SOCKETS'
password_encryption = scram-sha-256
log_timezone = 'UTC'
timezone = 'UTC'
CONF
  # A server on the socket only, to create the role and the database.
  pg_ctl -D "$tmp" -o "-c listen_addresses='' -c unix_socket_directories=$SOCKETS" -s -w -t 60 start
  psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKETS" -U postgres -d postgres \
    -v user="$POSTGRES_USER" -v pw="$POSTGRES_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
SELECT format(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user')
                   THEN 'ALTER ROLE %I LOGIN PASSWORD %L' ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END,
              :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'user') \gexec
SQL
  pg_ctl -D "$tmp" -m fast -s -w -t 60 stop
  [ "$tmp" = "$PGDATA" ] || mv -T "$tmp" "$PGDATA"
  say "first start: done"
}

server() {
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$(dirname "$PGDATA")" "$SOCKETS"
    chown postgres:postgres "$(dirname "$PGDATA")" "$SOCKETS"
    [ ! -d "$PGDATA" ] || chown -R postgres:postgres "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
  fi
  [ -s "$PGDATA/PG_VERSION" ] || initialise
  local have want
  have=$(cat "$PGDATA/PG_VERSION")
  want=$(postgres --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
  [ "$have" = "$want" ] || fail "$PGDATA holds a PostgreSQL $have cluster and this image runs PostgreSQL $want: upgrade it with pg_upgrade (or pg_dump from a $have server and restore here), or use an image with PostgreSQL $have"
  # PostgreSQL refuses a data directory that group or others may write (fsGroup, chmod -R).
  chmod 0700 "$PGDATA"
  [ -d "$SOCKETS" ] && [ -w "$SOCKETS" ] || fail "$SOCKETS is not writable by uid $(id -u): mount an emptyDir there (read-only root filesystem)"

  set +e
  postgres "$@" &
  local pid=$! rc
  trap 'kill -INT "$pid" 2>/dev/null' TERM INT
  trap 'kill -QUIT "$pid" 2>/dev/null' QUIT
  trap 'kill -HUP "$pid" 2>/dev/null' HUP
  while :; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  # A signal may have ended the last wait just before the server exited: its own status.
  wait "$pid" 2>/dev/null
  rc=$?
  say "exited ($rc)"
  exit "$rc"
}

case "${1:-postgres}" in
  healthcheck) healthcheck ;;
  postgres) shift $(($# > 0 ? 1 : 0)); server "$@" ;;
  -*) server "$@" ;;
  *) exec "$@" ;;
esac
