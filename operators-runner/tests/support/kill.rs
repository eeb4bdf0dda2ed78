//! Kill tests: a job in a child process SIGKILLed at random moments and started again
//! from its checkpoints. Here are the loop that starts and kills the runs
//! ([`KillLoop`]), the last run of a job that never ends by itself ([`LastRun`]), the
//! blocks of arguments these jobs share, and the kill test of a CSV directory read into
//! JSON part files in EXACTLY_ONCE mode, on the local disk or on HDFS
//! ([`csv_to_files`]): at the end the committed output must equal the input row for row.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::server::SCHEMA;
use super::{hidden_files, json_rows, kill_after, run, spawn_logged, write_csv_input};

/// The random generator of a kill test (its delays, and its input where that is random),
/// from a fresh seed. The seed is printed first, with where the test's files are when
/// `under` names it, so that a failing run's draws can be had again by seeding with it.
pub fn seeded_rng(under: Option<&Path>) -> StdRng {
    let seed: u64 = rand::random();
    match under {
        Some(root) => eprintln!("kill test seed {seed}, under {}", root.display()),
        None => eprintln!("kill test seed {seed}"),
    }
    StdRng::seed_from_u64(seed)
}

/// A job's arguments from blocks of them, in order: the test's own and the shared ones
/// below ([`once_source_args`], [`csv_input_args`], [`kafka_sink_args`],
/// [`restartable_args`]).
pub fn concat_args<'a>(blocks: &[&[&'a str]]) -> Vec<&'a str> {
    blocks.concat()
}

/// A file source of `kind` files that reads the files in `path` once (PROCESS_ONCE),
/// so that the job finishes, each file once its size and time stayed the same for
/// `settle_ms`.
pub fn once_source_args<'a>(kind: &'a str, path: &'a str, settle_ms: &'a str) -> [&'a str; 8] {
    [
        "--source.type",
        kind,
        "--source.path",
        path,
        "--source.watch.type",
        "PROCESS_ONCE",
        "--source.watch.settle",
        settle_ms,
    ]
}

/// The CSV files that [`write_csv_input`] wrote into `path`, read once as by
/// [`once_source_args`], with their schema.
pub fn csv_input_args<'a>(path: &'a str, settle_ms: &'a str) -> Vec<&'a str> {
    let mut args = once_source_args("csv", path, settle_ms).to_vec();
    args.extend(["--stream.sql.schema.json", SCHEMA]);
    args
}

/// The Kafka sink into `topic` on `brokers` of the Kafka tests, its producer lingering
/// 5 ms.
pub fn kafka_sink_args<'a>(brokers: &'a str, topic: &'a str) -> [&'a str; 6] {
    ["--sink.kafka.brokers", brokers, "--sink.kafka.topic", topic, "--sink.kafka.linger.ms", "5"]
}

/// The last arguments of a job that a kill test kills and starts again: checkpoints in
/// `mode` (the runner's default mode when `None`) every `interval_ms` into `dir`, with no
/// pause between them, so that many complete between two kills; no restarts inside the
/// process, since the test restarts the job itself, from its checkpoints; no progress bar.
pub fn restartable_args<'a>(mode: Option<&'a str>, interval_ms: &'a str, dir: &'a str) -> Vec<&'a str> {
    let mut args = match mode {
        Some(mode) => vec!["--stream.checkpoint.mode", mode],
        None => Vec::new(),
    };
    args.extend([
        "--stream.checkpoint.interval",
        interval_ms,
        "--stream.checkpoint.min.pause",
        "0",
        "--stream.checkpoint.dir",
        dir,
        "--job.retry.strategy",
        "none",
        "--progress",
        "off",
    ]);
    args
}

/// A run's log, empty when it wrote none.
fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Whether the job of a [`KillLoop`] may end before its last kill.
#[derive(Clone, Copy, Debug)]
pub enum Ends {
    /// The job reads a bounded input and may finish first. A run that ends before its kill
    /// must have succeeded, and ends the loop: a finished job's checkpoints are gone, so
    /// starting it again would import everything again. Runs are numbered from 0, by the
    /// kills before them.
    MayFinish,
    /// The job must still run at every kill (a Kafka source never ends; a bounded job is
    /// slowed down enough): a run that ends first fails the test. Runs are numbered from 1,
    /// after the kill meant for them, so `run-{kills}.log` is the last killed run's log.
    MustNotFinish,
}

/// The loop of a kill test: the job started with the same arguments again and again,
/// each run SIGKILLed after a random delay and the output checked after each kill.
pub struct KillLoop<'a> {
    /// Where every run starts and writes its log, `run-{n}.log` (see [`Ends`] for `n`).
    pub cwd: &'a Path,
    /// The job's arguments.
    pub args: &'a [&'a str],
    /// How long each run lives before its SIGKILL, ms.
    pub delays_ms: Range<u64>,
    /// How many kills; fewer when the job finishes first ([`Ends::MayFinish`]).
    pub kills: usize,
    /// Whether the job may end before its last kill.
    pub ends: Ends,
}

