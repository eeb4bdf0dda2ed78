#!/usr/bin/env bash
# MariaDB from Debian's packages on 127.0.0.1:3306: `root` without password over TCP,
# database `test`, row-based binary log (log_bin, binlog_format=ROW,
# binlog_row_image=FULL, server_id=1) for the CDC source.
#
#   mariadb.sh start     install when missing, configure, start (idempotent)
#   mariadb.sh stop
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=3306
CONF=/etc/mysql/mariadb.conf.d/99-operators-tests.cnf
DIR="$SERVICES_DIR/mariadb"

running() { mariadb-admin --protocol=tcp -h 127.0.0.1 -P $PORT -u root ping >/dev/null 2>&1; }
running_socket() { mariadb-admin -u root ping >/dev/null 2>&1; }

start() {
    local t0=$SECONDS
    [ -x /usr/sbin/mariadbd ] || need_pkg mariadb-server mariadb-client
    mkdir -p "$DIR"
    local want
    want=$(cat <<EOF
# Written by testing/services/mariadb.sh.
[mariadbd]
bind-address = 127.0.0.1
port = $PORT
server_id = 1
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
expire_logs_days = 1
max_connections = 500
innodb_flush_log_at_trx_commit = 2
sync_binlog = 0
EOF
)
    local changed=0
    if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want" ]; then
        echo "$want" >"$CONF"
        changed=1
    fi
    if running_socket && [ $changed = 1 ]; then
        log "restarting MariaDB for the new settings"
        stop
    fi
    if ! running_socket; then
        mkdir -p /run/mysqld
        chown mysql:mysql /run/mysqld 2>/dev/null || true
        # mysqld_safe restarts the server if it dies; not wanted in tests.
        setsid /usr/sbin/mariadbd --user=mysql >"$DIR/mariadbd.log" 2>&1 </dev/null &
        echo $! >"$DIR/pid"
        local start=$SECONDS
        while ! running_socket; do
            if ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
                tail -30 "$DIR/mariadbd.log" >&2
                die "MariaDB exited while starting (log: $DIR/mariadbd.log)"
            fi
            (( SECONDS - start < 60 )) || die "MariaDB did not start within 60 s (log: $DIR/mariadbd.log)"
            sleep 0.3
        done
    fi
    # root without password over TCP from loopback. Plain mysql_native_password: with a
    # plugin list (unix_socket OR ...) the server asks TCP clients to switch plugins, and
    # sqlx answers a switch with a scramble of the empty password, which is refused.
    mariadb -u root <<'SQL'
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS test;
SQL
    running || die "MariaDB does not accept root without password on 127.0.0.1:$PORT"
    log "MariaDB up on 127.0.0.1:$PORT (database test, binlog ROW) in $((SECONDS - t0)) s"
}

stop() {
    if running_socket; then
        mariadb-admin -u root shutdown || true
    fi
    for _ in $(seq 1 100); do pgrep -x mariadbd >/dev/null || break; sleep 0.2; done
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: mariadb.sh start|stop" ;;
esac
