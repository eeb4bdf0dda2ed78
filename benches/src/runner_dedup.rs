//! `runner-dedup`: the toolkit's `kafka_deduplication` job shape (the first row of each
//! `unique.keys` key goes on, later ones are dropped) through the `operator` binary, on
//! files: CSV directory → dedup on `id` → JSON-lines files, PROCESS_ONCE, default
//! checkpointing, once per state backend (`stream.checkpoint.type`, optionally with a
//! `stream.state.memory.budget`), against the same job without `unique.keys`.
//!
//! Deduplication reads one file at a time, in name order (the runner's default for
//! `source.concurrent.files` with `unique.keys`), so that "the first row of each key" is
//! defined; the baseline reads several files at once, as the runner does by default. The
//! ratio is what a user sees when adding `unique.keys` to a job, both costs included.
//!
//! Every run is checked, and a wrong output fails the bench: the baseline must write every
//! input row; a dedup run must write one row per distinct id of the input, each the id's
//! first row in the order the source reads (files by name, rows in file order), compared by
//! the string columns (`name`, `city`, `x`, `y`, `tags`). The expected rows are kept as a
//! 64-bit hash per id: the check holds 20 to 40 bytes per distinct id.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, Int64Array, StringArray};
use arrow::datatypes::{Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::runner::{ChildRun, SCHEMA_JSON, operator_binary, run_operator};

type BoxError = Box<dyn std::error::Error>;

/// Rows generated when neither `--generate` nor an existing input directory is given.
const DEFAULT_ROWS: u64 = 2_000_000;

/// The columns the check reads, input and output alike: `id`, then the string columns
/// that tell two rows of one id apart.
const CHECKED_COLUMNS: [usize; 6] = [0, 1, 2, 3, 4, 5];

/// The bit of an expected-row hash that marks the id as written, while an output is checked.
const SEEN: u64 = 1 << 63;

/// What `pipeline-bench runner-dedup` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory of CSV files in the bench's 8-column format (default: generated into a
    /// temporary directory).
    pub input: Option<PathBuf>,
    /// Generate this many rows into the input directory first.
    pub generate: Option<u64>,
    /// When generating: this many distinct ids (default: every row its own id).
    pub distinct: Option<u64>,
    /// Runs of each variant; the best wall time of each is reported.
    pub rounds: usize,
    /// The operator binary (default: next to this one).
    pub operator: Option<PathBuf>,
    /// `stream.state.memory.budget` of the dedup runs, as given (e.g. `128m`).
    pub budget: Option<String>,
    /// The `stream.checkpoint.type` of each dedup variant (e.g. `memory`, `rocksdb`).
    pub backends: Vec<String>,
}

