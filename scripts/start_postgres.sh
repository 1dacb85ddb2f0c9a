#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for sds's tests and benchmarks.
#
# Installs Debian's `postgresql` package when no server binary is present, makes a fresh
# data directory under /tmp, starts the server on 127.0.0.1 only (on a free port), creates
# a user with a random password and a database, waits until it accepts connections, and
# prints exactly one line on stdout: the SQLAlchemy URL
#   postgresql+psycopg://USER:PASS@127.0.0.1:PORT/DB
# Everything else goes to stderr. Exits non-zero if any step fails.
# Stop it with: pg_ctl -D <data dir> stop   (the data dir is printed on stderr).
set -euo pipefail
exec 3>&1 1>&2   # fd 3 is the real stdout; everything else goes to stderr

DB_NAME="${SDS_PG_DB:-sds}"
DB_USER="${SDS_PG_USER:-sds}"

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

if ! BIN=$(find_bindir); then
  echo "start_postgres: no PostgreSQL server found; installing Debian's postgresql package"
  if [ "$(id -u)" -ne 0 ]; then
    echo "start_postgres: need root to apt-get install postgresql" ; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql || { apt-get update -q && apt-get install -y -q postgresql; }
  BIN=$(find_bindir) || { echo "start_postgres: postgresql installed but no initdb found"; exit 1; }
fi

# The server must not inherit fd 3 (our caller's stdout): `url=$(start_postgres.sh)`
# waits until every holder of that pipe closes it, i.e. forever.
# initdb refuses to run as root: run the server as the postgres user then
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
  as_pg() { runuser -u postgres -- "$@"; }
  OWNER=postgres
else
  as_pg() { "$@"; }
  OWNER=$(id -un)
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=$(mktemp -d /tmp/sds-pg.XXXXXX)
chmod 755 "$BASE"
chown "$OWNER" "$BASE"
DATA="$BASE/data"
PASS=$(python3 -c 'import secrets; print(secrets.token_hex(12))')

as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C.UTF-8 >"$BASE/initdb.log" 2>&1 \
  || as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
       -E UTF8 >"$BASE/initdb.log" 2>&1 \
  || { cat "$BASE/initdb.log"; echo "start_postgres: initdb failed"; exit 1; }

as_pg "$BIN/pg_ctl" -D "$DATA" -l "$BASE/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $BASE -c max_connections=200" start \
  </dev/null 3>&- \
  || { cat "$BASE/server.log"; echo "start_postgres: server did not start"; exit 1; }

psql_admin() { as_pg "$BIN/psql" -h "$BASE" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q "$@"; }
psql_admin -c "CREATE ROLE \"$DB_USER\" LOGIN CREATEDB PASSWORD '$PASS'"
psql_admin -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\""

# wait until a password login over TCP works, as clients will connect
for _ in $(seq 1 50); do
  if PGPASSWORD="$PASS" "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d "$DB_NAME" \
       -qtAc "SELECT 1" >/dev/null 2>&1; then
    echo "start_postgres: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT, data $DATA"
    echo "postgresql+psycopg://$DB_USER:$PASS@127.0.0.1:$PORT/$DB_NAME" >&3
    exit 0
  fi
  sleep 0.2
done
cat "$BASE/server.log"
echo "start_postgres: server started but refuses connections on 127.0.0.1:$PORT"
exit 1
