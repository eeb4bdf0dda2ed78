//! A deterministic generator source.
//!
//! Rows are split into a fixed number of *splits* (like Kafka partitions): row `g` of the
//! sequence belongs to split `g % splits` at offset `g / splits`. Splits are assigned to
//! subtasks round robin and the checkpointed state is the next offset of each split, so a
//! job restored at another parallelism continues every split exactly where it stopped.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::message::CheckpointId;
use crate::operator::{RestoredState, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo};

/// Generates `id, key, value, name` rows.
///
/// - `id`: position in the sequence (Int64), unique;
/// - `key`: `id % keys` (Int64);
/// - `value`: `id * 0.5` (Float64);
/// - `name`: `"name-<key>"` (Utf8).
#[derive(Debug, Clone)]
pub struct GeneratorSource {
    rows: Option<u64>,
    batch_size: usize,
    splits: u32,
    keys: u64,
    rows_per_second: Option<u64>,
}

impl GeneratorSource {
    /// `rows` rows, then finished.
    pub fn bounded(rows: u64) -> Self {
        Self { rows: Some(rows), batch_size: 1024, splits: 8, keys: 1000, rows_per_second: None }
    }

    /// Rows forever.
    pub fn unbounded() -> Self {
        Self { rows: None, ..Self::bounded(0) }
    }

    /// Rows per batch (default 1024).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Number of splits (default 8); parallelism beyond it leaves subtasks idle.
    pub fn with_splits(mut self, n: u32) -> Self {
        self.splits = n.max(1);
        self
    }

    /// Number of distinct keys (default 1000).
    pub fn with_keys(mut self, n: u64) -> Self {
        self.keys = n.max(1);
        self
    }

    /// Limits the rate over all subtasks.
    pub fn with_rate_limit(mut self, rows_per_second: u64) -> Self {
        self.rows_per_second = Some(rows_per_second.max(1));
        self
    }

    /// Schema of the generated rows.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("key", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
            Field::new("name", DataType::Utf8, false),
        ]))
    }

    fn split_len(&self, split: u32) -> Option<u64> {
        self.rows.map(|rows| {
            let s = u64::from(split);
            if rows > s { (rows - s - 1) / u64::from(self.splits) + 1 } else { 0 }
        })
    }
}

impl SourceFactory for GeneratorSource {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        let splits =
            (0..self.splits).filter(|s| (*s as usize) % info.parallelism == info.subtask).map(|s| (s, 0)).collect();
        let share = info.parallelism.min(self.splits as usize).max(1) as u64;
        Ok(Box::new(GeneratorReader {
            cfg: self.clone(),
            splits,
            cursor: 0,
            started: None,
            emitted: 0,
            rate: self.rows_per_second.map(|r| (r / share).max(1)),
        }))
    }
}

struct GeneratorReader {
    cfg: GeneratorSource,
    /// (split, next offset) of the splits this subtask owns.
    splits: Vec<(u32, u64)>,
    cursor: usize,
    started: Option<Instant>,
    emitted: u64,
    rate: Option<u64>,
}

impl GeneratorReader {
    fn batch(&self, split: u32, from: u64, n: u64) -> Result<RecordBatch> {
        let splits = u64::from(self.cfg.splits);
        let ids: Vec<i64> = (from..from + n).map(|k| (k * splits + u64::from(split)) as i64).collect();
        let keys: Vec<i64> = ids.iter().map(|id| id % self.cfg.keys as i64).collect();
        let values: Vec<f64> = ids.iter().map(|id| *id as f64 * 0.5).collect();
        let mut names = StringBuilder::with_capacity(ids.len(), ids.len() * 10);
        let mut buf = String::with_capacity(24);
        for k in &keys {
            use std::fmt::Write;
            buf.clear();
            let _ = write!(buf, "name-{k}");
            names.append_value(&buf);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(keys)),
            Arc::new(Float64Array::from(values)),
            Arc::new(names.finish()),
        ];
        RecordBatch::try_new(GeneratorSource::schema(), columns).map_err(|e| Error::arrow("generating rows", e))
    }
}

#[async_trait]
impl Source for GeneratorReader {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if let Some(rate) = self.rate {
            let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if self.emitted >= allowed {
                return Ok(SourcePoll::Idle);
            }
        }
        for _ in 0..self.splits.len() {
            let i = self.cursor % self.splits.len();
            self.cursor = self.cursor.wrapping_add(1);
            let (split, next) = self.splits[i];
            let remaining = self.cfg.split_len(split).map_or(u64::MAX, |len| len.saturating_sub(next));
            if remaining == 0 {
                continue;
            }
            let n = remaining.min(self.cfg.batch_size as u64);
            let batch = self.batch(split, next, n)?;
            self.splits[i].1 = next + n;
            self.emitted += n;
            return Ok(SourcePoll::Batch(batch));
        }
        Ok(SourcePoll::Finished)
    }

    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        for (_, bytes) in &state.snapshots {
            let positions: Vec<(u32, u64)> = postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: "generator".into(),
                message: format!("cannot read generator positions: {e}"),
            })?;
            for (split, offset) in positions {
                if let Some(mine) = self.splits.iter_mut().find(|(s, _)| *s == split) {
                    mine.1 = offset;
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        postcard::to_allocvec(&self.splits)
            .map(Some)
            .map_err(|e| Error::Internal(format!("serializing generator positions: {e}")))
    }
}
