//! The toolkit README's "Hive -> Kafka" body posted to `operator serve`, against the
//! local HiveServer2 (`testing/services/hive.sh`) and Kafka: only the hosts and the
//! credentials differ from the README's (those of the test servers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use operators_testkit::kafka::TestKafka;
use serde_json::{Value, json};
use support::server::Server;

#[test]
fn readme_hive_to_kafka_body_posted_to_the_server() {
    // The README's database and table: `lyh`.
    support::hive::sql(&[
        "create database if not exists lyh",
        "drop table if exists lyh.lyh",
        "create table lyh.lyh (id int, name string, score double)",
        "insert into lyh.lyh values (1, 'a', 0.5), (2, 'b', 1.5), (3, 'c', null), (4, 'd', 4.5), (5, 'e', 5.5)",
    ]);
    let (_, user, password) = support::hive::settings();
    let url = support::hive::url_of("lyh");
    let host = url.trim_start_matches("jdbc:hive2://").split('/').next().unwrap().to_string();
    let kafka = TestKafka::start();
    let topic = kafka.topic("hive-readme", 1).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("state"), None);
    let jid = server.run(json!({
        "entryClass": "com._4paradigm.csp.operator.Main",
        "programArgs": format!(
            "--source.type jdbc --source.db.type hive --source.db.url jdbc:hive2://{host}/lyh \
             --source.db.username {user} --source.db.password {password} --source.db.table lyh \
             --source.db.sql 'select * from lyh limit 3' --sink.kafka.brokers {} --sink.kafka.topic {topic}",
            kafka.bootstrap_servers()
        ),
    }));
    server.wait_state(&jid, "FINISHED", Duration::from_secs(90));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: Vec<Value>;
    loop {
        got = kafka.read_committed_values(&topic).unwrap().iter().map(|v| serde_json::from_str(v).unwrap()).collect();
        if got.len() >= 3 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(got.len(), 3, "{got:?}\n{}", server.log(&jid));
    let rows = [
        json!({"id": 1, "name": "a", "score": 0.5}),
        json!({"id": 2, "name": "b", "score": 1.5}),
        json!({"id": 3, "name": "c", "score": null}),
        json!({"id": 4, "name": "d", "score": 4.5}),
        json!({"id": 5, "name": "e", "score": 5.5}),
    ];
    for v in &got {
        assert!(rows.contains(v), "{v} is not a row of lyh");
    }
    got.sort_by_key(|v| v["id"].as_i64());
    got.dedup();
    assert_eq!(got.len(), 3, "three distinct rows: {got:?}");
    // The password is not served back.
    let config = server.get(&format!("/jobs/{jid}/config"));
    assert_eq!(config["execution-config"]["user-config"]["source.db.password"], "****");
}
