#!/usr/bin/env bash
# Installs what is missing and starts every service the tests use, then prints the
# environment the tests read (`eval "$(testing/services/start-all.sh)"` sets it):
#
#   PostgreSQL  127.0.0.1:5432   trust auth, database test, wal_level=logical
#   MariaDB     127.0.0.1:3306   root without password, database test, binlog ROW
#   Kafka       127.0.0.1:9092   one node (KAFKA_BROKERS)
#   Kafka       127.0.0.1:19092,19093,19094  three nodes (KAFKA_CLUSTER_BROKERS)
#   OpenSearch  127.0.0.1:9200   (ES_URL; basic auth ES_USER / ES_PASSWORD)
#   HDFS        127.0.0.1:9000   NameNode and one DataNode (HDFS_URL; HADOOP_CONF_DIR for
#                                clients; WebHDFS on 127.0.0.1:9870), permissions off
#   HiveServer2 127.0.0.1:10000  Thrift binary, SASL PLAIN (HIVE_URL; HIVE_USER /
#                                HIVE_PASSWORD), embedded metastore, local warehouse
#   Flink 1.20's command-line client, installed only (FLINK_CLIENT: the `flink` wrapper)
#
# Each service script is idempotent: what runs already is left alone, what is installed
# is not fetched again. The JVM services start side by side; the whole takes about half a
# minute once the jars are fetched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"

# Only the environment below goes to stdout: whatever the installers and service
# scripts print (apt, Maven, a JVM) goes to stderr, so `eval` never runs it. (Not by
# moving stdout to another descriptor: the services started in the background would
# inherit it and keep a caller's `$(...)` waiting for ever.)

t0=$SECONDS
# Not a server: downloads and installs, side by side with the services' start.
"$here/flink-client.sh" install >&2 &
flink_client=$!
"$here/postgres.sh" start >&2
"$here/mariadb.sh" start >&2
# Fetch Kafka's jars once before its two clusters start side by side.
"$here/kafka.sh" start single >&2 &
kafka_single=$!
"$here/opensearch.sh" start >&2 &
opensearch=$!
"$here/hdfs.sh" start >&2 &
hdfs=$!
"$here/hive.sh" start >&2 &
hive=$!
wait $kafka_single || die "Kafka (single node) did not start"
"$here/kafka.sh" start cluster >&2 || die "Kafka (three nodes) did not start"
wait $opensearch || die "OpenSearch did not start"
wait $hdfs || die "HDFS did not start"
wait $hive || die "HiveServer2 did not start"
wait $flink_client || die "Flink's command-line client was not installed"
log "all services up in $((SECONDS - t0)) s"

cat <<EOF
export KAFKA_BROKERS=127.0.0.1:9092
export KAFKA_CLUSTER_BROKERS=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
export ES_URL=http://127.0.0.1:9200
export ES_USER=${ES_USER:-operators}
export ES_PASSWORD=${ES_PASSWORD:-operators-test-pw}
export ES_API_KEY=${ES_API_KEY:-operators-key:operators-key-secret}
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
export HDFS_URL=hdfs://127.0.0.1:9000
export HADOOP_CONF_DIR=$(printf %q "$("$here/hdfs.sh" conf-dir)")
export FLINK_CLIENT=$(printf %q "$("$here/flink-client.sh" path)")
EOF
"$here/hive.sh" env