/// What a [`KillLoop`] counted, for the test's assertions.
#[derive(Debug, Default)]
pub struct Kills {
    /// Kills that landed on a running job.
    pub kills: usize,
    /// Kills after which the test found part of the output committed, not none nor all.
    pub midway: usize,
}

impl Kills {
    /// Counts a kill after which the output was `partial` or not.
    fn count(&mut self, partial: bool) {
        self.kills += 1;
        if partial {
            self.midway += 1;
        }
    }
}

impl KillLoop<'_> {
    /// Runs the loop, waiting for each kill on this thread. After each kill,
    /// `after_kill(kill, delay)` (kills counted from 1, `delay` the killed run's life)
    /// checks the output committed so far and says whether it is partial.
    pub fn run(&self, rng: &mut StdRng, mut after_kill: impl FnMut(usize, Duration) -> bool) -> Kills {
        let mut done = Kills::default();
        while done.kills < self.kills {
            let (child, delay, log) = self.start(done.kills, rng);
            if self.ended_first(kill_after(child, delay), done.kills, &log) {
                break;
            }
            done.count(after_kill(done.kills + 1, delay));
        }
        done
    }

    /// [`KillLoop::run`] for async tests: the waits for the kills run off the async
    /// workers, and `after_kill` on them, since the services it asks (a database pool,
    /// the Elasticsearch client) run on the test's runtime.
    pub async fn run_off_runtime(
        &self,
        rng: &mut StdRng,
        mut after_kill: impl AsyncFnMut(usize, Duration) -> bool,
    ) -> Kills {
        let mut done = Kills::default();
        while done.kills < self.kills {
            let (child, delay, log) = self.start(done.kills, rng);
            let ended = tokio::task::spawn_blocking(move || kill_after(child, delay)).await.unwrap();
            if self.ended_first(ended, done.kills, &log) {
                break;
            }
            done.count(after_kill(done.kills + 1, delay).await);
        }
        done
    }

    /// The number of the run that starts after `kills` kills, which names its log (see
    /// [`Ends`] for why the two kinds of loop count differently).
    fn run_number(&self, kills: usize) -> usize {
        match self.ends {
            Ends::MayFinish => kills,
            Ends::MustNotFinish => kills + 1,
        }
    }

    /// Starts the run that comes after `kills` kills, logging into its `run-{n}.log`, and
    /// draws how long it lives; returns it, its delay and its log.
    fn start(&self, kills: usize, rng: &mut StdRng) -> (Child, Duration, PathBuf) {
        let log = self.cwd.join(format!("run-{}.log", self.run_number(kills)));
        let child = spawn_logged(self.cwd, self.args, &log);
        let delay = Duration::from_millis(rng.random_range(self.delays_ms.clone()));
        (child, delay, log)
    }

    /// Whether the loop stops because the run after `kills` kills ended before its kill
    /// (`ended` is its exit status then); panics where it must not have ended, or failed.
    fn ended_first(&self, ended: Option<ExitStatus>, kills: usize, log: &Path) -> bool {
        let Some(status) = ended else { return false };
        let run = self.run_number(kills);
        match self.ends {
            Ends::MayFinish => {
                assert!(status.success(), "run {run} failed on its own:\n{}", log_text(log));
                true
            }
            Ends::MustNotFinish => panic!("run {run} exited on its own with {status}:\n{}", log_text(log)),
        }
    }
}

/// How often a [`LastRun`] looks at the output.
const LAST_RUN_POLL: Duration = Duration::from_millis(500);

/// The last run of a kill test whose job never ends by itself (a Kafka source): not
/// killed, it runs until its output is complete, or a deadline passes, and then a little
/// longer before it is stopped.
pub struct LastRun {
    child: Child,
    /// Its log, shown when it ends; `None` when its stderr is not kept.
    log: Option<PathBuf>,
    deadline: Instant,
}

impl LastRun {
    /// Follows `child`, just started, for at most `timeout`.
    pub fn new(child: Child, log: Option<&Path>, timeout: Duration) -> Self {
        Self { child, log: log.map(Path::to_path_buf), deadline: Instant::now() + timeout }
    }

    /// Looks at the output with `look` every 500 ms until `complete` says it is all there
    /// or the deadline passed, and returns what it saw last: the test's assertions then
    /// tell what is missing. Panics when the run ends, since the job never ends by itself.
    pub fn wait_for<T>(&mut self, mut look: impl FnMut() -> T, complete: impl Fn(&T) -> bool) -> T {
        loop {
            if let Some(seen) = self.poll(&mut look, &complete) {
                return seen;
            }
            std::thread::sleep(LAST_RUN_POLL);
        }
    }

