//! The toolkit README's own `POST /jars/:jarid/run` bodies against `operator serve`,
//! with paths changed to local directories and brokers to the test Kafka (`KAFKA_BROKERS`)
//! and OpenSearch (`ES_URL`): Parquet → ES, CSV → Kafka with nesting, Kafka → Kafka SQL
//! canceled with a savepoint and resubmitted from it, and Kafka deduplication.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use operators_testkit::es::TestEs;
use operators_testkit::kafka::TestKafka;
use serde_json::{Value, json};
use support::server::Server;
use support::write_parquet;

const ENTRY: &str = "com._4paradigm.csp.operator.Main";

fn values(kafka: &TestKafka, topic: &str) -> Vec<Value> {
    kafka.read_committed_values(topic).unwrap().iter().map(|v| serde_json::from_str(v).unwrap()).collect()
}

/// Waits until `topic` holds `n` committed values and returns them.
fn wait_values(kafka: &TestKafka, topic: &str, n: usize, server: &Server, jid: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = values(kafka, topic);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {n} values in {topic}; job log:\n{}", got.len(), server.log(jid));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cancel(server: &Server, jid: &str) {
    let (status, body) = server.call("PATCH", &format!("/jobs/{jid}?mode=cancel"), None);
    assert_eq!(status, 202, "{body}");
    server.wait_state(jid, "CANCELED", Duration::from_secs(30));
}

#[test]
fn parquet_to_es_with_the_readme_body() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let es = rt.block_on(TestEs::start()).unwrap();
    let (user, password) = es.credentials().cloned().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("parquet");
    std::fs::create_dir_all(&input).unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("city", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(StringArray::from(vec!["bj", "sh", "sz"]))],
    )
    .unwrap();
    write_parquet(&input.join("part-0.parquet"), &[batch]);
    let index = es.index("lyh");
    let server = Server::start(tmp.path(), &tmp.path().join("state"), None);
    // As the README writes it, `"--source.path <dir>"` in one element included.
    let jid = server.run(json!({
        "entryClass": ENTRY,
        "programArgsList": [
            "--job.name", "es6 sink job example",
            "--source.type", "parquet", format!("--source.path {}", input.display()),
            "--source.watch.type", "PROCESS_ONCE",
            "--sink.type", "es",
            "--sink.es.server", es.servers(), "--sink.es.index", index, "--sink.es.type", "parquet",
            "--sink.es.username", user, "--sink.es.password", password,
            "--sink.es.sync.type", "full",
            "--sink.es.unique.column", "id",
            "--sink.es.version.column", "version",
            "--sink.es.version", "1586959594"
        ]
    }));
    server.wait_state(&jid, "FINISHED", Duration::from_secs(60));
    let docs = rt.block_on(es.documents(&index)).unwrap();
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert_eq!(docs["2"], json!({"id": 2, "city": "sh", "version": 1586959594}));
    let config = server.get(&format!("/jobs/{jid}/config"));
    assert_eq!(config["execution-config"]["user-config"]["sink.es.password"], "****");
    rt.block_on(es.delete_index(&index)).unwrap();
}

#[test]
fn csv_to_kafka_with_nesting_with_the_readme_body() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("server-csv", 1).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("csv");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.csv"), "id,name,k1\n1,n1,v1\n2,n2,v2\n").unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("state"), None);
    let jid = server.run(json!({
        "entryClass": ENTRY,
        "programArgs": format!(
            "--source.type csv --source.path {} --source.firstLine.schema true --sink.merge.enable true \
             --sink.kafka.brokers {} --sink.kafka.topic {topic}",
            input.display(),
            kafka.bootstrap_servers()
        ),
    }));
    let mut got = wait_values(&kafka, &topic, 2, &server, &jid);
    got.sort_by_key(|v| v["id"].to_string());
    assert_eq!(
        got,
        [
            json!({"id": "1", "feas": {"name": "n1", "k1": "v1"}}),
            json!({"id": "2", "feas": {"name": "n2", "k1": "v2"}})
        ]
    );
    cancel(&server, &jid);
}

