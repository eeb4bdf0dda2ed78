#!/usr/bin/env bash
# HiveServer2 4.0.1 for the tests, in one JVM from the jars on Maven Central (pom in ./hive)
# and the small launcher ./hive/HiveServer.java: an embedded metastore on Derby, a warehouse
# on the local file system, MapReduce's local job runner in the same JVM (no Hadoop
# cluster; HDFS is not used). Only the Thrift binary transport listens, on 127.0.0.1:
#
#   HIVE_URL=jdbc:hive2://127.0.0.1:10000/default
#
# Sessions authenticate with SASL PLAIN (hive.server2.authentication=CUSTOM): exactly one
# user, HIVE_USER / HIVE_PASSWORD (default operators / operators-hive-pw); any other user
# or password is refused. doAs is off: everything runs as the server's OS user.
#
#   hive.sh start     idempotent: a running server is left alone, the jars are fetched once;
#                     prints the `export` lines of `hive.sh env` when the server answers
#   hive.sh stop
#   hive.sh status
#   hive.sh env       the environment of the tests: HIVE_URL, HIVE_USER, HIVE_PASSWORD
#   hive.sh sql STATEMENT...   runs the statements in one session (./hive/HiveClient.java)
#                     and prints the rows, tab-separated: for fixtures and by hand
#
# Data and logs: $OPERATORS_SERVICES_DIR/hive (default target/services/hive): hive.log,
# stdout.log, derby.log; data/ holds the metastore and the warehouse, kept across restarts:
# remove it (stopped) for an empty Hive. The JVM's heap: HIVE_HEAP (default 768m); the
# MapReduce jobs of INSERT ... VALUES and the like run in it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

HIVE_DIR="$SERVICES_DIR/hive"
LIB="$HIVE_DIR/lib"
CLASSES="$HIVE_DIR/classes"
CONF_DIR="$HIVE_DIR/conf"
DATA="$HIVE_DIR/data"
TMP="$HIVE_DIR/tmp"
PORT=${HIVE_PORT:-10000}
URL="jdbc:hive2://127.0.0.1:$PORT/default"
# The server's one user (HIVE_USER / HIVE_PASSWORD of the tests); the defaults are those
# the test harness assumes. They guard a loopback-only test server.
USER_NAME=${HIVE_USER:-operators}
PASSWORD=${HIVE_PASSWORD:-operators-hive-pw}

# Hive 4.0.1 is built for Java 8; on Java 17 it reflects into JDK internals. Found needed
# here: java.net (StringInternUtils, at startup), java.util and java.util.concurrent.atomic
# and java.util.regex (Kryo, writing a job's plan), java.lang (java_method()). The others
# complete the set Hive's own scripts pass since its Java 17 support (HIVE-26473).
JAVA_OPENS=()
for pkg in java.lang java.lang.reflect java.io java.net java.nio java.util java.util.concurrent \
    java.util.concurrent.atomic java.util.regex; do
    JAVA_OPENS+=("--add-opens=java.base/$pkg=ALL-UNNAMED")
done

# alive <pid>: the process exists and is not a zombie (a killed JVM's pid stays valid until
# its reaper, PID 1 as setsid made it, gets to it).
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}
running() { [ -f "$HIVE_DIR/pid" ] && alive "$(cat "$HIVE_DIR/pid")"; }

# The launcher said READY (it ran `select 1` over TCP with the password and saw a wrong
# password refused) and the port is still open.
answers() {
    grep -q '^READY ' "$HIVE_DIR/stdout.log" 2>/dev/null && port_open "$PORT"
}

java_tools() {
    JAVA=$(java_bin)
    JAVAC="$(dirname "$(readlink -f "$JAVA")")/javac"
    [ -x "$JAVAC" ] || need_pkg openjdk-17-jdk-headless
    [ -x "$JAVAC" ] || JAVAC=$(command -v javac)
}

compile() {
    local name
    for name in HiveServer HiveClient; do
        if [ ! -f "$CLASSES/$name.class" ] || [ "$SERVICES_SRC/hive/$name.java" -nt "$CLASSES/$name.class" ]; then
            mkdir -p "$CLASSES"
            "$JAVAC" --release 17 -cp "$LIB/*" -d "$CLASSES" "$SERVICES_SRC/hive/$name.java" \
                || die "compiling $name.java failed"
        fi
    done
}