/// Runs the scenario and prints two lines per state backend.
pub fn run(opts: Options) -> Result<(), BoxError> {
    if opts.backends.is_empty() {
        return Err("--backends names no state backend".into());
    }
    if opts.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let binary = operator_binary(opts.operator)?;
    let scratch = tempfile::tempdir()?;
    let input = match opts.input {
        Some(dir) => dir,
        None => scratch.path().join("input"),
    };
    match (opts.generate.or_else(|| (!input.exists()).then_some(DEFAULT_ROWS)), opts.distinct) {
        (Some(rows), None) => {
            let bytes = crate::csv::generate(&input, rows).map_err(|e| format!("{}: {e}", input.display()))?;
            eprintln!("generated {rows} rows, {} MiB, into {}", bytes >> 20, input.display());
        }
        (Some(rows), Some(distinct)) => {
            let bytes = crate::csv::generate_with_distinct(&input, rows, distinct)
                .map_err(|e| format!("{}: {e}", input.display()))?;
            eprintln!(
                "generated {rows} rows of {} distinct ids, {} MiB, into {}",
                distinct.min(rows),
                bytes >> 20,
                input.display()
            );
        }
        (None, Some(_)) => {
            return Err(format!(
                "--distinct applies to generated input, and {} exists: add --generate ROWS",
                input.display()
            )
            .into());
        }
        (None, None) => {}
    }
    let started = Instant::now();
    let mut expected = Expected::read(&input)?;
    eprintln!(
        "input: {} rows, {} distinct ids (read for the check in {:.1} s)",
        expected.rows,
        expected.distinct(),
        started.elapsed().as_secs_f64()
    );
    if expected.rows == 0 {
        return Err(format!("no rows in {}", input.display()).into());
    }
    let input_s = input.to_str().ok_or("input path is not UTF-8")?;

    // Variant 0 is the baseline, then one per backend.
    let variants: Vec<Option<&str>> =
        std::iter::once(None).chain(opts.backends.iter().map(|b| Some(b.as_str()))).collect();
    let mut runs: Vec<Vec<ChildRun>> = vec![Vec::new(); variants.len()];
    for round in 0..opts.rounds {
        // A different variant first in each round, so that none always runs on a colder
        // (or warmer) machine than the others.
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let backend = variants[v];
            let name = backend.map_or_else(|| "baseline".to_string(), |b| format!("runner-dedup-{b}"));
            // A fresh working directory per run: the job's checkpoints live under it.
            let dir = scratch.path().join(format!("run-{v}-{round}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let out = dir.join("out");
            let out_s = out.to_str().ok_or("output path is not UTF-8")?;
            let args = job_args(input_s, out_s, backend, opts.budget.as_deref());
            crate::settle_disk();
            let run = run_operator(&binary, &dir, &args).map_err(|e| format!("{name}, round {round}: {e}"))?;
            if run.rows_in != expected.rows {
                return Err(format!(
                    "{name}, round {round}: the job read {} rows of the input's {}",
                    run.rows_in, expected.rows
                )
                .into());
            }
            match backend {
                None => {
                    let lines = count_lines(&out)?;
                    if run.rows_out != expected.rows || lines != expected.rows {
                        return Err(format!(
                            "baseline, round {round}: the job reported {} rows written and {} holds {lines}, \
                             of the input's {}",
                            run.rows_out,
                            out.display(),
                            expected.rows
                        )
                        .into());
                    }
                }
                Some(_) => {
                    if run.rows_out != expected.distinct() {
                        return Err(format!(
                            "{name}, round {round}: the job reported {} rows written for {} distinct ids",
                            run.rows_out,
                            expected.distinct()
                        )
                        .into());
                    }
                    expected.verify(&out).map_err(|e| format!("{name}, round {round}: {e}"))?;
                }
            }
            runs[v].push(run);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    let best = |runs: &[ChildRun]| runs.iter().min_by_key(|r| r.wall).copied().unwrap_or_default();
    let base = best(&runs[0]);
    let rate = |run: &ChildRun| crate::rate(expected.rows, run.wall);
    for (backend, runs) in variants.iter().zip(&runs).skip(1) {
        let name = format!("runner-dedup-{}", backend.unwrap_or_default());
        let run = best(runs);
        crate::report(&name, rate(&run), rate(&base));
        println!(
            "{name} rows={} distinct={} budget={} wall_s={:.3} baseline_wall_s={:.3} slowdown={:.2} cpu_s={:.2} \
             baseline_cpu_s={:.2} peak_rss_mib={} baseline_peak_rss_mib={}",
            expected.rows,
            expected.distinct(),
            opts.budget.as_deref().unwrap_or("default"),
            run.wall.as_secs_f64(),
            base.wall.as_secs_f64(),
            run.wall.as_secs_f64() / base.wall.as_secs_f64().max(1e-9),
            run.cpu.as_secs_f64(),
            base.cpu.as_secs_f64(),
            run.peak_rss_bytes >> 20,
            base.peak_rss_bytes >> 20,
        );
    }
    Ok(())
}

/// The runner's arguments: CSV `input` → JSON-lines files in `out`, read once; with a
/// `backend`, deduplicated on `id` with that state backend (and memory `budget`).
fn job_args<'a>(input: &'a str, out: &'a str, backend: Option<&'a str>, budget: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "--source.type",
        "csv",
        "--source.path",
        input,
        "--source.watch.type",
        "PROCESS_ONCE",
        // The files are complete: no run waits for them to settle (the first run after
        // generating would otherwise wait up to a second more than the others).
        "--source.watch.settle",
        "0",
        // Also the schema of the text files: the columns get their names (`id` for
        // unique.keys) and types.
        "--stream.sql.schema.json",
        SCHEMA_JSON,
        "--sink.type",
        "file",
        "--sink.format",
        "json",
        "--sink.path",
        out,
        "--progress",
        "off",
    ];
    if let Some(backend) = backend {
        args.extend(["--unique.keys", "id", "--stream.checkpoint.type", backend]);
        if let Some(budget) = budget {
            args.extend(["--stream.state.memory.budget", budget]);
        }
    }
    args
}

/// The expected output of deduplication, from the input files.
struct Expected {
    /// Rows of the input.
    rows: u64,
    /// Each id → the hash of its first row ([`Columns::row_hash`]); bit [`SEEN`] is set while an
    /// output is checked, once the id was found in it.
    first: HashMap<i64, u64>,
}

impl Expected {
    /// Reads every input file the way the file source does with one file at a time.
    fn read(dir: &Path) -> Result<Self, BoxError> {
        let files = visible_files(dir)?;
        if files.is_empty() {
            return Err(format!("no input files in {}", dir.display()).into());
        }
        let mut expected = Expected { rows: 0, first: HashMap::new() };
        for path in files {
            let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let reader = arrow::csv::ReaderBuilder::new(crate::csv::schema())
                .with_batch_size(8192)
                .with_projection(CHECKED_COLUMNS.to_vec())
                .build(file)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut row = 0u64;
            for batch in reader {
                let batch = batch.map_err(|e| format!("{}: {e}", path.display()))?;
                let columns = Columns::of(&batch).map_err(|e| format!("{}: {e}", path.display()))?;
                for i in 0..batch.num_rows() {
                    row += 1;
                    let id = columns.id(i).ok_or_else(|| format!("{}: row {row}: no id", path.display()))?;
                    expected.first.entry(id).or_insert_with(|| columns.row_hash(i));
                }
            }
            expected.rows += row;
        }
        Ok(expected)
    }

    /// Distinct ids of the input.
    fn distinct(&self) -> u64 {
        self.first.len() as u64
    }

    /// Checks the JSON-lines files in `out`: every id of the input exactly once, with its
    /// first row.
    fn verify(&mut self, out: &Path) -> Result<(), BoxError> {
        let outcome = self.mark(out);
        for v in self.first.values_mut() {
            *v &= !SEEN;
        }
        outcome
    }

    /// [`Expected::verify`], leaving the [`SEEN`] marks set.
    fn mark(&mut self, out: &Path) -> Result<(), BoxError> {
        let schema = output_schema();
        let mut written = 0u64;
        for path in visible_files(out)? {
            let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let reader = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
                .with_batch_size(8192)
                .build(BufReader::with_capacity(1 << 20, file))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // The sink writes one row per line.
            let mut line = 0u64;
            for batch in reader {
                let batch = batch.map_err(|e| format!("{}: {e}", path.display()))?;
                let columns = Columns::of(&batch).map_err(|e| format!("{}: {e}", path.display()))?;
                for i in 0..batch.num_rows() {
                    line += 1;
                    let at = || format!("{}: line {line}", path.display());
                    let id = columns.id(i).ok_or_else(|| format!("{}: no id", at()))?;
                    let Some(expected) = self.first.get_mut(&id) else {
                        return Err(format!("{}: id {id} is not in the input", at()).into());
                    };
                    if *expected & SEEN != 0 {
                        return Err(format!("{}: id {id} written a second time", at()).into());
                    }
                    if *expected != columns.row_hash(i) {
                        return Err(format!(
                            "{}: id {id} with name {:?} is not the id's first row in the input",
                            at(),
                            columns.name(i)
                        )
                        .into());
                    }
                    *expected |= SEEN;
                    written += 1;
                }
            }
        }
        if written != self.distinct() {
            let missing = self.first.iter().find(|(_, v)| **v & SEEN == 0).map(|(id, _)| *id);
            return Err(format!(
                "{} holds {written} rows for {} distinct ids of the input; id {} is missing",
                out.display(),
                self.distinct(),
                missing.map_or_else(|| "?".to_string(), |id| id.to_string())
            )
            .into());
        }
        Ok(())
    }
}

/// The output columns the check reads; the JSON reader skips the others.
fn output_schema() -> SchemaRef {
    let input = crate::csv::schema();
    let fields: Vec<Field> = CHECKED_COLUMNS.iter().map(|&c| input.field(c).clone()).collect();
    Arc::new(Schema::new(fields))
}

/// The checked columns of one batch, read with [`CHECKED_COLUMNS`].
struct Columns<'a> {
    id: &'a Int64Array,
    strings: Vec<&'a StringArray>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, BoxError> {
        let id = batch.column(0).as_primitive_opt::<Int64Type>().ok_or("the id column is not BigInt")?;
        let strings = (1..batch.num_columns())
            .map(|c| {
                batch.column(c).as_string_opt::<i32>().ok_or_else(|| {
                    format!("column {} is {}, not String", batch.schema().field(c).name(), batch.column(c).data_type())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { id, strings })
    }

    fn id(&self, row: usize) -> Option<i64> {
        self.id.is_valid(row).then(|| self.id.value(row))
    }

    fn name(&self, row: usize) -> Option<&str> {
        self.strings.first().and_then(|c| c.is_valid(row).then(|| c.value(row)))
    }

    /// The hash of the row's string columns, bit [`SEEN`] clear. Null and empty are the
    /// same here: readers disagree on which an empty CSV field is.
    fn row_hash(&self, row: usize) -> u64 {
        let mut h = DefaultHasher::new();
        for c in &self.strings {
            (if c.is_valid(row) { c.value(row) } else { "" }).hash(&mut h);
        }
        h.finish() & !SEEN
    }
}

/// The files of `dir` that the file source reads, in the order it reads them one at a time:
/// every file but hidden (`.x`), `_`-prefixed and `*.inprogress` ones, by name (see
/// `operators_sources::file`). The file sink's in-progress parts are hidden the same way.
fn visible_files(dir: &Path) -> Result<Vec<PathBuf>, BoxError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| format!("{}: name is not UTF-8", path.display()))?;
        if name.starts_with('.') || name.starts_with('_') || name.ends_with(".inprogress") {
            continue;
        }
        if entry.file_type().map_err(|e| format!("{}: {e}", path.display()))?.is_file() {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Lines in the files of `dir` (JSON lines: rows).
fn count_lines(dir: &Path) -> Result<u64, BoxError> {
    let mut lines = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for path in visible_files(dir)? {
        let mut file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("{}: {e}", path.display()).into()),
            };
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON lines of `rows` (CSV fields), as the file sink writes them.
    fn json_lines(rows: &[Vec<String>]) -> String {
        rows.iter()
            .map(|f| {
                format!(
                    r#"{{"id":{},"name":"{}","city":"{}","x":"{}","y":"{}","tags":"{}","score":{}}}"#,
                    f[0], f[1], f[2], f[3], f[4], f[5], f[6]
                ) + "\n"
            })
            .collect()
    }

    #[test]
    fn the_check_finds_first_rows_duplicates_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        crate::csv::generate_with_distinct(&input, 100, 30).unwrap();
        let mut expected = Expected::read(&input).unwrap();
        assert_eq!((expected.rows, expected.distinct()), (100, 30));

        // The first row of each id in the source's order (files by name, then lines), and
        // the last row of each id.
        let mut first: Vec<Vec<String>> = Vec::new();
        let mut last: HashMap<String, Vec<String>> = HashMap::new();
        for path in visible_files(&input).unwrap() {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let f: Vec<String> = line.split(',').map(str::to_string).collect();
                if !first.iter().any(|r| r[0] == f[0]) {
                    first.push(f.clone());
                }
                last.insert(f[0].clone(), f);
            }
        }
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let part = out.join("part-a-0-0.json");
        std::fs::write(&part, json_lines(&first)).unwrap();
        std::fs::write(out.join(".part-a-0-1.json.inprogress"), "not read").unwrap();
        expected.verify(&out).unwrap();
        // The marks are cleared: the same output passes again.
        expected.verify(&out).unwrap();

        let mut twice = first.clone();
        twice.push(first[3].clone());
        std::fs::write(&part, json_lines(&twice)).unwrap();
        assert!(expected.verify(&out).unwrap_err().to_string().contains("second time"));

        std::fs::write(&part, json_lines(&first[1..])).unwrap();
        assert!(expected.verify(&out).unwrap_err().to_string().contains("is missing"));

        let mut later = first.clone();
        later[0] = last[&first[0][0]].clone();
        assert_ne!(later[0], first[0]);
        std::fs::write(&part, json_lines(&later)).unwrap();
        assert!(expected.verify(&out).unwrap_err().to_string().contains("first row"));

        // Nor does a failed check leave marks behind.
        std::fs::write(&part, json_lines(&first)).unwrap();
        expected.verify(&out).unwrap();
    }

    #[test]
    fn generated_ids_are_as_many_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        crate::csv::generate_with_distinct(dir.path(), 1000, 300).unwrap();
        assert_eq!(Expected::read(dir.path()).unwrap().distinct(), 300);
        let dir = tempfile::tempdir().unwrap();
        crate::csv::generate(dir.path(), 1000).unwrap();
        assert_eq!(Expected::read(dir.path()).unwrap().distinct(), 1000);
    }
}
