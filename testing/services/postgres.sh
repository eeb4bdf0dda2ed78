#!/usr/bin/env bash
# PostgreSQL from Debian's packages on 127.0.0.1:5432: trust authentication on loopback,
# database `test`, `wal_level=logical` (logical replication for the CDC source).
#
#   postgres.sh start     install when missing, configure, start (idempotent)
#   postgres.sh stop
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=5432

cluster() {
    # The newest installed server version and its `main` cluster (created when missing).
    local ver
    ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
    [ -n "$ver" ] || die "no PostgreSQL server under /usr/lib/postgresql after installing"
    if [ ! -d "/etc/postgresql/$ver/main" ]; then
        log "creating PostgreSQL cluster $ver/main"
        pg_createcluster --port $PORT "$ver" main >/dev/null
    fi
    echo "$ver"
}

configure() {
    local ver=$1 conf="/etc/postgresql/$1/main"
    local changed=0
    # conf.d is included by Debian's postgresql.conf; one file of ours, rewritten each time.
    mkdir -p "$conf/conf.d"
    local ours="$conf/conf.d/operators-tests.conf"
    local want
    want=$(cat <<EOF
# Written by testing/services/postgres.sh.
listen_addresses = '127.0.0.1'
port = $PORT
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
)
    if [ ! -f "$ours" ] || [ "$(cat "$ours")" != "$want" ]; then
        echo "$want" >"$ours"
        changed=1
    fi
    local hba_want
    hba_want=$(cat <<'EOF'
# Written by testing/services/postgres.sh: tests connect without a password, on loopback only.
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
EOF
)
    if [ "$(cat "$conf/pg_hba.conf")" != "$hba_want" ]; then
        echo "$hba_want" >"$conf/pg_hba.conf"
        changed=1
    fi
    echo $changed
}

running() { pg_isready -h 127.0.0.1 -p $PORT -q; }

start() {
    local t0=$SECONDS
    command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /usr/lib/postgresql ] || need_pkg postgresql
    local ver changed
    ver=$(cluster)
    changed=$(configure "$ver")
    if running && [ "$changed" = 0 ] && [ "$(psql -h 127.0.0.1 -U postgres -tAc 'show wal_level')" = logical ]; then
        log "PostgreSQL $ver already running on 127.0.0.1:$PORT"
    else
        if running; then
            pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
        else
            pg_ctlcluster --skip-systemctl-redirect "$ver" main start
        fi
        wait_until "PostgreSQL" 60 running
    fi
    if [ "$(psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname = 'test'")" != 1 ]; then
        psql -h 127.0.0.1 -U postgres -qc 'create database test' >/dev/null
    fi
    log "PostgreSQL $ver up on 127.0.0.1:$PORT (database test) in $((SECONDS - t0)) s"
}

case "${1:-start}" in
    start) start ;;
    stop) pg_ctlcluster --skip-systemctl-redirect "$(cluster)" main stop || true ;;
    *) die "usage: postgres.sh start|stop" ;;
esac