# The class path: conf/ (hive-site.xml), the launcher, then the jars in name order, as
# Hive's own scripts list them. hive-exec is a shaded jar with copies of classes other
# jars have too: `lib/*` would take the directory's order, which no one chose.
classpath() {
    local cp="$CONF_DIR:$CLASSES" jar
    for jar in "$LIB"/*.jar; do cp+=":$jar"; done
    printf '%s' "$cp"
}

# client <statement>...: HiveClient in a JVM of its own, as HIVE_USER / HIVE_PASSWORD.
client() {
    [ -f "$CLASSES/HiveClient.class" ] || die "HiveClient is not compiled: run hive.sh start first"
    HIVE_URL="$URL" HIVE_USER="$USER_NAME" HIVE_PASSWORD="$PASSWORD" \
        "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true \
        -Dlog4j2.configurationFile="$HIVE_DIR/client-log4j2.properties" \
        -cp "$(classpath)" HiveClient "$@"
}

write_config() {
    mkdir -p "$CONF_DIR" "$DATA" "$TMP"
    # Hive reads hive-site.xml from the class path: conf/ comes first. Only the Thrift
    # binary transport listens (no web UI, no HTTP transport, no ZooKeeper).
    cat >"$CONF_DIR/hive-site.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by testing/services/hive.sh at each start: edit the script, not this file. -->
<configuration>
  <property><name>hive.server2.transport.mode</name><value>binary</value></property>
  <property><name>hive.server2.thrift.bind.host</name><value>127.0.0.1</value></property>
  <property><name>hive.server2.thrift.port</name><value>$PORT</value></property>
  <property><name>hive.server2.authentication</name><value>CUSTOM</value></property>
  <property><name>hive.server2.custom.authentication.class</name><value>HiveServer\$PasswordCheck</value></property>
  <property><name>hive.server2.enable.doAs</name><value>false</value></property>
  <property><name>hive.server2.webui.port</name><value>0</value></property>
  <property><name>hive.server2.support.dynamic.service.discovery</name><value>false</value></property>
  <!-- stop: no waiting for the operations of sessions a test left open (the wait is
       this minus 30 s), and at most 10 s for the shutdown itself. -->
  <property><name>hive.server2.graceful.stop.timeout</name><value>10s</value></property>

  <!-- Embedded metastore on Derby, its schema created by DataNucleus on first use. -->
  <property><name>hive.metastore.uris</name><value></value></property>
  <property><name>javax.jdo.option.ConnectionURL</name><value>jdbc:derby:;databaseName=$DATA/metastore_db;create=true</value></property>
  <property><name>javax.jdo.option.ConnectionDriverName</name><value>org.apache.derby.jdbc.EmbeddedDriver</value></property>
  <property><name>hive.metastore.schema.verification</name><value>false</value></property>
  <property><name>datanucleus.schema.autoCreateAll</name><value>true</value></property>
  <property><name>hive.metastore.event.db.notification.api.auth</name><value>false</value></property>
  <!-- DataNucleus creates each table when its class is first used: the metastore's direct
       SQL would query tables that do not exist yet (and log each failure). -->
  <property><name>hive.metastore.try.direct.sql</name><value>false</value></property>
  <property><name>hive.metastore.try.direct.sql.ddl</name><value>false</value></property>

  <!-- The local file system only: HDFS, even when it runs, is not used. -->
  <property><name>fs.defaultFS</name><value>file:///</value></property>
  <property><name>hive.metastore.warehouse.dir</name><value>file://$DATA/warehouse</value></property>
  <property><name>hive.metastore.warehouse.external.dir</name><value>file://$DATA/warehouse</value></property>
  <property><name>hive.exec.scratchdir</name><value>$TMP/scratch</value></property>
  <property><name>hive.exec.local.scratchdir</name><value>$TMP/local-scratch</value></property>
  <property><name>hive.downloaded.resources.dir</name><value>$TMP/resources</value></property>
  <property><name>hive.querylog.location</name><value>$TMP/querylog</value></property>
  <property><name>hive.server2.logging.operation.log.location</name><value>$TMP/operation-logs</value></property>
  <property><name>hadoop.tmp.dir</name><value>$TMP/hadoop</value></property>

  <!-- Jobs: MapReduce's local job runner, in this JVM. -->
  <property><name>hive.execution.engine</name><value>mr</value></property>
  <property><name>mapreduce.framework.name</name><value>local</value></property>
  <property><name>hive.exec.submitviachild</name><value>false</value></property>
  <!-- Map joins' local task too (its default forks \$HADOOP_HOME/bin/hadoop). -->
  <property><name>hive.exec.submit.local.task.via.child</name><value>false</value></property>
  <property><name>mapreduce.task.io.sort.mb</name><value>16</value></property>
  <!-- Simple SELECTs (projections, filters, LIMIT) read the files with no job. -->
  <property><name>hive.fetch.task.conversion</name><value>more</value></property>
  <!-- No column statistics job after each INSERT. -->
  <property><name>hive.stats.column.autogather</name><value>false</value></property>

  <!-- Background services a test server has no use for. -->
  <property><name>hive.scheduled.queries.executor.enabled</name><value>false</value></property>
  <property><name>hive.server2.materializedviews.registry.impl</name><value>DUMMY</value></property>
  <property><name>hive.query.results.cache.enabled</name><value>false</value></property>
  <!-- The metastore client's cache sizes its entries by reflecting into JDK classes. -->
  <property><name>hive.metastore.client.cache.v2.enabled</name><value>false</value></property>
  <!-- Runtime statistics of re-executed queries stay in the query, not the metastore. -->
  <property><name>hive.query.reexecution.stats.persist.scope</name><value>query</value></property>
</configuration>
EOF
    cat >"$HIVE_DIR/log4j2.properties" <<EOF
status = error
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $HIVE_DIR/hive.log
appender.file.filePattern = $HIVE_DIR/hive.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{ISO8601} %-5p [%t] %c{2}: %m%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 64MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 1
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
# Each statement still logs its text, compilation and outcome (ql.Driver, sessions,
# operations); the operators, the local job runner and the metastore log warnings only.
logger.mapred.name = org.apache.hadoop.mapred
logger.mapred.level = warn
logger.mapreduce.name = org.apache.hadoop.mapreduce
logger.mapreduce.level = warn
logger.exec.name = org.apache.hadoop.hive.ql.exec
logger.exec.level = warn
logger.optimizer.name = org.apache.hadoop.hive.ql.optimizer
logger.optimizer.level = warn
logger.parse.name = org.apache.hadoop.hive.ql.parse
logger.parse.level = warn
logger.cleanup.name = org.apache.hadoop.hive.ql.cleanup
logger.cleanup.level = warn
logger.logutils.name = org.apache.hadoop.hive.common.LogUtils
logger.logutils.level = warn
logger.metastore.name = org.apache.hadoop.hive.metastore
logger.metastore.level = warn
logger.audit.name = HiveMetaStore.audit
logger.audit.level = warn
logger.datanucleus.name = DataNucleus
logger.datanucleus.level = warn
EOF
    cat >"$HIVE_DIR/client-log4j2.properties" <<EOF
status = error
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %d{HH:mm:ss} %-5p %c{1}: %m%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
EOF
}

env_lines() {
    printf 'export HIVE_URL=%s\n' "$URL"
    printf 'export HIVE_USER=%q\n' "$USER_NAME"
    printf 'export HIVE_PASSWORD=%q\n' "$PASSWORD"
}

start() {
    local t0=$SECONDS
    if running && answers; then
        java_tools
        client "select 1" >/dev/null || die "HiveServer2 runs but a session failed: wedged, or started with another HIVE_USER / HIVE_PASSWORD (logs: $HIVE_DIR/hive.log, $HIVE_DIR/stdout.log)"
        log "HiveServer2 already running on $URL"
        env_lines
        return
    fi
    if ! running && port_open "$PORT"; then
        die "port $PORT is taken by a process that is not this HiveServer2; stop it first"
    fi
    fetch_jars "$SERVICES_SRC/hive" "$LIB"
    java_tools
    compile
    write_config
    if ! running; then
        : >"$HIVE_DIR/stdout.log"
        : >"$HIVE_DIR/hive.log"
        # setsid: the server outlives this script and the shell that started it. env -u:
        # a caller's Hadoop or Hive configuration (HADOOP_CONF_DIR of hdfs.sh) stays out.
        # java.io.tmpdir: Hive's and Hadoop's defaults for local paths derive from it.
        setsid env -u HADOOP_CONF_DIR -u HADOOP_HOME -u HIVE_CONF_DIR -u HIVE_HOME \
            "$JAVA" -Xms128m "-Xmx${HIVE_HEAP:-768m}" -XX:+UseG1GC -Djava.awt.headless=true \
            -Djava.net.preferIPv4Stack=true -Dfile.encoding=UTF-8 "${JAVA_OPENS[@]}" \
            -Djava.io.tmpdir="$TMP" -Dderby.stream.error.file="$HIVE_DIR/derby.log" \
            -Dlog4j2.configurationFile="$HIVE_DIR/log4j2.properties" \
            -Doperators.hive.user="$USER_NAME" -Doperators.hive.password="$PASSWORD" \
            -cp "$(classpath)" HiveServer "$HIVE_DIR" "$PORT" \
            >"$HIVE_DIR/stdout.log" 2>&1 </dev/null &
        echo $! >"$HIVE_DIR/pid"
    fi
    while ! answers; do
        if ! running; then
            tail -n 30 "$HIVE_DIR/stdout.log" "$HIVE_DIR/hive.log" >&2 || true
            die "HiveServer2 exited while starting (logs: $HIVE_DIR/stdout.log, $HIVE_DIR/hive.log)"
        fi
        if (( SECONDS - t0 >= 300 )); then
            die "HiveServer2 did not answer within 300 s (logs: $HIVE_DIR/stdout.log, $HIVE_DIR/hive.log)"
        fi
        sleep 0.5
    done
    # A session of a JVM of its own, as a test opens one.
    client "select 1" >/dev/null || die "HiveServer2 started but a session failed (logs: $HIVE_DIR/hive.log, $HIVE_DIR/stdout.log)"
    log "HiveServer2 up on $URL in $((SECONDS - t0)) s"
    env_lines
}

stop() {
    if running; then
        local pid
        pid=$(cat "$HIVE_DIR/pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$HIVE_DIR/pid"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) if running; then echo "running (pid $(cat "$HIVE_DIR/pid"))"; else echo stopped; fi ;;
    env) env_lines ;;
    sql) shift; java_tools; client "$@" ;;
    *) die "usage: hive.sh start|stop|status|env|sql STATEMENT..." ;;
esac