#[test]
fn kafka_sql_canceled_with_a_savepoint_and_resubmitted_from_it_exactly_once() {
    let kafka = TestKafka::start();
    let (input, output) = (kafka.topic("server-json3", 2).unwrap(), kafka.topic("server-sql-out", 2).unwrap());
    let record = |i: i64| format!(r#"{{"id":{i},"name":"n{i}"}}"#);
    kafka.produce_values(&input, 2, &(0..300).map(record).collect::<Vec<_>>()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sp = tmp.path().join("savepoints");
    let server = Server::start(tmp.path(), &tmp.path().join("state"), None);
    let brokers = kafka.bootstrap_servers();
    let args = |group: &str| {
        format!(
            "--source.type kafka --source.kafka.brokers {brokers} --source.kafka.topic {input} \
             --auto.offset.reset earliest --group.id {group} --stream.sql.table t1 --stream.sql 'select * from t1' \
             --stream.sql.schema struct<id:Int,name:String> --sink.kafka.brokers {brokers} --sink.kafka.topic {output} \
             --stream.checkpoint.mode EXACTLY_ONCE --stream.checkpoint.interval 200"
        )
    };
    let first = server.run(json!({"entryClass": ENTRY, "programArgs": args("f1"), "savepointPath": null}));
    wait_values(&kafka, &output, 300, &server, &first);

    let (status, body) = server.call(
        "POST",
        &format!("/jobs/{first}/savepoints"),
        Some(json!({"target-directory": sp, "cancel-job": true})),
    );
    assert_eq!(status, 202, "{body}");
    let location = server.savepoint(&first, body["request-id"].as_str().unwrap());
    server.wait_state(&first, "CANCELED", Duration::from_secs(30));
    kafka.produce_values(&input, 2, &(300..600).map(record).collect::<Vec<_>>()).unwrap();

    // Another group, reading from the earliest offset: only the savepoint's offsets keep
    // the first 300 from being read again.
    let second = server.run(json!({"entryClass": ENTRY, "programArgs": args("f2"), "savepointPath": location}));
    assert_ne!(second, first);
    let got = wait_values(&kafka, &output, 600, &server, &second);
    // Given the time a duplicate would need to arrive, then counted.
    server.wait_checkpoints(&second, 3);
    let got = if got.len() == 600 { values(&kafka, &output) } else { got };
    let mut by_id: BTreeMap<i64, usize> = BTreeMap::new();
    for v in &got {
        *by_id.entry(v["id"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(by_id.len(), 600, "every id");
    assert!(
        by_id.values().all(|&n| n == 1),
        "no id twice: {:?}",
        by_id.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    cancel(&server, &second);
}

#[test]
fn kafka_deduplication_with_the_readme_body() {
    let kafka = TestKafka::start();
    let (input, output) = (kafka.topic("server-lyh-key2", 2).unwrap(), kafka.topic("server-dedup-out", 1).unwrap());
    // 120 records of 40 distinct (id, name) pairs; the same id with another name is
    // another key.
    let records: Vec<String> =
        (0..120).map(|i| format!(r#"{{"id":{},"name":"n{}","seq":{i}}}"#, i % 20, (i / 20) % 2)).collect();
    kafka.produce_values(&input, 2, &records).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("state"), None);
    let brokers = kafka.bootstrap_servers();
    // The README's body plus the record's schema, which this runner needs to decode
    // JSON into columns (README: "kafka_deduplication needs stream.sql.schema").
    let jid = server.run(json!({
        "entryClass": ENTRY,
        "programArgs": format!(
            "--source.type kafka_deduplication --source.kafka.brokers {brokers} --source.kafka.topic {input} \
             --auto.offset.reset earliest --group.id f1 --unique.keys id,name --sink.kafka.brokers {brokers} \
             --sink.kafka.topic {output} --stream.checkpoint.interval 200 \
             --stream.sql.schema struct<id:Int,name:String,seq:Int>"
        ),
    }));
    wait_values(&kafka, &output, 40, &server, &jid);
    server.wait_checkpoints(&jid, 2);
    let got = values(&kafka, &output);
    let keys: std::collections::BTreeSet<(i64, String)> =
        got.iter().map(|v| (v["id"].as_i64().unwrap(), v["name"].as_str().unwrap().to_string())).collect();
    assert_eq!((got.len(), keys.len()), (40, 40), "one record per key: {got:?}");
    cancel(&server, &jid);
}
