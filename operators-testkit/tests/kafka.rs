//! The Kafka harness against the real broker: what its reader returns must be what a
//! user's consumer sees, or the sinks' exactly-once tests prove nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use operators_testkit::kafka::{Isolation, TestKafka, TestRecord};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn txn_producer(kafka: &TestKafka, tid: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("transactional.id", tid)
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

fn send(p: &BaseProducer, topic: &str, values: &[&str]) {
    for v in values {
        p.send(BaseRecord::<(), str>::to(topic).payload(*v).partition(0)).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

fn values(kafka: &TestKafka, topic: &str, iso: Isolation) -> Vec<String> {
    kafka.read(topic, iso).unwrap().iter().map(|c| c.text()).collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[test]
fn records_round_trip_in_partition_order() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("plain", 3).unwrap();
    let input: Vec<String> = (0..300).map(|i| format!("{{\"i\":{i}}}")).collect();
    kafka.produce_values(&topic, 3, &input).unwrap();
    let read = kafka.read(&topic, Isolation::ReadUncommitted).unwrap();
    assert_eq!(read.len(), 300);
    for p in 0..3 {
        let got: Vec<String> = read.iter().filter(|c| c.partition == p).map(|c| c.text()).collect();
        let want: Vec<String> = input.iter().skip(p as usize).step_by(3).cloned().collect();
        assert_eq!(got, want, "partition {p} keeps the order of writes");
    }
}

#[test]
fn read_committed_sees_committed_transactions_only() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("txn", 1).unwrap();
    let tid = unique("t");
    let p = txn_producer(&kafka, &tid);
    let timeout = Duration::from_secs(30);

    p.begin_transaction().unwrap();
    send(&p, &topic, &["a", "b", "c"]);
    p.commit_transaction(timeout).unwrap();

    p.begin_transaction().unwrap();
    send(&p, &topic, &["aborted-1", "aborted-2"]);
    p.abort_transaction(timeout).unwrap();

    p.begin_transaction().unwrap();
    send(&p, &topic, &["d"]);
    p.commit_transaction(timeout).unwrap();

    // Left open: invisible to read_committed (the reader stops at the last stable offset).
    p.begin_transaction().unwrap();
    send(&p, &topic, &["open"]);

    assert_eq!(values(&kafka, &topic, Isolation::ReadCommitted), ["a", "b", "c", "d"]);
    assert_eq!(
        values(&kafka, &topic, Isolation::ReadUncommitted),
        ["a", "b", "c", "aborted-1", "aborted-2", "d", "open"]
    );

    // A new producer with the same transactional id aborts the open transaction and
    // fences the old producer.
    let p2 = txn_producer(&kafka, &tid);
    assert!(p.commit_transaction(timeout).is_err(), "the fenced producer cannot commit");
    p2.begin_transaction().unwrap();
    send(&p2, &topic, &["e"]);
    p2.commit_transaction(timeout).unwrap();
    assert_eq!(values(&kafka, &topic, Isolation::ReadCommitted), ["a", "b", "c", "d", "e"]);
}

#[test]
fn offsets_committed_by_an_assigning_consumer_are_kept() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let kafka = TestKafka::start();
    let topic = kafka.topic("commits", 2).unwrap();
    let group = unique("g");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(5)).unwrap();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(7)).unwrap();
    c.assign(&tpl).unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
    let got = kafka.committed_offsets(&group, &topic).unwrap();
    assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![(0, 5), (1, 7)]);
}

#[test]
fn producing_to_a_missing_partition_is_an_error() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("missing-partition", 2).unwrap();
    let err = kafka.produce(&topic, [TestRecord::to_partition(5, &b"x"[..])]).unwrap_err();
    assert!(err.contains(&topic), "{err}");
}

#[test]
fn the_three_node_cluster_serves_with_a_node_down() {
    let kafka = TestKafka::cluster();
    let topic = kafka.topic("three", 1).unwrap();
    kafka.produce_values(&topic, 1, &["before"]).unwrap();
    let leader = kafka.leader(&topic, 0).unwrap();
    kafka.kill_node(leader).unwrap();
    // Replication factor 3 and min ISR 2: writes with acks=all go on with two nodes.
    let written = kafka.produce_values(&topic, 1, &["during"]);
    let restarted = kafka.start_node(leader);
    written.unwrap();
    restarted.unwrap();
    assert_eq!(values(&kafka, &topic, Isolation::ReadCommitted), ["before", "during"]);
    assert_ne!(kafka.leader(&topic, 0).unwrap(), -1);
}

#[test]
fn the_mock_cluster_is_available_for_fault_injection() {
    let kafka = TestKafka::mock();
    let topic = kafka.topic("mock", 2).unwrap();
    kafka.produce_values(&topic, 2, &["x", "y", "z"]).unwrap();
    assert_eq!(kafka.read(&topic, Isolation::ReadUncommitted).unwrap().len(), 3);
}

/// Why every exactly-once test runs on the real broker: librdkafka's mock cluster accepts
/// transactions but writes no markers, so a `read_committed` consumer sees the records of
/// an aborted transaction. Should a librdkafka upgrade fix that, this test fails and says
/// so.
#[test]
fn the_mock_cluster_shows_aborted_records_to_read_committed_consumers() {
    let kafka = TestKafka::mock();
    let topic = kafka.topic("mock-txn", 1).unwrap();
    let p = txn_producer(&kafka, "t-mock");
    p.begin_transaction().unwrap();
    send(&p, &topic, &["aborted"]);
    p.abort_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(
        values(&kafka, &topic, Isolation::ReadCommitted),
        ["aborted"],
        "librdkafka's mock cluster now hides aborted records"
    );
}
