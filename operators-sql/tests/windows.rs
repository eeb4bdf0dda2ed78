//! Windowed SQL (`GROUP BY …, tumble(…)` / `hop(…)`) in a running pipeline, against a
//! DataFusion `GROUP BY` over the same rows as the oracle; and the constructs the window
//! path refuses, each named in its error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::operator::{Source, SourceContext, SourcePoll, TaskInfo};
use operators_core::window::WatermarkGenerator;
use operators_core::{JobConfig, Pipeline, Result};
use operators_sql::{SqlPlan, SqlStreamExt, SqlTransformBuilder, display_value};
use proptest::prelude::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k1", DataType::Utf8, true),
        Field::new("k2", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("x", DataType::Int64, true),
        Field::new("y", DataType::Float64, true),
    ]))
}

/// Rows in batches; event times out of order by less than `DISORDER` ms, unique per row
/// so first/last have no ties.
fn data(seed: u64, rows: usize, batch: usize) -> Vec<RecordBatch> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |m: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..rows {
        // Times advance ~37 ms a row with up to JITTER ms of disorder, bumped to be unique.
        let mut ts = 1_000 + i as i64 * 37 + next(JITTER as u64) as i64;
        while !seen.insert(ts) {
            ts += 1;
        }
        let k1 = ["a", "b", "c"][next(3) as usize];
        let k2 = next(2) as i64;
        let x = (next(10) != 0).then(|| next(100) as i64 - 20);
        let y = (next(5) != 0).then(|| next(1000) as f64 / 8.0);
        all.push((k1, k2, ts, x, y));
    }
    all.chunks(batch)
        .map(|c| {
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(StringArray::from(c.iter().map(|r| Some(r.0)).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(c.iter().map(|r| Some(r.1)).collect::<Vec<_>>())),
                    Arc::new(TimestampMillisecondArray::from(c.iter().map(|r| Some(r.2)).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(c.iter().map(|r| r.3).collect::<Vec<_>>())),
                    Arc::new(Float64Array::from(c.iter().map(|r| r.4).collect::<Vec<_>>())),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// The watermark's delay, more than the data's disorder: no row is late.
const DISORDER: i64 = 150;
const JITTER: i64 = 100;

/// Emits its batches, then ends.
struct Batches(Vec<RecordBatch>);

#[async_trait]
impl Source for Batches {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        if self.0.is_empty() {
            return Ok(SourcePoll::Finished);
        }
        Ok(SourcePoll::Batch(self.0.remove(0)))
    }
}

/// Rows as sorted strings; floats rounded so summation order does not matter.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Float64 if c.is_valid(r) => format!("{:.6}", c.as_primitive::<Float64Type>().value(r)),
                    _ => display_value(c.as_ref(), r),
                })
                .collect();
            out.push(cells.join(" | "));
        }
    }
    out.sort();
    out
}

async fn run_windowed(sql: &str, input: Vec<RecordBatch>, parallelism: usize) -> (SchemaRef, Vec<RecordBatch>) {
    let SqlPlan::Windowed(windowed) = SqlTransformBuilder::new(sql).with_schema(schema()).build_plan().unwrap() else {
        panic!("not planned as windowed: {sql}")
    };
    let windowed = windowed
        .with_watermark(WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(DISORDER as u64)))
        .unwrap();
    let plan = SqlPlan::from(windowed);
    let output = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("rows", move |_: &TaskInfo| Ok(Batches(input.clone())))
        .parallelism(1)
        .sql("sql", &plan)
        .sink("out", TwoPhaseMemorySink::new(output.clone()));
    p.run(JobConfig::new("windowed-sql").with_parallelism(parallelism)).await.unwrap();
    let batches = output.batches();
    for b in &batches {
        assert_eq!(b.schema().fields(), plan.output_schema().fields(), "batches have the planned schema");
    }
    (plan.output_schema(), batches)
}

async fn oracle(sql: &str, input: Vec<RecordBatch>) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    ctx.register_table("t1", Arc::new(MemTable::try_new(schema(), vec![input]).unwrap())).unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

const TUMBLE: &str = "select k1, k2, window_start, window_end, count(*) as c, count(x) as cx, sum(x) as s, \
     min(x) as mn, max(y) as mx, avg(y) as av, first_value(x) as f, last_value(k1) as l \
     from t1 where x is null or x <> 7 group by k1, k2, tumble(ts, interval '1' second)";