    /// [`LastRun::wait_for`] for async tests: it sleeps between looks without holding an
    /// async worker.
    pub async fn wait_for_async<T>(&mut self, mut look: impl FnMut() -> T, complete: impl Fn(&T) -> bool) -> T {
        loop {
            if let Some(seen) = self.poll(&mut look, &complete) {
                return seen;
            }
            tokio::time::sleep(LAST_RUN_POLL).await;
        }
    }

    /// One look at the output: what `look` saw once it is complete or the deadline
    /// passed, `None` before. Panics when the run ended.
    fn poll<T>(&mut self, look: &mut impl FnMut() -> T, complete: &impl Fn(&T) -> bool) -> Option<T> {
        if let Some(status) = self.child.try_wait().unwrap() {
            match &self.log {
                Some(log) => panic!("the last run exited with {status}:\n{}", log_text(log)),
                None => panic!("the last run exited with {status}"),
            }
        }
        let seen = look();
        (complete(&seen) || Instant::now() > self.deadline).then_some(seen)
    }

    /// Lets the run go on for `settle` and SIGKILLs it: more checkpoints commit meanwhile,
    /// and nothing may appear twice after them either.
    pub fn stop_after(mut self, settle: Duration) {
        std::thread::sleep(settle);
        self.kill();
    }

    /// [`LastRun::stop_after`] for async tests: it sleeps without holding an async worker.
    pub async fn stop_after_async(mut self, settle: Duration) {
        tokio::time::sleep(settle).await;
        self.kill();
    }

    /// SIGKILLs the run and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a kill test runs.
pub struct Spec {
    /// The job's name (and its checkpoint directory's).
    pub name: &'static str,
    /// `stream.rate.limit`: slow enough that the input outlasts the kills.
    pub rate: u32,
    /// `stream.checkpoint.interval`, ms.
    pub interval_ms: u32,
    /// How long each run lives before its SIGKILL, ms.
    pub delays_ms: Range<u64>,
    /// Kills; at least 20 must land before the job finishes.
    pub kills: usize,
}

/// Runs the kill test with input, output and checkpoints under `root` (a local path or
/// an `hdfs://` URL); logs go to `cwd`.
pub fn csv_to_files(cwd: &Path, root: &Path, spec: &Spec) {
    let (input, out, ck) = (root.join("in"), root.join("out"), root.join("ck"));
    let expected = write_csv_input(&input, 150, 4000, false);
    let total = expected.len();
    let mut rng = seeded_rng(Some(root));
    let (rate, interval) = (spec.rate.to_string(), spec.interval_ms.to_string());
    let args = concat_args(&[
        &["--job.name", spec.name],
        &csv_input_args(input.to_str().unwrap(), "20"),
        &[
            "--stream.parallelism",
            "2",
            "--stream.sink.parallelism",
            "2",
            "--stream.rate.limit",
            &rate,
            "--source.batch.size",
            "1000",
            "--sink.type",
            "file",
            "--sink.path",
            out.to_str().unwrap(),
        ],
        &restartable_args(Some("EXACTLY_ONCE"), &interval, ck.to_str().unwrap()),
    ]);
    let kill_loop =
        KillLoop { cwd, args: &args, delays_ms: spec.delays_ms.clone(), kills: spec.kills, ends: Ends::MayFinish };
    let Kills { kills, midway } = kill_loop.run(&mut rng, |kill, delay| {
        let committed = json_rows(&out).len();
        assert!(committed <= total, "kill {kill}: {committed} rows committed for {total} input rows");
        eprintln!("kill {kill}: after {delay:?}, {committed} rows committed");
        committed > 0 && committed < total
    });
    assert!(kills >= 20, "only {kills} kills before the job finished; slow it down");
    assert!(midway >= kills / 2, "most kills hit a running job with partial output ({midway})");

    // The last run finishes (if the job has not already).
    if json_rows(&out).len() < total || kills == spec.kills {
        let done = run(cwd, &args);
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    }

    let mut got: BTreeMap<i64, (String, f64)> = BTreeMap::new();
    let rows = json_rows(&out);
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        let prev = got.insert(id, (r["name"].as_str().unwrap().to_string(), r["score"].as_f64().unwrap()));
        assert!(prev.is_none(), "id {id} committed twice");
    }
    assert_eq!(rows.len(), expected.len());
    assert_eq!(got, expected, "the output equals the input row for row");
    assert!(hidden_files(&out).is_empty(), "no in-progress parts left: {:?}", hidden_files(&out));
    let fs = operators_core::fs::for_path(&ck).unwrap();
    let left = fs.list(&ck.join(spec.name)).map(|e| e.len()).unwrap_or(0);
    assert_eq!(left, 0, "a finished job removes its checkpoints");
}
