#!/usr/bin/env bash
# OpenSearch 2.19 (Java 17), one node on 127.0.0.1:9200 (ES_URL), from the jars on Maven
# Central (pom in ./opensearch) and the small launcher ./opensearch/OpenSearchNode.java.
# Requests authenticate with basic auth (ES_USER / ES_PASSWORD, default operators /
# operators-test-pw) or the API key ES_API_KEY (default operators-key:operators-key-secret).
#
#   opensearch.sh start     idempotent: a running node is left alone
#   opensearch.sh stop
#   opensearch.sh status
#
# Data and logs: $OPERATORS_SERVICES_DIR/opensearch (default target/services/opensearch).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OS_DIR="$SERVICES_DIR/opensearch"
LIB="$OS_DIR/lib"
CLASSES="$OS_DIR/classes"
HOME_DIR="$OS_DIR/home"
PORT=${OPENSEARCH_PORT:-9200}
# The node's credentials (ES_USER / ES_PASSWORD / ES_API_KEY of the tests). Defaults are
# those the test harness assumes; they guard a loopback-only test node.
USER_NAME=${ES_USER:-operators}
PASSWORD=${ES_PASSWORD:-operators-test-pw}
API_KEY=${ES_API_KEY:-operators-key:operators-key-secret}

answers() { curl -fsS --max-time 2 -u "$USER_NAME:$PASSWORD" "http://127.0.0.1:$PORT/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; }

start() {
    command -v curl >/dev/null 2>&1 || need_pkg curl
    if pid_alive "$OS_DIR/pid" && answers; then
        log "OpenSearch already running on 127.0.0.1:$PORT"
        return
    fi
    if ! pid_alive "$OS_DIR/pid" && port_open "$PORT"; then
        die "port $PORT is taken by a process that is not this OpenSearch node; stop it first"
    fi
    local t0=$SECONDS
    fetch_jars "$SERVICES_SRC/opensearch" "$LIB"
    local java javac
    java=$(java_bin)
    javac="$(dirname "$(readlink -f "$java")")/javac"
    [ -x "$javac" ] || need_pkg openjdk-17-jdk-headless
    [ -x "$javac" ] || javac=$(command -v javac)
    if [ ! -f "$CLASSES/OpenSearchNode.class" ] || [ "$SERVICES_SRC/opensearch/OpenSearchNode.java" -nt "$CLASSES/OpenSearchNode.class" ]; then
        mkdir -p "$CLASSES"
        "$javac" --release 17 -cp "$LIB/*" -d "$CLASSES" "$SERVICES_SRC/opensearch/OpenSearchNode.java" \
            || die "compiling OpenSearchNode.java failed"
    fi
    mkdir -p "$HOME_DIR/config" "$HOME_DIR/logs"
    cat >"$HOME_DIR/config/log4j2.properties" <<EOF
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $HOME_DIR/logs/opensearch.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.deprecation.name = org.opensearch.deprecation
logger.deprecation.level = error
EOF
    if ! pid_alive "$OS_DIR/pid"; then
        setsid "$java" -Xms512m "-Xmx${OPENSEARCH_HEAP:-1g}" -XX:+UseG1GC -Djava.awt.headless=true \
            -Dfile.encoding=UTF-8 -Dlog4j2.configurationFile="$HOME_DIR/config/log4j2.properties" \
            -Doperators.user="$USER_NAME" -Doperators.password="$PASSWORD" -Doperators.api.key="$API_KEY" \
            -cp "$CLASSES:$LIB/*" OpenSearchNode "$HOME_DIR" "$PORT" \
            >"$OS_DIR/stdout.log" 2>&1 </dev/null &
        echo $! >"$OS_DIR/pid"
    fi
    while ! answers; do
        if ! pid_alive "$OS_DIR/pid"; then
            tail -n 30 "$OS_DIR/stdout.log" "$HOME_DIR/logs/opensearch.log" >&2 || true
            die "OpenSearch exited while starting (logs in $OS_DIR)"
        fi
        if (( SECONDS - t0 >= 180 )); then die "OpenSearch did not answer within 180 s (logs in $OS_DIR)"; fi
        sleep 0.5
    done
    log "OpenSearch up on 127.0.0.1:$PORT in $((SECONDS - t0)) s"
}

stop() {
    if pid_alive "$OS_DIR/pid"; then
        local pid
        pid=$(cat "$OS_DIR/pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$OS_DIR/pid"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) if pid_alive "$OS_DIR/pid"; then echo "running (pid $(cat "$OS_DIR/pid"))"; else echo stopped; fi ;;
    *) die "usage: opensearch.sh start|stop|status" ;;
esac