const TUMBLE_ORACLE: &str = "select k1, k2, \
     date_bin(interval '1' second, ts, timestamp '1970-01-01 00:00:00') as window_start, \
     date_bin(interval '1' second, ts, timestamp '1970-01-01 00:00:00') + interval '1' second as window_end, \
     count(*) as c, count(x) as cx, sum(x) as s, min(x) as mn, max(y) as mx, avg(y) as av, \
     first_value(x order by ts) filter (where x is not null) as f, last_value(k1 order by ts) as l \
     from t1 where x is null or x <> 7 group by 1, 2, 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumble_equals_a_group_by_over_date_bin() {
    let input = data(1, 2_000, 97);
    let (schema, got) = run_windowed(TUMBLE, input.clone(), 2).await;
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["k1", "k2", "window_start", "window_end", "c", "cx", "s", "mn", "mx", "av", "f", "l"]);
    let expected = oracle(TUMBLE_ORACLE, input).await;
    let (got, expected) = (rows(&got), rows(&expected));
    assert!(expected.len() > 100, "{} windows", expected.len());
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_equals_a_group_by_over_each_rows_windows() {
    let input = data(2, 1_500, 64);
    // Flink's order: slide, then size.
    let sql = "select k1, window_start, window_end, count(*) as c, sum(x) as s, max(x) as mx \
               from t1 group by k1, hop(ts, interval '500' millisecond, interval '1.5' second)";
    let (_, got) = run_windowed(sql, input.clone(), 1).await;
    // Each row is in the 3 windows starting at its 500-ms bin and the two before it.
    let oracle_sql = "select k1, to_timestamp_millis(ws) as window_start, to_timestamp_millis(ws + 1500) as window_end, \
                      count(*) as c, sum(x) as s, max(x) as mx \
                      from (select k1, x, (cast(ts as bigint) / 500) * 500 - o.i * 500 as ws \
                            from t1 cross join (values (0), (1), (2)) as o(i)) \
                      group by 1, 2, 3";
    let expected = oracle(oracle_sql, input).await;
    let (got, expected) = (rows(&got), rows(&expected));
    assert!(expected.len() > 100);
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_windows_flink_group_window_properties_and_is_update() {
    let input = data(3, 600, 50);
    let sql = "select tumble_start(ts, interval '2' second) as s, tumble_end(ts, interval '2' second) as e, \
               count(*) as c, is_update from t1 group by tumble(ts, interval '2' second)";
    let (_, got) = run_windowed(sql, input.clone(), 1).await;
    let oracle_sql = "select date_bin(interval '2' second, ts, timestamp '1970-01-01 00:00:00') as s, \
                      date_bin(interval '2' second, ts, timestamp '1970-01-01 00:00:00') + interval '2' second as e, \
                      count(*) as c, false as is_update from t1 group by 1";
    assert_eq!(rows(&got), rows(&oracle(oracle_sql, input).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_arguments_may_be_expressions() {
    let input = data(4, 800, 100);
    let sql = "select upper(k1) as uk, window_end, sum(x * 2) as s2, count(*) from t1 \
               group by upper(k1), tumble(ts, interval '1' second)";
    let (schema, got) = run_windowed(sql, input.clone(), 2).await;
    assert_eq!(schema.field(3).name(), "count(*)");
    let oracle_sql = "select upper(k1) as uk, \
                      date_bin(interval '1' second, ts, timestamp '1970-01-01 00:00:00') + interval '1' second as window_end, \
                      sum(x * 2) as s2, count(*) from t1 group by 1, 2";
    assert_eq!(rows(&got), rows(&oracle(oracle_sql, input).await));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn tumble_matches_the_oracle_for_random_inputs(seed in 0u64..10_000, rows_n in 1usize..400, batch in 1usize..60) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let input = data(seed, rows_n, batch);
        let (_, got) = runtime.block_on(run_windowed(TUMBLE, input.clone(), 2));
        let expected = runtime.block_on(oracle(TUMBLE_ORACLE, input));
        prop_assert_eq!(rows(&got), rows(&expected));
    }
}

fn plan_error(sql: &str) -> String {
    match SqlTransformBuilder::new(sql).with_schema(schema()).build_plan() {
        Ok(p) => panic!("planned `{sql}`: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn what_the_window_path_cannot_do_is_refused_by_name() {
    let w = "group by k1, tumble(ts, interval '1' second)";
    let cases: Vec<(String, &str)> = vec![
        (format!("select k1, count(*) from t1 {w} having count(*) > 1"), "HAVING"),
        (format!("select k1, sum(x) + 1 as s from t1 {w}"), "expressions over aggregates"),
        (format!("select k1, window_time from t1 {w}"), "window time attributes"),
        (format!("select k1, median(x) from t1 {w}"), "`median` is not supported"),
        (format!("select k1, count(distinct x) from t1 {w}"), "DISTINCT"),
        (format!("select k1, sum(x) filter (where x > 0) from t1 {w}"), "FILTER"),
        (format!("select k1, row_number() over () from t1 {w}"), "OVER"),
        (format!("select * from t1 {w}"), "SELECT *"),
        (format!("select k1, count(*) from t1 {w} order by k1"), "ORDER BY"),
        (format!("select k1, count(*) from t1 {w} limit 3"), "LIMIT"),
        (format!("select distinct k1, count(*) from t1 {w}"), "DISTINCT"),
        (format!("select k2, count(*) from t1 {w}"), "neither a GROUP BY key"),
        (format!("select k1, window_start + interval '1' second from t1 {w}"), "over window_start"),
        ("select k1, count(*) from t1 group by k1, tumble(ts, x)".into(), "literal INTERVAL"),
        ("select k1, count(*) from t1 group by k1, tumble(ts, interval '1' month)".into(), "months"),
        ("select k1, count(*) from t1 group by k1, tumble(ts)".into(), "tumble takes (time column, size)"),
        ("select k1, count(*) from t1 group by k1, tumble(k1, interval '1' second)".into(), "must be a Timestamp"),
        ("select k1, sum(k1) from t1 group by k1, tumble(ts, interval '1' second)".into(), "sum needs a number"),
        (
            "select k1, count(*) from t1 group by k1, hop(ts, interval '2' second, interval '1' second)".into(),
            "slide",
        ),
        (
            "select k1, count(*) from t1 group by k1, tumble(ts, interval '1' second), hop(ts, interval '1' second, interval '2' second)".into(),
            "two windows",
        ),
        ("select k1, count(*) from t1 group by k1".into(), "tumble(ts, INTERVAL '1' SECOND)"),
        ("select k1, tumble(ts, interval '1' second) from t1".into(), "window functions outside GROUP BY"),
        (format!("select k1, count(*) from t1 where nope > 1 {w}"), "nope"),
        (
            "select k1, tumble_start(ts, interval '5' second) from t1 group by k1, tumble(ts, interval '1' second)"
                .into(),
            "must repeat the GROUP BY's window",
        ),
    ];
    for (sql, needle) in cases {
        let e = plan_error(&sql);
        assert!(e.contains(needle), "`{sql}`: expected `{needle}` in: {e}");
    }
}

#[test]
fn build_points_windowed_queries_to_build_plan_and_stateless_queries_still_build() {
    let sql = "select k1, count(*) from t1 group by k1, tumble(ts, interval '1' second)";
    let e = SqlTransformBuilder::new(sql).with_schema(schema()).build().unwrap_err().to_string();
    assert!(e.contains("build_plan"), "{e}");
    let plan = SqlTransformBuilder::new("select k1, x + 1 as x1 from t1 where k2 = 1")
        .with_schema(schema())
        .build_plan()
        .unwrap();
    assert!(!plan.is_windowed());
    assert_eq!(plan.output_schema().field(1).name(), "x1");
}

#[test]
fn watermarks_must_be_on_the_windows_time_column() {
    let sql = "select k1, count(*) from t1 group by k1, tumble(ts, interval '1' second)";
    let SqlPlan::Windowed(w) = SqlTransformBuilder::new(sql).with_schema(schema()).build_plan().unwrap() else {
        panic!()
    };
    assert_eq!(w.time_column(), Some("ts"));
    let e = w.clone().with_watermark(WatermarkGenerator::bounded_out_of_orderness("x", Duration::ZERO)).unwrap_err();
    assert!(e.to_string().contains("groups by `ts`"), "{e}");
    let e = w.clone().with_watermark(WatermarkGenerator::bounded_out_of_orderness("k1", Duration::ZERO)).unwrap_err();
    assert!(e.to_string().contains("must be a Timestamp"), "{e}");
    let e = w.with_watermark(WatermarkGenerator::bounded_out_of_orderness("nope", Duration::ZERO)).unwrap_err();
    assert!(e.to_string().contains("not in the input schema"), "{e}");
}
