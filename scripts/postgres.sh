#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests. Prints its URL on the last line of stdout.
#
#   scripts/postgres.sh [start] [DIR]   start (or find running) a cluster in DIR, print its URL
#   scripts/postgres.sh stop DIR        stop the cluster in DIR (the data stays; rm -rf DIR to drop it)
#   scripts/postgres.sh url DIR         print the URL of the running cluster in DIR
#   scripts/postgres.sh install         install the server binaries when missing (root + apt-get)
#
# With INTELBUS_TEST_POSTGRES_URL set, `start` only prints it. DIR defaults to .intelbus/postgres
# under the repository. The cluster listens on 127.0.0.1 only, at a free port, with trust auth on
# loopback (a test cluster, never for real data), fsync=on, and its socket inside DIR.
# When the server binaries are missing and we are root, they are installed with apt-get.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="start"
case "${1:-}" in
    start | stop | url | install) cmd="$1"; shift ;;
esac
dir="${1:-$repo/.intelbus/postgres}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
data="$dir/data"
db="intelbus_test"

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$found" && -x "$found/initdb" ]]; then
        echo "$found"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

# Run a server binary as the cluster's owner: initdb and postgres refuse to run as root.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url_of() { echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/$db"; }

running() { [[ -f "$dir/port" ]] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

if [[ "$cmd" == "start" && -n "${INTELBUS_TEST_POSTGRES_URL:-}" ]]; then
    echo "$INTELBUS_TEST_POSTGRES_URL"
    exit 0
fi

bin="$(bindir)"
if [[ -z "$bin" ]]; then
    [[ "$cmd" == "start" || "$cmd" == "install" ]] || die "no PostgreSQL server binaries found"
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "postgres.sh: installing PostgreSQL with apt-get" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin="$(bindir)"
    fi
    [[ -n "$bin" ]] || die "PostgreSQL server binaries (initdb, pg_ctl) not found: install the \
'postgresql' package, or set INTELBUS_TEST_POSTGRES_URL to an existing server"
fi

if [[ "$cmd" == "install" ]]; then
    echo "postgres.sh: PostgreSQL server binaries in $bin" >&2
    exit 0
fi

if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user to own the cluster"
    chown postgres: "$dir"
    runuser -u postgres -- test -x "$dir" ||
        die "the postgres OS user cannot reach $dir (a parent directory is private): use a DIR under /tmp"
fi

case "$cmd" in
    stop)
        if running; then
            as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2
        fi
        exit 0
        ;;
    url)
        running || die "no cluster running in $dir"
        url_of
        exit 0
        ;;
esac

if running; then
    url_of
    exit 0
fi

if [[ ! -f "$data/PG_VERSION" ]]; then
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    }
fi

# A new free port on every start: a stale one may have been taken since.
python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
    >"$dir/port"
[[ "$(id -u)" == 0 ]] && chown postgres: "$dir/port"
port="$(cat "$dir/port")"

as_owner "$bin/pg_ctl" -D "$data" -w -t 60 -l "$dir/logfile" \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=on" \
    start >&2 || {
    tail -n 30 "$dir/logfile" >&2 || true
    die "pg_ctl start failed"
}

if ! as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
fi
url_of
