//! Windowed `stream.sql` through the `operator` binary: a tumble and a hop query with
//! `stream.sql.watermark` over a CSV file against counts computed here, Kafka → windowed
//! SQL → Kafka, the window operators in `--dry-run`, and the watermark parameter refused
//! or warned about when it is missing, wrong or has no effect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use operators_testkit::kafka::TestKafka;
use serde_json::{Value, json};
use support::{json_rows, operator, run, stderr};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SCHEMA: &str = r#"{"id":"BigInt","ts":"Timestamp","v":"BigInt"}"#;
/// 2026-01-01 00:00:00 UTC in epoch milliseconds.
const EPOCH_2026: i64 = 1_767_225_600_000;

/// `2026-01-01 00:00:SS.mmm` for an offset under a minute.
fn stamp(offset_ms: i64) -> String {
    format!("2026-01-01 00:00:{:02}.{:03}", offset_ms / 1000, offset_ms % 1000)
}

/// Writes one CSV file of `rows` rows `id,ts,v`, times out of order by less than 150 ms,
/// half written as epoch milliseconds and half as `yyyy-MM-dd HH:mm:ss.SSS`; returns
/// (id, ts offset, v) per row.
fn write_input(dir: &Path, rows: usize) -> Vec<(i64, i64, i64)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let mut text = String::new();
    let mut out = Vec::new();
    for i in 0..rows {
        let offset = 50 + i as i64 * 13 + next(150) as i64;
        let id = next(4) as i64 + 1;
        let v = next(10) as i64;
        if i % 2 == 0 {
            text.push_str(&format!("{id},{},{v}\n", EPOCH_2026 + offset));
        } else {
            text.push_str(&format!("{id},{},{v}\n", stamp(offset)));
        }
        out.push((id, offset, v));
    }
    std::fs::write(dir.join("events.csv"), text).unwrap();
    out
}

fn job(cwd: &Path, input: &Path, out: &Path, sql: &str, extra: &[&str]) -> std::process::Output {
    let ck = cwd.join("ck");
    let mut args = vec![
        "--source.type",
        "csv",
        "--source.path",
        s(input),
        "--source.watch.type",
        "PROCESS_ONCE",
        "--source.batch.size",
        "16",
        "--sink.type",
        "file",
        "--sink.path",
        s(out),
        "--stream.checkpoint.dir",
        s(&ck),
        "--progress",
        "off",
        "--stream.sql.enable",
        "true",
        "--stream.sql.schema.json",
        SCHEMA,
        "--stream.sql",
        sql,
    ];
    args.extend_from_slice(extra);
    run(cwd, &args)
}

fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[test]
fn a_tumble_query_with_a_watermark_counts_every_window_of_a_csv_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let rows = write_input(&input, 600);
    let out = tmp.path().join("out");
    let sql = "select id, window_start, window_end, count(*) as cnt, sum(v) as total \
               from t1 where v <> 3 group by id, tumble(ts, interval '1' second)";
    let o = job(
        tmp.path(),
        &input,
        &out,
        sql,
        &[
            "--stream.sql.watermark",
            "ts,200ms",
            "--stream.sql.watermark.idle.timeout",
            "30000",
            "--stream.parallelism",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let mut windows: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for &(id, offset, v) in rows.iter().filter(|r| r.2 != 3) {
        let w = windows.entry((id, offset / 1000)).or_default();
        w.0 += 1;
        w.1 += v;
    }
    let expected: Vec<Value> = windows
        .iter()
        .map(|(&(id, second), &(cnt, total))| {
            json!({
                "id": id,
                "window_start": stamp(second * 1000),
                "window_end": stamp((second + 1) * 1000),
                "cnt": cnt,
                "total": total,
            })
        })
        .collect();
    assert!(expected.len() >= 30, "{} windows", expected.len());
    assert_eq!(sorted(json_rows(&out)), sorted(expected));
}

#[test]
fn a_hop_query_in_flinks_argument_order_with_a_ddl_style_watermark() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let rows = write_input(&input, 300);
    let out = tmp.path().join("out");
    // HOP(time, slide, size): 2-second windows every second.
    let sql = "select window_start, count(*) as cnt from t1 group by hop(ts, interval '1' second, interval '2' second)";
    let o = job(tmp.path(), &input, &out, sql, &["--stream.sql.watermark", "ts - INTERVAL '0.2' SECOND"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut windows: BTreeMap<i64, i64> = BTreeMap::new();
    for &(_, offset, _) in &rows {
        let second = offset / 1000;
        *windows.entry(second).or_default() += 1;
        *windows.entry(second - 1).or_default() += 1;
    }
    let expected: Vec<Value> = windows
        .iter()
        .map(|(&start, &cnt)| {
            let window_start = if start < 0 { "2025-12-31 23:59:59.000".to_string() } else { stamp(start * 1000) };
            json!({"window_start": window_start, "cnt": cnt})
        })
        .collect();
    assert_eq!(sorted(json_rows(&out)), sorted(expected));
}

#[test]
fn the_dry_run_shows_the_window_operators_and_a_missing_watermark_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_input(&input, 10);
    let out = tmp.path().join("out");
    let sql =
        "select id, window_start, window_end, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second)";
    let dry = job(tmp.path(), &input, &out, sql, &["--stream.sql.watermark", "ts,200ms", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = String::from_utf8_lossy(&dry.stdout);
    for op in
        ["sql-watermarks [transform", "sql [transform", "sql-window [transform", "<- sql via HASH[id]", "sql-project"]
    {
        assert!(text.contains(op), "{op}: {text}");
    }

    let o = job(tmp.path(), &input, &out, sql, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("`stream.sql.watermark`") && err.contains("ts,200ms"), "{err}");
    assert!(!out.exists() || json_rows(&out).is_empty(), "nothing ran");
}

#[test]
fn a_watermark_without_a_window_is_warned_about_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_input(&input, 10);
    let out = tmp.path().join("out");
    let o = job(tmp.path(), &input, &out, "select id, v from t1", &["--stream.sql.watermark", "ts,200ms"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err.lines().find(|l| l.contains("warning") && l.contains("`stream.sql.watermark`"));
    assert!(line.is_some_and(|l| l.contains("no window")), "{err}");
    let o = job(
        tmp.path(),
        &input,
        &out,
        "select id, v from t1",
        &["--stream.sql.watermark.idle.timeout", "100", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("`stream.sql.watermark.idle.timeout` has no effect"), "{text}");
    assert_eq!(json_rows(&out).len(), 10);

    let windowed = "select id, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second)";
    for (value, needle) in [
        ("v,200ms", "must be a Timestamp"),
        ("nope,1s", "not in the SQL input schema"),
        ("ts,5 parsecs", "not a duration"),
        ("ts - INTERVAL '1' MONTH", "months"),
    ] {
        let o = job(tmp.path(), &input, &tmp.path().join("out2"), windowed, &["--stream.sql.watermark", value]);
        assert!(!o.status.success(), "{value}");
        let err = stderr(&o);
        assert!(err.contains("`stream.sql.watermark`") && err.contains(needle), "{value}: {err}");
    }
    // A windowed query the window path cannot run names the construct and the key.
    let o = job(
        tmp.path(),
        &input,
        &tmp.path().join("out3"),
        "select id, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second) having count(*) > 2",
        &["--stream.sql.watermark", "ts,200ms"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("`stream.sql`") && err.contains("HAVING"), "{err}");
}

#[test]
fn kafka_to_a_tumble_count_to_kafka() {
    let kafka = TestKafka::start();
    // One partition: the watermark trails the highest time its source subtask has read,
    // so the disorder across partitions read by one subtask would count as lateness.
    let input = kafka.topic("window-in", 1).unwrap();
    let output = kafka.topic("window-out", 1).unwrap();
    let mut expected: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    let mut records = Vec::new();
    for i in 0..400i64 {
        let offset = i * 11 + (i * 7919) % 120;
        let id = i % 3;
        // Both forms the JSON decoder reads for a Timestamp: epoch ms and the text form.
        records.push(if i % 2 == 0 {
            format!(r#"{{"id":{id},"ts":{}}}"#, EPOCH_2026 + offset)
        } else {
            format!(r#"{{"id":{id},"ts":"{}"}}"#, stamp(offset))
        });
        *expected.entry((id, offset / 1000)).or_default() += 1;
    }
    // A later record moves the watermark past every window above; its own stays open.
    records.push(format!(r#"{{"id":0,"ts":{}}}"#, EPOCH_2026 + 30_000));
    kafka.produce_values(&input, 1, &records).unwrap();
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
            "runner-window",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","ts":"Timestamp"}"#,
            "--stream.sql",
            "select id, window_start, window_end, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second)",
            "--stream.sql.watermark",
            "ts,200ms",
            "--sink.kafka.brokers",
            kafka.bootstrap_servers(),
            "--sink.kafka.topic",
            &output,
            "--stream.checkpoint.enable",
            "true",
            "--stream.checkpoint.mode",
            "EXACTLY_ONCE",
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
    let rows = |kafka: &TestKafka| -> Vec<Value> {
        kafka.read_committed_values(&output).unwrap().iter().map(|v| serde_json::from_str(v).unwrap()).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = rows(&kafka);
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended on its own");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let expected: Vec<Value> = expected
        .iter()
        .map(|(&(id, second), &cnt)| {
            json!({
                "id": id,
                "window_start": stamp(second * 1000),
                "window_end": stamp((second + 1) * 1000),
                "cnt": cnt,
            })
        })
        .collect();
    assert_eq!(sorted(got), sorted(expected));
}

#[test]
fn rows_later_than_their_window_go_to_the_late_path_and_are_not_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // Key 1 in order over 5 s; then one row of key 2 at 0.05 s, when the watermark stands
    // near 4.7 s: its window [0, 1) closed long ago.
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!("1,{},1\n", EPOCH_2026 + i * 100));
    }
    text.push_str(&format!("2,{},7\n", EPOCH_2026 + 50));
    for i in 50..60 {
        text.push_str(&format!("1,{},1\n", EPOCH_2026 + i * 100));
    }
    std::fs::write(input.join("events.csv"), text).unwrap();
    let out = tmp.path().join("out");
    let late = tmp.path().join("late");
    let sql = "select id, window_start, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second)";
    let o =
        job(tmp.path(), &input, &out, sql, &["--stream.sql.watermark", "ts,200ms", "--stream.sql.late.path", s(&late)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: Vec<Value> =
        (0..6).map(|second| json!({"id": 1, "window_start": stamp(second * 1000), "cnt": 10})).collect();
    assert_eq!(sorted(json_rows(&out)), sorted(expected));
    let late_rows = json_rows(&late);
    assert_eq!(late_rows.len(), 1, "{late_rows:?}");
    let row = late_rows[0].to_string();
    assert!(row.contains('2') && row.contains("00:00:00.050"), "{row}");
}
