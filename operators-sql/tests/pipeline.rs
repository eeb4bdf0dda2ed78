//! The SQL transform inside a running pipeline: output, and bad input dead-lettered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::{CommittedOutput, GeneratorSource, TwoPhaseMemorySink};
use operators_core::operator::{BadRecordPolicy, Source, SourceContext, SourcePoll, TaskInfo};
use operators_core::{JobConfig, Pipeline, Result};
use operators_sql::SqlTransformBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_through_sql_filter_and_projection() {
    let sql = SqlTransformBuilder::new(
        "select id, concat(name, '/', cast(key as varchar)) as label from t1 where value >= 100",
    )
    .with_schema(GeneratorSource::schema())
    .build()
    .unwrap();
    let output = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(10_000).with_keys(10))
        .transform("sql", sql)
        .sink("out", TwoPhaseMemorySink::new(output.clone()));
    p.run(JobConfig::new("sql-pipeline")).await.unwrap();
    // value = id * 0.5 >= 100  <=>  id >= 200
    assert_eq!(output.num_rows(), 10_000 - 200);
    let batch = &output.batches()[0];
    assert_eq!(batch.schema().field(1).name(), "label");
    let id = batch.column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(batch.column(1).as_string::<i32>().value(0), format!("name-{}/{}", id % 10, id % 10));
}

/// Emits text rows, one of which does not fit the SQL schema.
struct TextSource(bool);

#[async_trait]
impl Source for TextSource {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        if self.0 {
            return Ok(SourcePoll::Finished);
        }
        self.0 = true;
        let schema =
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]));
        Ok(SourcePoll::Batch(RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["1", "two", "3"])), Arc::new(Int64Array::from(vec![10, 20, 30]))],
        )?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_fit_the_schema_are_dead_lettered() {
    let sql = SqlTransformBuilder::new("select id * 10 + n as v from t1")
        .with_schema_string("struct<id:BigInt,n:Int>")
        .unwrap()
        .with_bad_records(BadRecordPolicy::DeadLetter)
        .build()
        .unwrap();
    let output = CommittedOutput::default();
    let dead = CommittedOutput::default();
    let p = Pipeline::new();
    let out = p.source("text", |_: &TaskInfo| Ok(TextSource(false))).transform("sql", sql);
    out.dead_letters().sink("dlq", TwoPhaseMemorySink::new(dead.clone()));
    out.sink("out", TwoPhaseMemorySink::new(output.clone()));
    p.run(JobConfig::new("sql-dlq")).await.unwrap();
    let values: Vec<i64> =
        output.batches().iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
    assert_eq!(values, vec![20, 60]);
    let letters = dead.batches();
    assert_eq!(dead.num_rows(), 1);
    let reason = letters[0].column_by_name("reason").unwrap().as_string::<i32>().value(0);
    let record = letters[0].column_by_name("record").unwrap().as_string::<i32>().value(0);
    assert!(reason.contains("`two` is not a valid BigInt"), "{reason}");
    assert!(record.contains("\"two\""), "{record}");

    // With the default policy the same row fails the job, naming the value.
    let sql = SqlTransformBuilder::new("select id * 10 + n as v from t1")
        .with_schema_string("struct<id:BigInt,n:Int>")
        .unwrap()
        .build()
        .unwrap();
    let p = Pipeline::new();
    p.source("text", |_: &TaskInfo| Ok(TextSource(false)))
        .transform("sql", sql)
        .sink("out", TwoPhaseMemorySink::default());
    let err = p
        .run(JobConfig::new("sql-fail").with_restart(operators_core::restart::RestartStrategy::None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`two` is not a valid BigInt"), "{err}");
}
