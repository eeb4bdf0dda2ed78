//! The toolkit README's Kafka pipelines through the `operator` binary, against the test
//! broker of operators-testkit (or `KAFKA_BROKERS`): text and Parquet files → Kafka with
//! and without nesting, a database table → Kafka, and Kafka → SQL → Kafka.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use operators_sources::jdbc::test_util::TestDb;
use operators_testkit::kafka::TestKafka;
use serde_json::{Value, json};
use support::{operator, run, stderr, write_parquet};

fn values(kafka: &TestKafka, topic: &str) -> Vec<Value> {
    let mut rows: Vec<Value> =
        kafka.read_committed_values(topic).unwrap().iter().map(|v| serde_json::from_str(v).unwrap()).collect();
    rows.sort_by_key(|r| r["id"].to_string());
    rows
}

#[test]
fn csv_to_kafka_with_and_without_nesting() {
    let kafka = TestKafka::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("csv");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "id,name,k1\n1,n1,v1\n2,n2,v2\n").unwrap();
    for (merge, expected) in [
        (
            "true",
            vec![
                json!({"id": "1", "feas": {"name": "n1", "k1": "v1"}}),
                json!({"id": "2", "feas": {"name": "n2", "k1": "v2"}}),
            ],
        ),
        ("false", vec![json!({"id": "1", "name": "n1", "k1": "v1"}), json!({"id": "2", "name": "n2", "k1": "v2"})]),
    ] {
        let topic = kafka.topic("csv-out", 1).unwrap();
        let o = run(
            tmp.path(),
            &[
                "--source.type",
                "csv",
                "--source.path",
                input.to_str().unwrap(),
                "--source.firstLine.schema",
                "true",
                "--source.watch.type",
                "PROCESS_ONCE",
                "--source.watch.settle",
                "0",
                "--sink.merge.enable",
                merge,
                "--sink.kafka.brokers",
                kafka.bootstrap_servers(),
                "--sink.kafka.topic",
                &topic,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(values(&kafka, &topic), expected, "merge {merge}");
    }
}

#[test]
fn parquet_to_kafka() {
    let kafka = TestKafka::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("parquet");
    std::fs::create_dir(&input).unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("city", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec![Some("beijing"), None]))],
    )
    .unwrap();
    write_parquet(&input.join("p.parquet"), &[batch]);
    let topic = kafka.topic("parquet-out", 2).unwrap();
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "parquet",
            "--source.path",
            input.to_str().unwrap(),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--source.watch.settle",
            "0",
            "--sink.type",
            "kafka",
            "--sink.kafka.brokers",
            kafka.bootstrap_servers(),
            "--sink.kafka.topic",
            &topic,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(values(&kafka, &topic), vec![json!({"id": 1, "city": "beijing"}), json!({"id": 2, "city": null})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_to_kafka() {
    let db = TestDb::postgres().await;
    db.exec("create table lyh (id int primary key, name text); insert into lyh values (1, 'n1'), (2, 'n2'), (3, null)")
        .await;
    let url = db.url.clone();
    let got = tokio::task::spawn_blocking(move || {
        let kafka = TestKafka::start();
        let tmp = tempfile::tempdir().unwrap();
        let topic = kafka.topic("db-out", 1).unwrap();
        let o = run(
            tmp.path(),
            &[
                "--source.type",
                "jdbc",
                "--source.db.url",
                &url,
                "--source.db.table",
                "lyh",
                "--sink.kafka.brokers",
                kafka.bootstrap_servers(),
                "--sink.kafka.topic",
                &topic,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        values(&kafka, &topic)
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![json!({"id": 1, "name": "n1"}), json!({"id": 2, "name": "n2"}), json!({"id": 3, "name": null})]
    );
    db.cleanup().await;
}

#[test]
fn kafka_to_sql_to_kafka() {
    let kafka = TestKafka::start();
    let input = kafka.topic("sql-in", 2).unwrap();
    let output = kafka.topic("sql-out", 2).unwrap();
    let records: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"id":{i},"city":"c{i}","name":"n{i}","x":"{i}","y":"{}","tags":"a|b"}}"#, i * 2))
        .collect();
    kafka.produce_values(&input, 2, &records).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = operator(tmp.path())
        .args([
            "--source.type",
            "kafka",
            "--source.kafka.brokers",
            kafka.bootstrap_servers(),
            "--source.kafka.topic",
            &input,
            "--group.id",
            "runner-sql",
            "--auto.offset.reset",
            "earliest",
            "--stream.sql.schema",
            "struct<id:BigInt,city:String,name:String,x:String,y:String,tags:String>",
            "--stream.sql",
            "select id, city, name, concat(x,'-', y) as location, arraySplit(tags, '|') as tags from t1 where id % 2 = 0",
            "--sink.kafka.brokers",
            kafka.bootstrap_servers(),
            "--sink.kafka.topic",
            &output,
            "--stream.checkpoint.interval",
            "200",
            "--stream.checkpoint.dir",
            tmp.path().join("ck").to_str().unwrap(),
            "--progress",
            "off",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = values(&kafka, &output);
        if got.len() >= 100 || Instant::now() > deadline {
            break got;
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended on its own");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let by_id: BTreeMap<i64, Value> = got.into_iter().map(|v| (v["id"].as_i64().unwrap(), v)).collect();
    assert_eq!(by_id.len(), 100, "every even id once");
    assert_eq!(by_id[&42], json!({"id": 42, "city": "c42", "name": "n42", "location": "42-84", "tags": ["a", "b"]}));
}
