//! `pipeline-bench <scenario>`: throughput of pipelines against same-run baselines.
//!
//! ```text
//! cargo run --release -p operators-benches --bin pipeline-bench -- checkpoint-overhead
//! ```

use std::time::Duration;

use clap::{Parser, Subcommand};
use operators_benches::{Run, best, measure, median, report};
use operators_core::builtins::{DiscardSink, GeneratorSource, MapTransform};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};

#[derive(Parser)]
#[command(about = "Pipeline throughput benches; each prints a ratio to a baseline measured in the same run")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// generator → map → discard, checkpoints off vs every second.
    CheckpointOverhead {
        /// Rows per run.
        #[arg(long, default_value_t = 300_000_000)]
        rows: u64,
        /// Runs of each variant (alternating); the best rate of each is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Checkpoint interval in ms.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
}

fn generator_pipeline(rows: u64, sink: DiscardSink) -> Pipeline {
    let p = Pipeline::new();
    p.source("generator", GeneratorSource::bounded(rows).with_batch_size(8192).with_splits(1))
        .transform("map", MapTransform::new(|b| Ok(Some(b))))
        .sink("discard", sink);
    p
}

async fn run_generator(rows: u64, config: JobConfig) -> Result<(Run, Option<JobStats>), Box<dyn std::error::Error>> {
    let sink = DiscardSink::default();
    let job = generator_pipeline(rows, sink.clone()).start(config)?;
    let run = measure(|| async { job.wait().await.map(|_| sink.rows()).unwrap_or(0) }).await;
    if run.rows != rows {
        return Err(format!("the pipeline delivered {} of {rows} rows", run.rows).into());
    }
    let stats = job.checkpoint_config().map(|_| job.checkpoint_stats());
    Ok((run, stats))
}

type JobStats = operators_core::checkpoint::CheckpointStats;

async fn checkpoint_overhead(rows: u64, rounds: usize, interval: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut stats = Vec::new();
    for round in 0..rounds {
        let baseline = JobConfig::new(format!("baseline-{round}")).with_restart(RestartStrategy::None);
        let checkpointed = JobConfig::new(format!("checkpointed-{round}"))
            .with_restart(RestartStrategy::None)
            .with_checkpointing(CheckpointConfig::new(dir.path()).with_interval(interval));
        // Alternate the order so that neither variant always runs on a warmer machine.
        if round % 2 == 0 {
            without.push(run_generator(rows, baseline).await?.0);
            let (run, s) = run_generator(rows, checkpointed).await?;
            with.push(run);
            stats.extend(s);
        } else {
            let (run, s) = run_generator(rows, checkpointed).await?;
            with.push(run);
            stats.extend(s);
            without.push(run_generator(rows, baseline).await?.0);
        }
    }
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report("checkpoint-overhead", wall(&with), wall(&without));
    let completed: u64 = stats.iter().map(|s| s.counts.completed).sum();
    let p50 = median(&stats.iter().map(|s| s.summary.end_to_end_duration.p50).collect::<Vec<_>>());
    let p99 = median(&stats.iter().map(|s| s.summary.end_to_end_duration.p99).collect::<Vec<_>>());
    let sync_p99 = median(&stats.iter().map(|s| s.summary.sync_duration.p99).collect::<Vec<_>>());
    println!(
        "checkpoint-overhead checkpoints={completed} duration_p50_ms={p50} duration_p99_ms={p99} sync_pause_p99_ms={sync_p99} \
         rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0} cpu_ratio={:.3}",
        cpu(&with),
        cpu(&without),
        cpu(&with) / cpu(&without).max(1e-9)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::CheckpointOverhead { rows, rounds, interval_ms } => {
            checkpoint_overhead(rows, rounds, Duration::from_millis(interval_ms)).await
        }
    }
}
