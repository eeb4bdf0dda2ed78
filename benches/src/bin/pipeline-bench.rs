//! `pipeline-bench <scenario>`: throughput of pipelines against same-run baselines.
//!
//! ```text
//! cargo run --release -p operators-benches --bin pipeline-bench -- checkpoint-overhead
//! ```

use std::time::Duration;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

use operators_benches::{Run, best, measure, median, peak_rss_bytes, report, reset_peak_rss};
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
    /// PostgreSQL table → discard, against a bare sqlx read loop (DATABASE_URL or the local server).
    DbSource {
        /// Rows in the table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Rows per fetch and batch.
        #[arg(long, default_value_t = 10_000)]
        fetch: usize,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// MariaDB binlog (a table's inserts) → the CDC source → discard, against a bare
    /// mysql_async binlog loop decoding the same rows (the local MariaDB, or MYSQL_URL).
    CdcMysql {
        /// Rows inserted into the followed table.
        #[arg(long, default_value_t = 500_000)]
        rows: u64,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// A Hive table → the Hive source → discard, against a bare fetch loop of the same
    /// client and fetch size (the local HiveServer2, or HIVE_URL/HIVE_USER/HIVE_PASSWORD);
    /// then the fetch size's effect: the toolkit's 50 against the default.
    HiveSource {
        /// Rows in the table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Rows of the table read with fetch size 50 (a round trip per 50 rows).
        #[arg(long, default_value_t = 100_000)]
        small_fetch_rows: u64,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// generator → PostgreSQL table, against bare sqlx batched inserts.
    DbSink {
        /// Rows to insert.
        #[arg(long, default_value_t = 500_000)]
        rows: u64,
        /// Rows per statement.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// CSV directory → JSON-lines files, against arrow-csv decode → arrow-json encode.
    CsvJson {
        /// Directory of CSV files (8 columns: id, name, city, x, y, tags, score, ts).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Generate this many rows into the input directory first.
        #[arg(long)]
        generate: Option<u64>,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// CSV → the toolkit's SQL → JSON lines, against the same physical expressions in a loop.
    CsvSqlJson {
        /// Directory of CSV files.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Generate this many rows into the input directory first.
        #[arg(long)]
        generate: Option<u64>,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The `operator` binary on the csv-sql-json job (CSV → the toolkit's SQL → JSON
    /// files, PROCESS_ONCE, default checkpointing), against the same bare single-threaded
    /// decode → SQL → encode loop; with the child's CPU time and peak memory.
    /// The CSV → JSON job through the `operator` binary reading from and writing to HDFS
    /// (`HDFS_URL`, `testing/services/hdfs.sh`), against the same job on local disk in
    /// the same run.
    HdfsCsvJson {
        /// Directory of CSV files (8 columns); copied to HDFS first.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Generate this many rows into the input directory first.
        #[arg(long)]
        generate: Option<u64>,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The operator binary (default: next to this one).
        #[arg(long)]
        operator: Option<PathBuf>,
    },
    RunnerCsvSqlJson {
        /// Directory of CSV files (8 columns: id, name, city, x, y, tags, score, ts).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Generate this many rows into the input directory first.
        #[arg(long)]
        generate: Option<u64>,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The operator binary (default: next to this one).
        #[arg(long)]
        operator: Option<PathBuf>,
    },
    /// The `operator` binary on the toolkit's kafka_deduplication job shape over files (CSV
    /// → `unique.keys id` → JSON files, PROCESS_ONCE, default checkpointing), once per
    /// state backend, against the same job without `unique.keys` (which reads several files
    /// at once; dedup reads one, in name order); with the CPU time and peak memory of both.
    /// Every run's output is verified: the baseline writes every input row, dedup one row
    /// per distinct id, the id's first in input order (a wrong output fails the bench).
    RunnerDedup {
        /// Directory of CSV files (8 columns: id, name, city, x, y, tags, score, ts).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Generate this many rows into the input directory first.
        #[arg(long)]
        generate: Option<u64>,
        /// With --generate: this many distinct ids (default: every row its own id).
        #[arg(long)]
        distinct: Option<u64>,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// The operator binary (default: next to this one).
        #[arg(long)]
        operator: Option<PathBuf>,
        /// `stream.state.memory.budget` of the dedup runs (e.g. 128m; default: the runner's).
        #[arg(long)]
        budget: Option<String>,
        /// State backends (`stream.checkpoint.type`) to deduplicate with, one variant each.
        #[arg(long, value_delimiter = ',', default_values_t = [String::from("memory"), String::from("rocksdb")])]
        backends: Vec<String>,
    },
    /// A one-row CSV → JSON job through the `operator` binary against `operator --version`:
    /// what a bounded job costs beyond starting a process.
    RunnerStartup {
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// The operator binary (default: next to this one).
        #[arg(long)]
        operator: Option<PathBuf>,
    },
    /// Kafka topic → JSON rows → Kafka topic (at least once), against a bare rdkafka
    /// consume→produce loop (the Kafka in KAFKA_BROKERS, default 127.0.0.1:9092).
    KafkaPassthrough {
        /// Records in the input topic.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Kafka → Kafka exactly once against at least once, checkpoints every second
    /// (the Kafka in KAFKA_BROKERS). 2 M records make a run of about 4 s: a 1-s run
    /// would measure librdkafka's first InitProducerId (50 ms, or 500 ms when its
    /// coordinator connection loses a race with its retry timer), not the throughput.
    KafkaExactlyOnce {
        /// Records in the input topic.
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Checkpoint interval in ms.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Kafka → dedup (distinct keys, disk state backend) → Kafka against Kafka → Kafka.
    Dedup {
        /// Records, all with distinct keys.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Parquet directory → Elasticsearch (full sync) against a bare parquet-read → `_bulk`
    /// loop with the same client and batch size (the OpenSearch or Elasticsearch in ES_URL,
    /// default http://127.0.0.1:9200).
    ParquetEs {
        /// Rows in the input files.
        #[arg(long, default_value_t = 500_000)]
        rows: u64,
        /// Actions per bulk request (and rows per batch).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Runs of each variant; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Keyed 1-second event-time tumbling count (pre-generated batches → bounded
    /// out-of-orderness watermarks → key_by → tumbling window with Agg::count() →
    /// counting sink, parallelism 1, no checkpoints) against a bare single-threaded
    /// HashMap<(key, window_start), u64> loop over the same batches that also fires and
    /// emits the closed windows. The window state lives in the memory state backend by
    /// default (`--state-backend disk` for the job default); both sides must produce the
    /// same windows and total count. Also prints the per-core figure beside Flink's
    /// published Nexmark per-core rates.
    WindowCount {
        /// Events in total.
        #[arg(long, default_value_t = 20_000_000)]
        rows: u64,
        /// Distinct keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Events per simulated second of event time.
        #[arg(long, default_value_t = 1_000_000)]
        events_per_s: u64,
        /// Bounded disorder of the event times, ms (also the watermark delay).
        #[arg(long, default_value_t = 200)]
        disorder_ms: i64,
        /// Rows per batch.
        #[arg(long, default_value_t = 8192)]
        batch: usize,
        /// State backend of the window job: memory or disk.
        #[arg(long, default_value = "memory")]
        state_backend: String,
        /// Runs of each variant (alternating); the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
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

async fn csv_scenario(
    name: &str,
    input: Option<PathBuf>,
    generate: Option<u64>,
    rounds: usize,
    with_sql: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let input = match input {
        Some(dir) => dir,
        None => scratch.path().join("input"),
    };
    if let Some(rows) = generate.or_else(|| (!input.exists()).then_some(2_000_000)) {
        let bytes = operators_benches::csv::generate(&input, rows)?;
        eprintln!("generated {rows} rows, {} MiB, into {}", bytes >> 20, input.display());
    }
    let input_bytes: u64 =
        operators_benches::csv::inputs(&input)?.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let mut with = Vec::new();
    let mut without = Vec::new();
    let (mut rss_with, mut rss_without) = (0, 0);
    for round in 0..rounds {
        let out = scratch.path().join(format!("out-{round}"));
        let base_out = scratch.path().join(format!("base-{round}"));
        operators_benches::settle_disk();
        reset_peak_rss();
        let run =
            measure(|| async { operators_benches::csv::pipeline(&input, &out, with_sql).await.unwrap_or(0) }).await;
        rss_with = rss_with.max(peak_rss_bytes());
        operators_benches::settle_disk();
        reset_peak_rss();
        let base =
            measure(|| async { operators_benches::csv::bare_loop(&input, &base_out, with_sql).unwrap_or(0) }).await;
        rss_without = rss_without.max(peak_rss_bytes());
        if run.rows != base.rows || run.rows == 0 {
            return Err(format!("the pipeline wrote {} rows, the baseline {}", run.rows, base.rows).into());
        }
        with.push(run);
        without.push(base);
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_dir_all(&base_out);
    }
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report(name, wall(&with), wall(&without));
    println!(
        "{name} input_mib={} rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0} cpu_ratio={:.3} peak_rss_mib={} baseline_peak_rss_mib={}",
        input_bytes >> 20,
        cpu(&with),
        cpu(&without),
        cpu(&with) / cpu(&without).max(1e-9),
        rss_with >> 20,
        rss_without >> 20
    );
    Ok(())
}

fn hdfs_csv_json(
    input: Option<PathBuf>,
    generate: Option<u64>,
    rounds: usize,
    operator: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::runner::{ChildRun, SCHEMA_JSON, operator_binary, run_operator};
    let binary = operator_binary(operator)?;
    let scratch = tempfile::tempdir()?;
    let input = match input {
        Some(dir) => dir,
        None => scratch.path().join("input"),
    };
    if let Some(rows) = generate.or_else(|| (!input.exists()).then_some(2_000_000)) {
        let bytes = operators_benches::csv::generate(&input, rows)?;
        eprintln!("generated {rows} rows, {} MiB, into {}", bytes >> 20, input.display());
    }
    let url = std::env::var("HDFS_URL")
        .map_err(|_| "HDFS_URL is not set: start HDFS with `testing/services/hdfs.sh start`")?;
    operators_hdfs::register()?;
    let root = PathBuf::from(format!(
        "{}/pipeline-bench/hdfs-csv-json-{:08x}",
        url.trim_end_matches('/'),
        rand::random::<u32>()
    ));
    let hdfs = operators_core::fs::for_path(&root)?;
    let hdfs_input = root.join("input");
    hdfs.create_dir_all(&hdfs_input)?;
    let started = std::time::Instant::now();
    for file in operators_benches::csv::inputs(&input)? {
        let name = file.file_name().ok_or("an input file without a name")?;
        hdfs.write(&hdfs_input.join(name), &std::fs::read(&file)?)?;
    }
    eprintln!("copied the input to {} in {:.1} s", hdfs_input.display(), started.elapsed().as_secs_f64());
    let text = |p: &Path| p.to_str().map(String::from).ok_or("a path is not UTF-8");
    let job = |source: String, sink: String| -> Vec<String> {
        [
            "--source.type",
            "csv",
            "--source.path",
            &source,
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.sql.schema.json",
            SCHEMA_JSON,
            "--sink.type",
            "file",
            "--sink.path",
            &sink,
            "--progress",
            "off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut on_hdfs: Vec<ChildRun> = Vec::new();
    let mut local: Vec<ChildRun> = Vec::new();
    for round in 0..rounds {
        let out = root.join(format!("out-{round}"));
        let args = job(text(&hdfs_input)?, text(&out)?);
        let run = run_operator(&binary, scratch.path(), &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        hdfs.remove_dir_all(&out)?;
        let base_out = scratch.path().join(format!("base-{round}"));
        operators_benches::settle_disk();
        let args = job(text(&input)?, text(&base_out)?);
        let base = run_operator(&binary, scratch.path(), &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let _ = std::fs::remove_dir_all(&base_out);
        if run.rows_out != base.rows_out || run.rows_out == 0 {
            return Err(format!("the HDFS job wrote {} rows, the local one {}", run.rows_out, base.rows_out).into());
        }
        on_hdfs.push(run);
        local.push(base);
    }
    hdfs.remove_dir_all(&root)?;
    let rate = |r: &ChildRun| r.rows_out as f64 / r.wall.as_secs_f64().max(1e-9);
    let best_of = |runs: &[ChildRun]| runs.iter().copied().max_by(|a, b| rate(a).total_cmp(&rate(b)));
    let (Some(h), Some(l)) = (best_of(&on_hdfs), best_of(&local)) else { return Err("no rounds ran".into()) };
    report("hdfs-csv-json", rate(&h), rate(&l));
    println!(
        "hdfs-csv-json rows={} wall_s={:.3} baseline_wall_s={:.3} cpu_s={:.2} baseline_cpu_s={:.2} peak_rss_mib={} baseline_peak_rss_mib={}",
        h.rows_out,
        h.wall.as_secs_f64(),
        l.wall.as_secs_f64(),
        h.cpu.as_secs_f64(),
        l.cpu.as_secs_f64(),
        h.peak_rss_bytes >> 20,
        l.peak_rss_bytes >> 20
    );
    Ok(())
}

fn runner_csv_sql_json(
    input: Option<PathBuf>,
    generate: Option<u64>,
    rounds: usize,
    operator: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::runner::{ChildRun, SCHEMA_JSON, operator_binary, run_operator};
    let binary = operator_binary(operator)?;
    let scratch = tempfile::tempdir()?;
    let input = match input {
        Some(dir) => dir,
        None => scratch.path().join("input"),
    };
    if let Some(rows) = generate.or_else(|| (!input.exists()).then_some(2_000_000)) {
        let bytes = operators_benches::csv::generate(&input, rows)?;
        eprintln!("generated {rows} rows, {} MiB, into {}", bytes >> 20, input.display());
    }
    let input_s = input.to_str().ok_or("input path is not UTF-8")?;
    let mut with: Vec<ChildRun> = Vec::new();
    let mut without: Vec<Run> = Vec::new();
    for round in 0..rounds {
        let out = scratch.path().join(format!("out-{round}"));
        let args = [
            "--source.type",
            "csv",
            "--source.path",
            input_s,
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema.json",
            SCHEMA_JSON,
            "--stream.sql",
            operators_benches::csv::SQL,
            "--sink.type",
            "file",
            "--sink.path",
            out.to_str().ok_or("output path is not UTF-8")?,
            "--progress",
            "off",
        ];
        operators_benches::settle_disk();
        let run = run_operator(&binary, scratch.path(), &args)?;
        let base_out = scratch.path().join(format!("base-{round}"));
        operators_benches::settle_disk();
        let base = {
            let cpu0 = operators_benches::cpu_time();
            let started = std::time::Instant::now();
            let rows = operators_benches::csv::bare_loop(&input, &base_out, true)?;
            Run { rows, wall: started.elapsed(), cpu: operators_benches::cpu_time().saturating_sub(cpu0) }
        };
        if run.rows_out != base.rows || base.rows == 0 {
            return Err(format!("the runner wrote {} rows, the baseline {}", run.rows_out, base.rows).into());
        }
        with.push(run);
        without.push(base);
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_dir_all(&base_out);
    }
    // Rates over the rows read, the same count on both sides.
    let rows_in = with.first().map_or(0, |r| r.rows_in);
    let rate = |wall: Duration| operators_benches::rate(rows_in, wall);
    let best_run = with.iter().min_by_key(|r| r.wall).copied().unwrap_or_default();
    let best_base = without.iter().min_by_key(|r| r.wall).copied().ok_or("no rounds")?;
    report("runner-csv-sql-json", rate(best_run.wall), rate(best_base.wall));
    println!(
        "runner-csv-sql-json rows={rows_in} wall_s={:.3} cpu_s={:.2} peak_rss_mib={} baseline_wall_s={:.3} \
         baseline_cpu_s={:.2} max_peak_rss_mib={}",
        best_run.wall.as_secs_f64(),
        best_run.cpu.as_secs_f64(),
        best_run.peak_rss_bytes >> 20,
        best_base.wall.as_secs_f64(),
        best_base.cpu.as_secs_f64(),
        with.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0) >> 20,
    );
    Ok(())
}

fn runner_startup(rounds: usize, operator: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::runner::{operator_binary, run_operator, version_wall};
    let binary = operator_binary(operator)?;
    let scratch = tempfile::tempdir()?;
    let input = scratch.path().join("input");
    std::fs::create_dir_all(&input)?;
    std::fs::write(input.join("one.csv"), "1,alice,3.5\n")?;
    // A file written a while ago, as input files are: last modified a minute before.
    // (One just written is read once it has not changed for source.watch.settle, 1 s by
    // default; the `fresh_file_job_ms` figure below shows that wait.)
    let minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options().append(true).open(input.join("one.csv"))?.set_modified(minute_ago)?;
    let mut jobs = Vec::new();
    let mut versions = Vec::new();
    for round in 0..rounds {
        let out = scratch.path().join(format!("out-{round}"));
        let args = [
            "--source.type",
            "csv",
            "--source.path",
            input.to_str().ok_or("input path is not UTF-8")?,
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.checkpoint.enable",
            "false",
            "--sink.type",
            "file",
            "--sink.path",
            out.to_str().ok_or("output path is not UTF-8")?,
            "--progress",
            "off",
        ];
        let run = run_operator(&binary, scratch.path(), &args)?;
        if run.rows_out != 1 {
            return Err(format!("the one-row job wrote {} rows", run.rows_out).into());
        }
        jobs.push(run);
        versions.push(version_wall(&binary)?);
    }
    let fresh = {
        let dir = scratch.path().join("fresh");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("one.csv"), "2,bob,4.5\n")?;
        let out = scratch.path().join("out-fresh");
        let args = [
            "--source.type",
            "csv",
            "--source.path",
            dir.to_str().ok_or("input path is not UTF-8")?,
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.checkpoint.enable",
            "false",
            "--sink.type",
            "file",
            "--sink.path",
            out.to_str().ok_or("output path is not UTF-8")?,
            "--progress",
            "off",
        ];
        run_operator(&binary, scratch.path(), &args)?.wall
    };
    let job = jobs.iter().map(|r| r.wall).min().unwrap_or_default();
    let version = versions.iter().copied().min().unwrap_or_default();
    let median_job = {
        let mut w: Vec<Duration> = jobs.iter().map(|r| r.wall).collect();
        w.sort();
        w[w.len() / 2]
    };
    // One row per run: the rate is runs per second.
    report("runner-startup", 1.0 / job.as_secs_f64().max(1e-9), 1.0 / version.as_secs_f64().max(1e-9));
    println!(
        "runner-startup job_ms={:.1} median_job_ms={:.1} job_cpu_ms={} version_ms={:.1} fresh_file_job_ms={:.1}",
        job.as_secs_f64() * 1e3,
        median_job.as_secs_f64() * 1e3,
        jobs.iter().map(|r| r.cpu.as_millis()).min().unwrap_or(0),
        version.as_secs_f64() * 1e3,
        fresh.as_secs_f64() * 1e3,
    );
    Ok(())
}

async fn db_scenario(sink: bool, rows: u64, size: usize, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::db;
    let scratch = db::Scratch::new(if sink { 0 } else { rows }).await?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..rounds {
        if sink {
            scratch.truncate_dst().await?;
            with.push(db::sink_pipeline(&scratch, rows, size).await);
            scratch.truncate_dst().await?;
            without.push(db::sink_baseline(&scratch, rows, size).await);
        } else {
            with.push(db::source_pipeline(&scratch, size).await);
            without.push(db::source_baseline(&scratch).await);
        }
    }
    scratch.drop().await;
    if with.iter().chain(&without).any(|r| r.rows != rows) {
        return Err("a run did not move every row".into());
    }
    let name = if sink { "db-sink" } else { "db-source" };
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report(name, wall(&with), wall(&without));
    println!("{name} rows={rows} rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0}", cpu(&with), cpu(&without));
    Ok(())
}

async fn cdc_scenario(rows: u64, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::cdc;
    let fixture = cdc::Fixture::new(rows).await?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..rounds {
        with.push(cdc::pipeline(&fixture).await);
        without.push(cdc::baseline(&fixture).await);
    }
    let moved: Vec<u64> = with.iter().chain(&without).map(|r| r.rows).collect();
    fixture.drop().await;
    if moved.iter().any(|r| *r != rows) {
        return Err(format!("a run did not read every row: {moved:?} of {rows}").into());
    }
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report("cdc-mysql", wall(&with), wall(&without));
    println!("cdc-mysql rows={rows} rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0}", cpu(&with), cpu(&without));
    Ok(())
}

async fn hive_scenario(rows: u64, small_fetch_rows: u64, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::hive;
    use operators_sources::hive::DEFAULT_FETCH_SIZE;
    let fixture = tokio::task::block_in_place(|| hive::Fixture::new(rows))?;
    let all = fixture.statement(None);
    let part = fixture.statement(Some(small_fetch_rows));
    let (mut with, mut without, mut small, mut large) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        with.push(hive::pipeline(&all, DEFAULT_FETCH_SIZE).await);
        without.push(hive::baseline(&all, DEFAULT_FETCH_SIZE).await);
        small.push(hive::pipeline(&part, 50).await);
        large.push(hive::pipeline(&part, DEFAULT_FETCH_SIZE).await);
    }
    tokio::task::block_in_place(|| fixture.drop());
    let complete = |runs: &[Run], n: u64| runs.iter().all(|r| r.rows == n);
    if !complete(&with, rows) || !complete(&without, rows) || !complete(&small, small_fetch_rows) {
        return Err("a run did not read every row (see above)".into());
    }
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report("hive-source", wall(&with), wall(&without));
    println!("hive-source rows={rows} rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0}", cpu(&with), cpu(&without));
    // The toolkit's fetch size against the library's default, same rows, both through
    // the source.
    report("hive-source-fetch-50", wall(&small), wall(&large));
    Ok(())
}

async fn kafka_scenario(
    name: &str,
    rows: u64,
    rounds: usize,
    interval: Option<Duration>,
) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::kafka::{Fixture, baseline, pipeline};
    use operators_sinks::kafka::Delivery;
    // Dedup: every key distinct, so both variants write every row.
    let keys = if name == "dedup" { rows } else { 1000 };
    // The fixture's helpers block.
    let fixture = tokio::task::block_in_place(|| Fixture::new(rows, keys))?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..rounds {
        match name {
            "kafka-passthrough" => {
                with.push(pipeline(&fixture, Delivery::AtLeastOnce, None, false, rows).await?);
                without.push(baseline(&fixture).await?);
            }
            "kafka-exactly-once" => {
                with.push(pipeline(&fixture, Delivery::ExactlyOnce, interval, false, rows).await?);
                without.push(pipeline(&fixture, Delivery::AtLeastOnce, interval, false, rows).await?);
            }
            _ => {
                with.push(pipeline(&fixture, Delivery::AtLeastOnce, None, true, rows).await?);
                without.push(pipeline(&fixture, Delivery::AtLeastOnce, None, false, rows).await?);
            }
        }
    }
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report(name, wall(&with), wall(&without));
    println!("{name} rows={rows} rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0}", cpu(&with), cpu(&without));
    Ok(())
}

async fn parquet_es(rows: u64, batch: usize, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::es;
    use operators_testkit::es::TestEs;
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("input");
    let files = es::write_input(&dir, rows, 8)?;
    let server = TestEs::start().await?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..rounds {
        let index = server.index(&format!("bench-{round}"));
        with.push(es::pipeline(&server, &dir, &index, batch, rows).await?);
        if server.count(&index).await? != rows {
            return Err(format!("the pipeline did not index every row into {index}").into());
        }
        server.delete_index(&index).await?;
        let index = server.index(&format!("baseline-{round}"));
        without.push(es::baseline(&server, &files, &index, batch).await?);
        if server.count(&index).await? != rows {
            return Err(format!("the baseline did not index every row into {index}").into());
        }
        server.delete_index(&index).await?;
    }
    if with.iter().chain(&without).any(|r| r.rows != rows) {
        return Err("a run did not move every row".into());
    }
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report("parquet-es", wall(&with), wall(&without));
    println!("parquet-es rows={rows} rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0}", cpu(&with), cpu(&without));
    Ok(())
}

/// Flink's published Nexmark throughput per core, events/s: q5 (hot items, a sliding
/// window count) and the passthrough query (q0).
const FLINK_NEXMARK_Q5_PER_CORE: f64 = 22_000.0;
const FLINK_NEXMARK_PASSTHROUGH_PER_CORE: f64 = 155_000.0;

async fn window_count(
    spec: operators_benches::window::EventSpec,
    backend: &str,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use operators_benches::window::{baseline, generate, pipeline};
    let backend: operators_core::state::StateBackendKind = backend.parse()?;
    let started = std::time::Instant::now();
    let batches = std::sync::Arc::new(generate(&spec)?);
    eprintln!(
        "generated {} events, {} keys, {} batches in {:.1} s; state backend {backend:?}",
        spec.rows,
        spec.keys,
        batches.len(),
        started.elapsed().as_secs_f64()
    );
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut totals = None;
    for round in 0..rounds {
        let (run, base, got, expected) = if round % 2 == 0 {
            let (run, got) = pipeline(batches.clone(), spec.disorder_ms, backend.clone()).await?;
            let (base, expected) = tokio::task::block_in_place(|| baseline(&batches, spec.disorder_ms))?;
            (run, base, got, expected)
        } else {
            let (base, expected) = tokio::task::block_in_place(|| baseline(&batches, spec.disorder_ms))?;
            let (run, got) = pipeline(batches.clone(), spec.disorder_ms, backend.clone()).await?;
            (run, base, got, expected)
        };
        if got != expected || expected.count != spec.rows {
            return Err(format!(
                "the pipeline emitted {} windows counting {} events, the baseline {} windows counting {} (of {} events)",
                got.windows, got.count, expected.windows, expected.count, spec.rows
            )
            .into());
        }
        totals = Some(got);
        with.push(run);
        without.push(base);
    }
    let totals = totals.ok_or("no rounds")?;
    let wall = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| best(&runs.iter().map(Run::rows_per_cpu_s).collect::<Vec<_>>());
    report("window-count", wall(&with), wall(&without));
    println!(
        "window-count windows={} events={} rows_per_cpu_s={:.0} baseline_rows_per_cpu_s={:.0} cpu_ratio={:.3}",
        totals.windows,
        totals.count,
        cpu(&with),
        cpu(&without),
        cpu(&with) / cpu(&without).max(1e-9)
    );
    // The job runs at parallelism 1, but its operators are tasks that may run on
    // different threads: the per-core figure is events per CPU-second of the process.
    let per_core = cpu(&with);
    println!(
        "window-count per_core_events_per_s={per_core:.0} flink_nexmark_q5_per_core={FLINK_NEXMARK_Q5_PER_CORE:.0} \
         flink_nexmark_passthrough_per_core={FLINK_NEXMARK_PASSTHROUGH_PER_CORE:.0} vs_q5={:.1}x vs_passthrough={:.1}x \
         (note: Flink's figures are Nexmark queries over Nexmark's generator with its serialization and network \
         stack; this is a 1-s tumbling count over in-memory Arrow batches, so it compares orders of magnitude, \
         not equal work)",
        per_core / FLINK_NEXMARK_Q5_PER_CORE,
        per_core / FLINK_NEXMARK_PASSTHROUGH_PER_CORE,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Quiet unless RUST_LOG asks: log lines would cost time inside the measured runs.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    }
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::DbSource { rows, fetch, rounds } => db_scenario(false, rows, fetch, rounds).await,
        Scenario::DbSink { rows, batch, rounds } => db_scenario(true, rows, batch, rounds).await,
        Scenario::CdcMysql { rows, rounds } => cdc_scenario(rows, rounds).await,
        Scenario::HiveSource { rows, small_fetch_rows, rounds } => hive_scenario(rows, small_fetch_rows, rounds).await,
        Scenario::CsvJson { input, generate, rounds } => csv_scenario("csv-json", input, generate, rounds, false).await,
        Scenario::CsvSqlJson { input, generate, rounds } => {
            csv_scenario("csv-sql-json", input, generate, rounds, true).await
        }
        Scenario::HdfsCsvJson { input, generate, rounds, operator } => {
            tokio::task::block_in_place(|| hdfs_csv_json(input, generate, rounds, operator))
        }
        Scenario::RunnerCsvSqlJson { input, generate, rounds, operator } => {
            tokio::task::block_in_place(|| runner_csv_sql_json(input, generate, rounds, operator))
        }
        Scenario::RunnerDedup { input, generate, distinct, rounds, operator, budget, backends } => {
            let options = operators_benches::runner_dedup::Options {
                input,
                generate,
                distinct,
                rounds,
                operator,
                budget,
                backends,
            };
            tokio::task::block_in_place(|| operators_benches::runner_dedup::run(options))
        }
        Scenario::RunnerStartup { rounds, operator } => {
            tokio::task::block_in_place(|| runner_startup(rounds, operator))
        }
        Scenario::KafkaPassthrough { rows, rounds } => kafka_scenario("kafka-passthrough", rows, rounds, None).await,
        Scenario::KafkaExactlyOnce { rows, rounds, interval_ms } => {
            kafka_scenario("kafka-exactly-once", rows, rounds, Some(Duration::from_millis(interval_ms))).await
        }
        Scenario::Dedup { rows, rounds } => kafka_scenario("dedup", rows, rounds, None).await,
        Scenario::ParquetEs { rows, batch, rounds } => parquet_es(rows, batch, rounds).await,
        Scenario::WindowCount { rows, keys, events_per_s, disorder_ms, batch, state_backend, rounds } => {
            let spec =
                operators_benches::window::EventSpec { rows, keys, events_per_s, disorder_ms, batch_size: batch };
            window_count(spec, &state_backend, rounds).await
        }
        Scenario::CheckpointOverhead { rows, rounds, interval_ms } => {
            checkpoint_overhead(rows, rounds, Duration::from_millis(interval_ms)).await
        }
    }
}
