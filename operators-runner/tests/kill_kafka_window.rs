//! Kill test: the runner counts a Kafka topic per key in 1-second tumbling event-time
//! windows (`stream.sql` with `tumble`, watermarks from `stream.sql.watermark`) into
//! another topic in EXACTLY_ONCE mode, at parallelism 2 (the rows go through a keyed
//! exchange to two window subtasks), and is SIGKILLed at random moments, at least 20
//! times, each time restarted from its checkpoints, against the real Kafka in
//! `KAFKA_BROKERS`, which outlives every run. A `read_committed` reader must never see a
//! window twice, nor a count that differs from the oracle's (every window that fired was
//! complete), and in the end sees every window of the input exactly once, with the count
//! the oracle computed from the input.
//!
//! Windows that fired before the last completed checkpoint and are replayed after a
//! restore (their rows are read again from the checkpointed offsets, but their state is
//! the checkpointed one) must not be emitted again: the assertion on duplicates is what
//! exactly-once has to prove here. (With AT_LEAST_ONCE instead, it fails at the first
//! kill after a window fired.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use operators_testkit::kafka::{TestKafka, TestRecord};
use rand::Rng;
use support::kill::{Ends, KillLoop, Kills, LastRun, concat_args, kafka_sink_args, restartable_args, seeded_rng};
use support::spawn_logged;

const KILLS: usize = 22;
/// Input records (the flush record comes on top).
const RECORDS: i64 = 8000;
/// Distinct keys.
const KEYS: i64 = 200;
/// The event-time clock advances by 0 to `2 * STEP_MS` ms per record, so the input spans
/// about `RECORDS * STEP_MS` ms of event time (8 s: 8 or 9 windows per key, about 5 rows
/// in each; 1 600 to 1 750 windows in all).
const STEP_MS: i64 = 1;
/// Bounded disorder: every record's time is at most this far behind the highest time
/// before it.
const DISORDER_MS: i64 = 150;
/// The watermark delay given to the runner, strictly above `DISORDER_MS`.
const WATERMARK_DELAY_MS: i64 = 200;
const WINDOW_MS: i64 = 1000;
/// Key of the flush record, which no input record has.
const FLUSH_KEY: i64 = -1;

/// `(id, window_start)`, window start in epoch milliseconds.
type Window = (i64, i64);

/// Epoch milliseconds of a timestamp the JSON encoder wrote: `yyyy-MM-dd HH:mm:ss.SSS`
/// (the toolkit's format), or a number of milliseconds.
fn millis(v: &serde_json::Value, what: &str, row: &str) -> i64 {
    match v {
        serde_json::Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("{what} of {row} is not an integer")),
        serde_json::Value::String(s) => operators_core::schema::parse_timestamp_ms(s)
            .unwrap_or_else(|| panic!("{what} of {row} is not a timestamp")),
        _ => panic!("{what} of {row} is neither a number nor a timestamp string"),
    }
}

/// `(id, window_start) -> count` of every committed output row; panics on a window seen
/// twice or one whose end is not its start plus the window size.
fn committed(kafka: &TestKafka, topic: &str) -> BTreeMap<Window, i64> {
    let mut out = BTreeMap::new();
    for v in kafka.read_committed_values(topic).unwrap() {
        let r: serde_json::Value = serde_json::from_str(&v).unwrap_or_else(|e| panic!("{e}: {v}"));
        let id = r["id"].as_i64().unwrap_or_else(|| panic!("no integer id in {v}"));
        let start = millis(&r["window_start"], "window_start", &v);
        let end = millis(&r["window_end"], "window_end", &v);
        assert_eq!(end - start, WINDOW_MS, "a 1-second tumbling window: {v}");
        assert_eq!(start.rem_euclid(WINDOW_MS), 0, "windows are aligned to the epoch: {v}");
        let cnt = r["cnt"].as_i64().unwrap_or_else(|| panic!("no integer cnt in {v}"));
        if let Some(prev) = out.insert((id, start), cnt) {
            panic!("window (id {id}, start {start}) committed twice (counts {prev} and {cnt})");
        }
    }
    out
}

