#!/usr/bin/env bash
# HDFS (Hadoop 3.4) for the tests: Hadoop's MiniDFSCluster, a NameNode and one DataNode in
# one JVM, from the jars on Maven Central (pom in ./hdfs) and the small launcher
# ./hdfs/HdfsCluster.java. Everything listens on 127.0.0.1:
#
#   NameNode RPC   9000   HDFS_URL=hdfs://127.0.0.1:9000
#   NameNode HTTP  9870   WebHDFS: http://127.0.0.1:9870/webhdfs/v1/...
#   DataNode       9866 (data), 9864 (HTTP), 9867 (IPC)
#
# Permissions are off (a test writes anywhere, as any user) and replication is 1.
# HADOOP_CONF_DIR=$OPERATORS_SERVICES_DIR/hdfs/conf has the core-site.xml (fs.defaultFS)
# and hdfs-site.xml a Hadoop client reads.
#
#   hdfs.sh start     idempotent: a running cluster is left alone, the jars are fetched once
#   hdfs.sh stop
#   hdfs.sh status
#   hdfs.sh conf-dir  prints the client configuration directory (HADOOP_CONF_DIR)
#
# Data and logs: $OPERATORS_SERVICES_DIR/hdfs (default target/services/hdfs): hdfs.log,
# stdout.log. The file system is kept across restarts: remove hdfs/data (stopped) for an
# empty one. The JVM's heap: HDFS_HEAP (default 512m).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

HDFS_DIR="$SERVICES_DIR/hdfs"
LIB="$HDFS_DIR/lib"
CLASSES="$HDFS_DIR/classes"
CONF_DIR="$HDFS_DIR/conf"
RPC_PORT=9000
HTTP_PORT=9870
DN_PORT=9866
DN_HTTP_PORT=9864
DN_IPC_PORT=9867
PORTS=($RPC_PORT $HTTP_PORT $DN_PORT $DN_HTTP_PORT $DN_IPC_PORT)

# The NameNode answers over HTTP and has a live DataNode (NumLiveDataNodes in its JMX),
# and the launcher said READY (out of safe mode, a probe file written and read back).
answers() {
    grep -q '^READY ' "$HDFS_DIR/stdout.log" 2>/dev/null || return 1
    local state
    # Not piped into grep -q: curl would fail on the closed pipe under pipefail.
    state=$(curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState" \
        2>/dev/null) || return 1
    grep -Eq '"NumLiveDataNodes" *: *[1-9]' <<<"$state"
}

start() {
    command -v curl >/dev/null 2>&1 || need_pkg curl
    if pid_alive "$HDFS_DIR/pid" && answers; then
        log "HDFS already running on hdfs://127.0.0.1:$RPC_PORT"
        return
    fi
    if ! pid_alive "$HDFS_DIR/pid"; then
        local p
        for p in "${PORTS[@]}"; do
            if port_open "$p"; then die "port $p is taken by a process that is not this HDFS; stop it first"; fi
        done
    fi
    local t0=$SECONDS
    fetch_jars "$SERVICES_SRC/hdfs" "$LIB"
    local java javac
    java=$(java_bin)
    javac="$(dirname "$(readlink -f "$java")")/javac"
    [ -x "$javac" ] || need_pkg openjdk-17-jdk-headless
    [ -x "$javac" ] || javac=$(command -v javac)
    if [ ! -f "$CLASSES/HdfsCluster.class" ] || [ "$SERVICES_SRC/hdfs/HdfsCluster.java" -nt "$CLASSES/HdfsCluster.class" ]; then
        mkdir -p "$CLASSES"
        "$javac" --release 17 -cp "$LIB/*" -d "$CLASSES" "$SERVICES_SRC/hdfs/HdfsCluster.java" \
            || die "compiling HdfsCluster.java failed"
    fi
    mkdir -p "$HDFS_DIR/data"
    # Not in conf/: a Hadoop client reading HADOOP_CONF_DIR must not log into this file.
    cat >"$HDFS_DIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$HDFS_DIR/hdfs.log
log4j.appender.file.MaxFileSize=64MB
log4j.appender.file.MaxBackupIndex=1
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{2}: %m%n
# One line per block or per request otherwise.
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
log4j.logger.BlockStateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN
log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN
log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSEditLog=WARN
log4j.logger.org.apache.hadoop.ipc.Server=WARN
log4j.logger.org.apache.hadoop.metrics2=WARN
log4j.logger.org.eclipse.jetty=WARN
log4j.logger.http.requests=WARN
EOF
    if ! pid_alive "$HDFS_DIR/pid"; then
        : >"$HDFS_DIR/stdout.log"
        : >"$HDFS_DIR/hdfs.log"
        # setsid: the cluster outlives this script and the shell that started it.
        setsid "$java" -Xms64m "-Xmx${HDFS_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true \
            -Djava.net.preferIPv4Stack=true -Dfile.encoding=UTF-8 \
            -Dlog4j.configuration="file:$HDFS_DIR/log4j.properties" \
            -cp "$CLASSES:$LIB/*" HdfsCluster "$HDFS_DIR" \
            $RPC_PORT $HTTP_PORT $DN_PORT $DN_HTTP_PORT $DN_IPC_PORT \
            >"$HDFS_DIR/stdout.log" 2>&1 </dev/null &
        echo $! >"$HDFS_DIR/pid"
    fi
    while ! answers; do
        if ! pid_alive "$HDFS_DIR/pid"; then
            tail -n 30 "$HDFS_DIR/stdout.log" "$HDFS_DIR/hdfs.log" >&2 || true
            die "HDFS exited while starting (logs: $HDFS_DIR/stdout.log, $HDFS_DIR/hdfs.log)"
        fi
        if (( SECONDS - t0 >= 180 )); then
            die "HDFS did not answer within 180 s (logs: $HDFS_DIR/stdout.log, $HDFS_DIR/hdfs.log)"
        fi
        sleep 0.5
    done
    log "HDFS up on hdfs://127.0.0.1:$RPC_PORT (WebHDFS 127.0.0.1:$HTTP_PORT, HADOOP_CONF_DIR=$CONF_DIR) in $((SECONDS - t0)) s"
}

stop() {
    if pid_alive "$HDFS_DIR/pid"; then
        local pid
        pid=$(cat "$HDFS_DIR/pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$HDFS_DIR/pid"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) if pid_alive "$HDFS_DIR/pid"; then echo "running (pid $(cat "$HDFS_DIR/pid"))"; else echo stopped; fi ;;
    conf-dir) echo "$CONF_DIR" ;;
    *) die "usage: hdfs.sh start|stop|status|conf-dir" ;;
esac
