#!/usr/bin/env bash
# Start a PostgreSQL for the store tests (and benchmarks/night.py --prefect-db) and print its
# SQLAlchemy URL, and nothing else, on stdout:
#   postgresql+psycopg://hvmove:PASSWORD@127.0.0.1:PORT/hvmove_test
# Debian only, as root: installs Debian's `postgresql` package when missing, then creates (once)
# and starts a cluster of its own, `hvmove`, so a `main` cluster someone else uses is never
# touched. A second run reuses the cluster, the role, its password and the database.
# On any failure: nothing on stdout, the reason on stderr, a non-zero exit; CI then skips the
# PostgreSQL tests.
#   usage: url=$(.ci/postgres.sh) && export HVMOVE_TEST_POSTGRES_URL="$url"
set -euo pipefail

CLUSTER="${HVMOVE_PG_CLUSTER:-hvmove}"
FIRST_PORT="${HVMOVE_PG_PORT:-54329}"
ROLE=hvmove
DB=hvmove_test
LOG="$(mktemp -t hvmove-postgres.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

fail() {
  echo "postgres.sh: $*" >&2
  if [ -s "$LOG" ]; then tail -n 20 "$LOG" >&2; fi
  exit 1
}

# Everything but the URL goes to the log: the caller captures stdout.
run() { "$@" >>"$LOG" 2>&1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (installs a package, starts a cluster)"
command -v apt-get >/dev/null 2>&1 || fail "not a Debian system (no apt-get)"

installed() {
  command -v pg_ctlcluster >/dev/null 2>&1 && command -v pg_createcluster >/dev/null 2>&1 &&
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
}
if ! installed; then
  run apt-get update -q || fail "apt-get update failed"
  # the package's own `main` cluster may or may not start here (no init system in a container)
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql ||
    fail "apt-get install postgresql failed"
  installed || fail "postgresql installed but its server binaries are missing"
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
[ -n "$VERSION" ] || fail "no PostgreSQL version under /usr/lib/postgresql"

# pg_lsclusters columns: Ver Cluster Port Status Owner Data-directory Log-file
cluster_field() { pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" -v f="$1" \
  '$1 == v && $2 == c { print $f }'; }

port_busy() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -z "$(cluster_field 2)" ]; then
  port="$FIRST_PORT"
  used="$(pg_lsclusters -h 2>/dev/null | awk '{ print $3 }')"
  while port_busy "$port" || grep -qx "$port" <<<"$used"; do
    port=$((port + 1))
    [ "$port" -lt $((FIRST_PORT + 100)) ] || fail "no free port from $FIRST_PORT"
  done
  run pg_createcluster "$VERSION" "$CLUSTER" -p "$port" -- --auth-local=peer \
    --auth-host=scram-sha-256 || fail "pg_createcluster failed"
fi
PORT="$(cluster_field 3)"
[ -n "$PORT" ] || fail "cluster $VERSION/$CLUSTER has no port"

if [ "$(cluster_field 4)" != "online" ]; then
  run pg_ctlcluster "$VERSION" "$CLUSTER" start || fail "pg_ctlcluster start failed"
fi
for _ in $(seq 1 60); do
  if run runuser -u postgres -- pg_isready -q -p "$PORT"; then break; fi
  sleep 0.5
done
run runuser -u postgres -- pg_isready -q -p "$PORT" || fail "cluster did not become ready"

# The password is made once and kept beside the cluster's configuration, readable by root only,
# so that a second run prints the same URL and an earlier caller's URL keeps working.
SECRET="/etc/postgresql/$VERSION/$CLUSTER/hvmove-ci.password"
if [ ! -s "$SECRET" ]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET") ||
    fail "cannot write $SECRET"
fi
PASSWORD="$(cat "$SECRET")"

psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }

# the password travels as a psql variable on stdin, never on a command line
run psql_admin -d postgres -v pw="$PASSWORD" <<SQL || fail "cannot create the role"
SELECT format('CREATE ROLE %I LOGIN', '$ROLE')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE $ROLE WITH LOGIN CREATEDB PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', '$DB', '$ROLE')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB') \gexec
SQL

# prove the URL works before handing it out: password login over TCP, as the tests will
PGPASSWORD="$PASSWORD" run psql -X -q -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" \
  -c "SELECT 1" || fail "cannot log in as $ROLE over TCP"

echo "postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