/// Every committed window is one of the oracle's, with the oracle's count: a window fires
/// only once the watermark says all of its rows arrived, so even a partial output holds
/// final counts only. The flush record's window never fires (nothing after it moves the
/// watermark past it, and a Kafka source never ends), so it is no window of the oracle.
fn check_against(oracle: &BTreeMap<Window, i64>, seen: &BTreeMap<Window, i64>, when: &str) {
    for (window, cnt) in seen {
        match oracle.get(window) {
            Some(expected) => assert_eq!(cnt, expected, "{when}: count of window {window:?}"),
            None if window.0 == FLUSH_KEY => panic!("{when}: the flush record's window {window:?} fired"),
            None => panic!("{when}: window {window:?} (count {cnt}) has no row in the input"),
        }
    }
}

#[test]
fn sigkill_at_random_moments_emits_every_window_count_exactly_once() {
    let kafka = TestKafka::start();
    let mut rng = seeded_rng(None);

    // One input partition, deliberately. The watermark is generated after the source,
    // over the merged stream of every partition a source subtask reads, as
    // `max time seen − delay − 1`. With several partitions the source reads them unevenly
    // (one fetch from each in turn, and after a restore one partition's whole backlog may
    // come before another's), so the disorder of the merged stream is not bounded by
    // anything this test controls: rows of a slow partition would fall behind the
    // watermark and be dropped as late, and the counts would be short of the oracle's for
    // a reason that is not a bug. Only a delay covering the whole event-time span would be
    // safe, and then every window would fire at the flush record and the test would prove
    // little about windows firing while the job is killed. With one partition the source's
    // order is the produced order, whose disorder is at most DISORDER_MS (150 ms) <
    // WATERMARK_DELAY_MS (200 ms): a row of window [s, s + 1000) is late only when the
    // watermark reached s + 999 ≥ ts before it arrived, that is max − 201 ≥ ts, and every
    // row has ts ≥ max − 150. So no row is late, and every window's count must equal the
    // oracle's.
    //
    // At parallelism 2 one of the two source subtasks has no partition: it never sees a row,
    // and without an idle timeout its watermark generator would hold event time back until
    // end of input (which a Kafka source never reaches). With
    // stream.sql.watermark.idle.timeout it declares itself idle after 1 s of every run and
    // the windows follow the first subtask's watermark alone; idleness only leaves an input
    // out of the minimum, it never moves a watermark forward, so the argument above holds.
    let input = kafka.topic("kill-window-in", 1).unwrap();
    let output = kafka.topic("kill-window-out", 2).unwrap();

    // Event times from a random phase against the epoch's seconds, as JSON numbers of epoch
    // milliseconds (the JSON decoder reads a number into the Timestamp column as ms).
    let base: i64 = 1_700_000_000_000 + rng.random_range(0..WINDOW_MS);
    let mut clock = base;
    let mut max = i64::MIN;
    let mut oracle: BTreeMap<Window, i64> = BTreeMap::new();
    let mut records = Vec::new();
    for seq in 0..RECORDS {
        clock += rng.random_range(0..=2 * STEP_MS);
        // clock never goes back and every earlier ts ≤ its clock ≤ clock, so this ts is at
        // most DISORDER_MS behind the running maximum.
        let ts = clock - rng.random_range(0..=DISORDER_MS);
        assert!(max == i64::MIN || ts >= max - DISORDER_MS);
        max = max.max(ts);
        let id = rng.random_range(0..KEYS);
        *oracle.entry((id, ts.div_euclid(WINDOW_MS) * WINDOW_MS)).or_default() += 1;
        records.push(TestRecord::to_partition(0, format!(r#"{{"id":{id},"ts":{ts},"seq":{seq}}}"#)));
    }
    // Far in the future: the watermark passes the end of every real window (the last one
    // ends before max + 1000; the watermark becomes max + 10000 − 201). Its own window
    // never closes and is not in the oracle.
    let flush = max + 10 * WINDOW_MS;
    records.push(TestRecord::to_partition(0, format!(r#"{{"id":{FLUSH_KEY},"ts":{flush},"seq":{RECORDS}}}"#)));
    kafka.produce(&input, records).unwrap();
    let windows = oracle.len();
    eprintln!("{RECORDS} records, {KEYS} keys, {} ms of event time from {base}: {windows} windows", max - base + 1);

    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let watermark = format!("ts,{WATERMARK_DELAY_MS}ms");
    let args = concat_args(&[
        &[
            "--job.name",
            "kill-kafka-window",
            "--source.type",
            "kafka",
            "--source.kafka.brokers",
            kafka.bootstrap_servers(),
            "--source.kafka.topic",
            &input,
            "--group.id",
            "kill-kafka-window",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","ts":"Timestamp","seq":"BigInt"}"#,
            "--stream.sql",
            "select id, window_start, window_end, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second)",
            "--stream.sql.watermark",
            &watermark,
            "--stream.parallelism",
            "2",
            "--stream.sql.watermark.idle.timeout",
            "1000",
            "--source.batch.size",
            "50",
            // The limit is shared by the two subtasks of the rate limiter, and only one gets
            // rows: about 200 rows a second. The 22 runs (1 to 3 s each, start-up and the first
            // second's idle wait included) got through 4 to 5 of the 8 s of event time here,
            // so windows fire while the job is being killed, and the last, unkilled run
            // through the rest in about 15 s; about 95 s in all.
            "--stream.rate.limit",
            "400",
        ],
        &kafka_sink_args(kafka.bootstrap_servers(), &output),
        &restartable_args(Some("EXACTLY_ONCE"), "100", ck.to_str().unwrap()),
    ]);
    let started = Instant::now();
    let kill_loop =
        KillLoop { cwd: tmp.path(), args: &args, delays_ms: 1000..3000, kills: KILLS, ends: Ends::MustNotFinish };
    let Kills { midway, .. } = kill_loop.run(&mut rng, |kill, delay| {
        let seen = committed(&kafka, &output);
        check_against(&oracle, &seen, &format!("kill {kill}"));
        eprintln!("kill {kill}: after {delay:?}, {} of {windows} windows committed", seen.len());
        !seen.is_empty() && seen.len() < windows
    });
    assert!(
        midway >= KILLS / 2,
        "most kills hit a job with partial output ({midway}); the last run logged:\n{}",
        std::fs::read_to_string(tmp.path().join(format!("run-{KILLS}.log"))).unwrap_or_default()
    );

    // A last run, unkilled, until every window is out (the Kafka source never ends).
    let log = tmp.path().join("run-last.log");
    let mut last = LastRun::new(spawn_logged(tmp.path(), &args, &log), Some(log.as_path()), Duration::from_secs(120));
    let got = last.wait_for(
        || {
            let seen = committed(&kafka, &output);
            check_against(&oracle, &seen, "last run");
            seen
        },
        |seen: &BTreeMap<Window, i64>| seen.len() >= windows,
    );
    // Let more checkpoints complete: nothing may appear twice afterwards either.
    last.stop_after(Duration::from_secs(2));
    let missing: Vec<&Window> = oracle.keys().filter(|w| !got.contains_key(w)).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {windows} windows committed after 120 s; missing e.g. {missing:?}; the last run logged:\n{}",
        got.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(got, oracle, "every window's count equals the oracle's");
    assert_eq!(committed(&kafka, &output), oracle, "no window emitted again after all were out");
    eprintln!("{KILLS} kills ({midway} with partial output), {windows} windows, {:?}", started.elapsed());
}
