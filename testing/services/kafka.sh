#!/usr/bin/env bash
# Apache Kafka 4.x in KRaft mode, from the jars on Maven Central (pom in ./kafka).
#
#   kafka.sh start              both clusters (idempotent: running nodes are left alone)
#   kafka.sh start single       one node: broker 127.0.0.1:9092 (KAFKA_BROKERS)
#   kafka.sh start cluster      three nodes: brokers 127.0.0.1:19092,19093,19094
#                               (KAFKA_CLUSTER_BROKERS), replication factor 3, min ISR 2
#   kafka.sh stop [single|cluster]
#   kafka.sh kill-node N        SIGKILL node N (1-3) of the three-node cluster
#   kafka.sh start-node N       start node N again (its log is recovered)
#   kafka.sh status
#
# Data, logs and pid files: $OPERATORS_SERVICES_DIR/kafka (default target/services/kafka).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KAFKA_DIR="$SERVICES_DIR/kafka"
LIB="$KAFKA_DIR/lib"
SINGLE_PORT=9092
SINGLE_CONTROLLER=9093
CLUSTER_PORTS=(19092 19093 19094)
CLUSTER_CONTROLLERS=(19192 19193 19194)

cluster_voters() {
    local v=() i
    for i in 1 2 3; do v+=("$i@127.0.0.1:${CLUSTER_CONTROLLERS[$((i - 1))]}"); done
    (IFS=,; echo "${v[*]}")
}

