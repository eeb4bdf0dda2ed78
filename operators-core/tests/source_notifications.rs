//! A bounded source hears of the completion of every checkpoint it took part in,
//! including the final one (a Kafka source commits its last offsets then).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::DiscardSink;
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::{Source, SourceContext, SourcePoll};
use operators_core::restart::RestartStrategy;
use operators_core::{CheckpointId, JobConfig, Pipeline, Result};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
}

struct Counting {
    left: u32,
    log: Log,
}

#[async_trait]
impl Source for Counting {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        if self.left == 0 {
            return Ok(SourcePoll::Finished);
        }
        self.left -= 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        Ok(SourcePoll::Batch(RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap()))
    }

    fn snapshot(&mut self, id: CheckpointId) -> Result<Option<Vec<u8>>> {
        self.log.push(format!("snapshot {id}"));
        Ok(None)
    }

    async fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        self.log.push(format!("complete {id}"));
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.log.push("close".into());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_checkpoint_is_notified_before_close() {
    let log = Log::default();
    let ckpt = tempfile::tempdir().unwrap();
    let p = Pipeline::new();
    let l = log.clone();
    p.source("counting", move |_: &_| Ok(Counting { left: 20, log: l.clone() }))
        .sink("discard", DiscardSink::default());
    p.run(
        JobConfig::new("notify")
            .with_restart(RestartStrategy::None)
            .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(20))),
    )
    .await
    .unwrap();
    let log = log.0.lock().unwrap().clone();
    let last_snapshot = log.iter().rev().find(|l| l.starts_with("snapshot")).unwrap().replace("snapshot", "complete");
    let n = log.len();
    assert_eq!(&log[n - 2..], [last_snapshot, "close".to_string()], "{log:?}");
}