# write_config <dir> <node id> <port> <controller port> <voters> <replicas> <min isr>
write_config() {
    local dir=$1 id=$2 port=$3 cport=$4 voters=$5 rf=$6 isr=$7
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
unclean.leader.election.enable=false
# A killed broker is fenced (and its partitions lead elsewhere) within seconds.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
log.segment.bytes=268435456
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

java_cmd() {
    # java_cmd <log4j config>: the JVM command line, into the array JAVA_CMD.
    JAVA_CMD=("$(java_bin)" -Xms128m "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$1" -cp "$LIB/*")
}

run_class() {
    local log4j=$1; shift
    java_cmd "$log4j"
    "${JAVA_CMD[@]}" "$@"
}

format_storage() {
    # format_storage <dir> <cluster id>
    local dir=$1 id=$2
    if [ -f "$dir/data/meta.properties" ]; then return; fi
    run_class "$dir/log4j2.properties" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
        >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting Kafka storage in $dir failed"; }
}

start_node_dir() {
    # start_node_dir <dir> <port> <what>
    local dir=$1 port=$2 what=$3
    if pid_alive "$dir/pid"; then
        return
    fi
    if port_open "$port"; then
        die "port $port is taken by a process that is not $what (see $dir); stop it first"
    fi
    : >"$dir/server.log"
    java_cmd "$dir/log4j2.properties"
    # setsid: the broker outlives this script and the shell that started it.
    setsid "${JAVA_CMD[@]}" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
}

wait_started() {
    # wait_started <dir> <what>
    local dir=$1 what=$2 start=$SECONDS
    while ! grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; do
        if ! pid_alive "$dir/pid"; then
            tail -n 30 "$dir/stdout.log" "$dir/server.log" >&2 || true
            die "$what exited while starting (logs in $dir)"
        fi
        if (( SECONDS - start >= 90 )); then
            die "$what did not start within 90 s (logs in $dir)"
        fi
        sleep 0.3
    done
}

cluster_id() {
    # One id per cluster, kept so that a restarted node joins the same cluster.
    local file=$1
    if [ ! -f "$file" ]; then
        run_class /dev/null kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 >"$file"
    fi
    cat "$file"
}

start_single() {
    local dir="$KAFKA_DIR/single"
    mkdir -p "$dir"
    if pid_alive "$dir/pid"; then log "Kafka (single node) already running on 127.0.0.1:$SINGLE_PORT"; return; fi
    local t0=$SECONDS
    write_config "$dir" 1 $SINGLE_PORT $SINGLE_CONTROLLER "1@127.0.0.1:$SINGLE_CONTROLLER" 1 1
    format_storage "$dir" "$(cluster_id "$dir/cluster.id")"
    start_node_dir "$dir" $SINGLE_PORT "the single-node Kafka"
    wait_started "$dir" "Kafka (single node)"
    log "Kafka (single node) up on 127.0.0.1:$SINGLE_PORT in $((SECONDS - t0)) s"
}

node_dir() { echo "$KAFKA_DIR/cluster/node$1"; }

prepare_node() {
    local i=$1 dir
    dir=$(node_dir "$i")
    mkdir -p "$dir"
    write_config "$dir" "$i" "${CLUSTER_PORTS[$((i - 1))]}" "${CLUSTER_CONTROLLERS[$((i - 1))]}" "$(cluster_voters)" 3 2
    format_storage "$dir" "$(cluster_id "$KAFKA_DIR/cluster/cluster.id")"
}

start_cluster() {
    mkdir -p "$KAFKA_DIR/cluster"
    local t0=$SECONDS i started=()
    for i in 1 2 3; do
        if pid_alive "$(node_dir "$i")/pid"; then continue; fi
        prepare_node "$i"
        start_node_dir "$(node_dir "$i")" "${CLUSTER_PORTS[$((i - 1))]}" "Kafka node $i"
        started+=("$i")
    done
    if [ ${#started[@]} -eq 0 ]; then log "Kafka (three nodes) already running on 127.0.0.1:19092-19094"; return; fi
    for i in "${started[@]}"; do wait_started "$(node_dir "$i")" "Kafka node $i"; done
    log "Kafka (three nodes) up on 127.0.0.1:19092,19093,19094 in $((SECONDS - t0)) s"
}

stop_dir() {
    local dir=$1 sig=${2:-TERM}
    if pid_alive "$dir/pid"; then
        local pid
        pid=$(cat "$dir/pid")
        kill "-$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
}

check_node() {
    case "${1:-}" in 1|2|3) ;; *) die "node must be 1, 2 or 3 (got '${1:-}')" ;; esac
}

fetch() { fetch_jars "$SERVICES_SRC/kafka" "$LIB"; }

cmd=${1:-start}
what=${2:-all}
case "$cmd" in
    start)
        fetch
        case "$what" in
            single) start_single ;;
            cluster) start_cluster ;;
            all) start_single; start_cluster ;;
            *) die "start single|cluster|all" ;;
        esac
        ;;
    stop)
        case "$what" in
            single) stop_dir "$KAFKA_DIR/single" ;;
            cluster) for i in 1 2 3; do stop_dir "$(node_dir $i)"; done ;;
            all) stop_dir "$KAFKA_DIR/single"; for i in 1 2 3; do stop_dir "$(node_dir $i)"; done ;;
            *) die "stop single|cluster|all" ;;
        esac
        ;;
    kill-node)
        check_node "${2:-}"
        stop_dir "$(node_dir "$2")" KILL
        ;;
    start-node)
        check_node "${2:-}"
        fetch
        dir=$(node_dir "$2")
        [ -f "$dir/server.properties" ] || prepare_node "$2"
        start_node_dir "$dir" "${CLUSTER_PORTS[$(($2 - 1))]}" "Kafka node $2"
        wait_started "$dir" "Kafka node $2"
        ;;
    status)
        for d in "$KAFKA_DIR/single" "$(node_dir 1)" "$(node_dir 2)" "$(node_dir 3)"; do
            if pid_alive "$d/pid"; then echo "$d: running (pid $(cat "$d/pid"))"; else echo "$d: stopped"; fi
        done
        ;;
    *) die "usage: kafka.sh start|stop [single|cluster|all] | kill-node N | start-node N | status" ;;
esac
