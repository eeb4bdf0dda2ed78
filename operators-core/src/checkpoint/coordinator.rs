//! The checkpoint coordinator's decisions, as a pure, synchronous state machine.
//!
//! [`CheckpointCoordinator`] decides when a checkpoint triggers, when it completes and
//! when it fails. It does no I/O and reads no clock. Its shell (the job's attempt loop)
//! feeds it events: the time ([`tick`](CheckpointCoordinator::tick)), acks and declines
//! from tasks, a source that finished, a savepoint request, the result of the I/O it
//! asked for, and the end of the attempt. Each event returns the [`Command`]s to execute
//! in order: trigger, abort, write the metadata, retire old checkpoints, notify
//! completion, answer a savepoint, fail the job. Because every decision lives here, each
//! rule below has a unit test, and a property test drives random interleavings of them.
//!
//! # Rules
//!
//! - **One at a time.** At most one checkpoint is in flight, from its trigger until it
//!   completes or fails (`max_concurrent` is 1; `CheckpointConfig::validate` refuses
//!   any other value, so the setting is not read here).
//! - **Interval.** With nothing in flight, a periodic checkpoint triggers at the first
//!   tick at or after `next_trigger`: the start plus `interval` for the first one.
//! - **Min pause.** When a checkpoint ends (completes or fails), `next_trigger` becomes
//!   the later of its trigger time plus `interval` and its end plus `min_pause`: the
//!   interval counts from trigger to trigger, the pause from the end of one to the
//!   trigger of the next.
//! - **Savepoints** are queued in request order. With nothing in flight, the oldest
//!   triggers at the next tick, ahead of the final checkpoint and of any periodic one,
//!   and without waiting for the interval or the pause. Each request is answered exactly
//!   once ([`Command::ReplySavepoint`]): with its location once it is durable and shown
//!   in the statistics, or with the reason it failed or was refused. A request is refused
//!   when checkpointing is off, when the attempt has ended, or once the final checkpoint
//!   or a stop-with-savepoint has triggered.
//! - **End of input.** Once every source has finished, and with nothing in flight and
//!   no savepoint queued, a terminal checkpoint triggers at the next tick, whatever the
//!   interval. After a terminal barrier (that one, or a stop-with-savepoint) nothing else
//!   triggers.
//! - **Ids only increase.** Each trigger takes the next id, continuing from the id the
//!   coordinator was created with; a failed checkpoint's id is never reused.
//! - **Completion.** A checkpoint completes only once every expected task acknowledged
//!   it: the coordinator then asks for its metadata to be written, and completes it when
//!   the shell reports the write. Acks for another checkpoint (late ones for an aborted
//!   checkpoint, or unknown ids) and acks from unknown tasks are ignored. A repeated ack
//!   replaces the task's earlier one and counts once.
//! - **Timeout.** A checkpoint still waiting for acks `timeout` after its trigger fails at
//!   the next tick; that tick triggers nothing else. A checkpoint whose metadata is being
//!   written has all its acks and cannot time out or be declined any more.
//! - **Failure.** A decline of the checkpoint in flight, a trigger the shell could not
//!   carry out, a timeout, or a failed metadata write aborts it ([`Command::Abort`]).
//!   Declines of other checkpoints are ignored.
//! - **Tolerable failures.** Failures of periodic checkpoints count; more than
//!   `tolerable_failures` in a row fail the job ([`Command::FailJob`]). Any completed
//!   checkpoint or savepoint resets the count. A failed savepoint is reported to its
//!   requester and does not count. A failed terminal checkpoint fails the job at once.
//! - **Retained count.** Each completion retires what is older than the newest
//!   `retained` checkpoints ([`Command::Retire`]).
//! - **End of the attempt.** After [`Command::FailJob`], or once the shell reports
//!   [`attempt_ended`](CheckpointCoordinator::attempt_ended), the coordinator does nothing
//!   more: the checkpoint in flight is discarded and every waiting savepoint is answered.
//!
//! # Time
//!
//! Every rule runs on a monotonic time given as a [`Duration`] since an origin the shell
//! picks (the attempt's start), so tests drive it with synthetic time and never sleep.
//! Times that go backwards are taken as the latest time seen. The wall-clock time a
//! barrier carries is given to [`tick`](CheckpointCoordinator::tick) separately.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::config::CheckpointConfig;
use crate::error::Error;
use crate::message::{CheckpointId, CheckpointKind};

/// Answer to a savepoint request when checkpointing is off.
const NOT_CONFIGURED: &str = "savepoints need checkpointing to be configured";
/// Answer to a savepoint request once a terminal barrier has been triggered.
const FINISHING: &str = "the job is already finishing";
/// Answer to a savepoint request after the attempt ended.
const ENDED: &str = "the job attempt has ended";

/// A savepoint a user asked for.
#[derive(Debug)]
pub struct Savepoint<R> {
    /// Directory the savepoint is copied to once its checkpoint's metadata is written.
    pub target: PathBuf,
    /// Stop-with-savepoint: the barrier is the last message of every stream, and nothing
    /// triggers after it.
    pub terminal: bool,
    /// Sources end their streams (maximum watermark, end of stream) before the barrier.
    pub drain: bool,
    /// What the shell needs to answer the request; handed back in
    /// [`Command::ReplySavepoint`].
    pub token: R,
}

/// Where a completed checkpoint can be restored from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Its own directory in checkpoint storage (`chk-<id>`).
    CheckpointDir,
    /// The savepoint directory it was copied to.
    Savepoint(PathBuf),
}

/// What became of writing a checkpoint that every task acknowledged; reported with
/// [`CheckpointCoordinator::metadata_written`].
#[derive(Debug)]
pub enum MetadataOutcome {
    /// `_metadata` is written and, for a savepoint, copied to its target.
    Written,
    /// `_metadata` could not be written: the checkpoint fails.
    MetadataFailed(Error),
    /// `_metadata` is written but the savepoint could not be copied to its target. The
    /// checkpoint still completes, unless the savepoint was terminal: then the job fails.
    /// Taken as [`MetadataOutcome::Written`] for a checkpoint that is not a savepoint.
    SavepointFailed(Error),
    /// `_metadata` is written but the savepoint writer crashed (a panic, with this
    /// message): the job fails, whatever the savepoint's kind. Taken as
    /// [`MetadataOutcome::Written`] for a checkpoint that is not a savepoint.
    SavepointCrashed(String),
}

/// What the coordinator asks its shell to do. The commands returned by one event are
/// executed in the order given; [`Command::FailJob`] is always the last of its batch.
#[derive(Debug)]
pub enum Command<T, A, R> {
    /// Create the checkpoint's directory, record the trigger in the statistics and send
    /// the barrier to every source. When the directory cannot be created, send nothing
    /// and report [`CheckpointCoordinator::trigger_failed`].
    Trigger {
        /// Checkpoint id.
        id: CheckpointId,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// The barrier is the last message of every stream.
        terminal: bool,
        /// Sources end their streams before the barrier.
        drain: bool,
        /// Wall-clock time the barrier carries, ms since the epoch.
        timestamp_ms: i64,
    },
    /// An ack was accepted for the checkpoint in flight: record it in the statistics.
    Acknowledged {
        /// Checkpoint id.
        id: CheckpointId,
        /// The task that acknowledged.
        task: T,
    },
    /// Every task acknowledged: write the checkpoint's `_metadata` from the acks and,
    /// for a savepoint, copy it to `savepoint_target`; then report
    /// [`CheckpointCoordinator::metadata_written`].
    WriteMetadata {
        /// Checkpoint id.
        id: CheckpointId,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// Whether the barrier was terminal.
        terminal: bool,
        /// The barrier's wall-clock time, ms since the epoch.
        timestamp_ms: i64,
        /// One ack per expected task, in task order.
        acks: Vec<(T, A)>,
        /// Where a savepoint is copied to.
        savepoint_target: Option<PathBuf>,
    },
    /// The checkpoint failed: discard its directory, record the failure in the
    /// statistics and tell every task to abort it.
    Abort {
        /// Checkpoint id.
        id: CheckpointId,
        /// Why it failed.
        reason: String,
    },
    /// A checkpoint completed: keep the newest `retained` complete checkpoints in
    /// storage up to `latest`, and mark completed checkpoints with an id below
    /// `discard_below` as discarded in the statistics.
    Retire {
        /// The checkpoint that just completed.
        latest: CheckpointId,
        /// Complete checkpoints to keep.
        retained: usize,
        /// `latest - (retained - 1)`: the statistics' view of what retention removed.
        discard_below: CheckpointId,
    },
    /// The checkpoint is complete and durable: record it in the statistics and remember
    /// `location` as the newest point to restore from.
    Completed {
        /// Checkpoint id.
        id: CheckpointId,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// Where it can be restored from.
        location: Location,
    },
    /// Tell every task the checkpoint is complete, so sinks commit.
    NotifyComplete {
        /// Checkpoint id.
        id: CheckpointId,
    },
    /// Answer a savepoint request; each request is answered exactly once.
    ReplySavepoint {
        /// The token the request came with.
        token: R,
        /// Whether it was a stop-with-savepoint: on success the job ends after it.
        terminal: bool,
        /// The savepoint's directory, or why there is none.
        result: Result<PathBuf, String>,
    },
    /// The attempt ended with this checkpoint in flight: discard its directory. The tasks
    /// are gone, so there is nobody to tell.
    Discard {
        /// Checkpoint id.
        id: CheckpointId,
    },
    /// Fail the job attempt with this error; the restart strategy decides what follows.
    FailJob {
        /// Why.
        error: Error,
    },
}

/// The settings the rules read, copied out of [`CheckpointConfig`].
#[derive(Debug, Clone, Copy)]
struct Rules {
    interval: Duration,
    timeout: Duration,
    min_pause: Duration,
    tolerable_failures: u32,
    retained: usize,
}

/// The checkpoint in flight.
#[derive(Debug)]
struct InFlight<T, A, R> {
    id: CheckpointId,
    kind: CheckpointKind,
    terminal: bool,
    timestamp_ms: i64,
    /// Monotonic time of the trigger: the timeout and the next interval count from it.
    started: Duration,
    acks: BTreeMap<T, A>,
    savepoint: Option<Savepoint<R>>,
    /// Every task acked and the metadata is being written.
    writing: bool,
}

/// The checkpoint coordinator of one job attempt: events in, [`Command`]s out.
///
/// `T` identifies a task, `A` is the payload of an ack (the task's snapshot), handed
/// back in [`Command::WriteMetadata`], and `R` is the token a savepoint request carries,
/// handed back in [`Command::ReplySavepoint`]. The rules are in the
/// [module docs](self).
#[derive(Debug)]
pub struct CheckpointCoordinator<T, A, R> {
    /// `None`: checkpointing is off; nothing triggers and savepoints are refused.
    rules: Option<Rules>,
    /// Every task that must ack a checkpoint.
    tasks: BTreeSet<T>,
    sources: BTreeSet<T>,
    finished_sources: BTreeSet<T>,
    next_id: CheckpointId,
    /// The latest time seen.
    now: Duration,
    next_trigger: Duration,
    consecutive_failures: u32,
    in_flight: Option<InFlight<T, A, R>>,
    terminal_triggered: bool,
    savepoints: VecDeque<Savepoint<R>>,
    ended: bool,
}

impl<T: Ord + Clone, A, R> CheckpointCoordinator<T, A, R> {
    /// A coordinator for `tasks`, of which `sources` are the sources, at time `now`.
    /// `config` is `None` when checkpointing is off. The first checkpoint gets `first_id`
    /// and triggers `interval` after `now`.
    pub fn new(
        config: Option<&CheckpointConfig>,
        tasks: impl IntoIterator<Item = T>,
        sources: impl IntoIterator<Item = T>,
        first_id: CheckpointId,
        now: Duration,
    ) -> Self {
        let rules = config.map(|c| Rules {
            interval: c.interval,
            timeout: c.timeout,
            min_pause: c.min_pause,
            tolerable_failures: c.tolerable_failures,
            retained: c.retained,
        });
        Self {
            rules,
            tasks: tasks.into_iter().collect(),
            sources: sources.into_iter().collect(),
            finished_sources: BTreeSet::new(),
            next_id: first_id,
            now,
            next_trigger: now.saturating_add(rules.map_or(Duration::ZERO, |r| r.interval)),
            consecutive_failures: 0,
            in_flight: None,
            terminal_triggered: false,
            savepoints: VecDeque::new(),
            ended: false,
        }
    }

    /// The id the next trigger takes. The shell keeps it across attempts, so that a new
    /// attempt's coordinator goes on from it.
    pub fn next_id(&self) -> CheckpointId {
        self.next_id
    }

    /// The checkpoint in flight, if any.
    pub fn in_flight(&self) -> Option<CheckpointId> {
        self.in_flight.as_ref().map(|f| f.id)
    }

    /// Failures of periodic checkpoints since the last completion.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether the coordinator has stopped: it failed the job, or the attempt ended.
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// When the shell must call [`tick`](Self::tick) next, at the latest; `None` when
    /// only other events can make something due. A deadline at or before the latest time
    /// seen means at once (a savepoint or the final checkpoint is waiting).
    pub fn deadline(&self) -> Option<Duration> {
        let rules = self.rules?;
        if self.ended {
            return None;
        }
        if let Some(f) = &self.in_flight {
            if f.writing {
                // It cannot time out any more; the write's result is the next event.
                return None;
            }
            return Some(f.started.saturating_add(rules.timeout));
        }
        if self.terminal_triggered {
            return None;
        }
        if !self.savepoints.is_empty() || self.all_sources_finished() {
            return Some(self.now);
        }
        Some(self.next_trigger)
    }

    /// Time passed: fails the checkpoint in flight if it timed out, or else triggers
    /// what is due (the oldest queued savepoint, then the final checkpoint, then a
    /// periodic one). `wall_ms` is the job clock's time, stamped on a barrier triggered
    /// now. The shell calls it at the [deadline](Self::deadline) and after every other
    /// event, so that what an event made due triggers at once.
    #[must_use = "the commands must be executed"]
    pub fn tick(&mut self, now: Duration, wall_ms: i64) -> Vec<Command<T, A, R>> {
        self.advance(now);
        let mut out = Vec::new();
        let Some(rules) = self.rules else { return out };
        if self.ended {
            return out;
        }
        if let Some(f) = &self.in_flight {
            let timed_out = !f.writing && self.now >= f.started.saturating_add(rules.timeout);
            if timed_out && let Some(f) = self.in_flight.take() {
                self.fail(f, format!("timed out after {} ms", millis(rules.timeout)), &mut out);
            }
            // Even when the timeout freed the slot: the next checkpoint waits for the
            // pause, which the failure just set, and for the next tick.
            return out;
        }
        if self.terminal_triggered {
            return out;
        }
        if let Some(savepoint) = self.savepoints.pop_front() {
            self.trigger(false, Some(savepoint), wall_ms, &mut out);
        } else if self.all_sources_finished() {
            self.trigger(true, None, wall_ms, &mut out);
        } else if self.now >= self.next_trigger {
            self.trigger(false, None, wall_ms, &mut out);
        }
        out
    }

    /// `task` acknowledged checkpoint `id` with `payload`. Once every expected task has
    /// acked the checkpoint in flight, asks for its metadata to be written. Acks for any
    /// other checkpoint, from unknown tasks, or after the metadata was asked for are
    /// ignored.
    #[must_use = "the commands must be executed"]
    pub fn ack(&mut self, now: Duration, id: CheckpointId, task: T, payload: A) -> Vec<Command<T, A, R>> {
        self.advance(now);
        let mut out = Vec::new();
        if self.ended || !self.tasks.contains(&task) {
            return out;
        }
        let Some(f) = self.in_flight.as_mut() else { return out };
        if f.id != id || f.writing {
            return out;
        }
        out.push(Command::Acknowledged { id, task: task.clone() });
        f.acks.insert(task, payload);
        // Only expected tasks are in `acks`, so a full count means every one of them.
        if f.acks.len() == self.tasks.len() {
            f.writing = true;
            out.push(Command::WriteMetadata {
                id,
                kind: f.kind,
                terminal: f.terminal,
                timestamp_ms: f.timestamp_ms,
                acks: std::mem::take(&mut f.acks).into_iter().collect(),
                savepoint_target: f.savepoint.as_ref().map(|s| s.target.clone()),
            });
        }
        out
    }

    /// `task` declined checkpoint `id`: the checkpoint in flight fails with `reason` if it
    /// is that one; otherwise nothing happens.
    #[must_use = "the commands must be executed"]
    pub fn decline(&mut self, now: Duration, id: CheckpointId, task: T, reason: String) -> Vec<Command<T, A, R>> {
        self.advance(now);
        let mut out = Vec::new();
        if self.tasks.contains(&task) {
            self.fail_in_flight(id, reason, &mut out);
        }
        out
    }

    /// The shell could not carry out [`Command::Trigger`] for `id` (its directory could
    /// not be created): the checkpoint fails with `reason`, as if declined.
    #[must_use = "the commands must be executed"]
    pub fn trigger_failed(&mut self, now: Duration, id: CheckpointId, reason: String) -> Vec<Command<T, A, R>> {
        self.advance(now);
        let mut out = Vec::new();
        self.fail_in_flight(id, reason, &mut out);
        out
    }

    /// The shell carried out [`Command::WriteMetadata`] for `id`. Written: the checkpoint
    /// completes (retire, record, answer its savepoint, notify the tasks); otherwise see
    /// [`MetadataOutcome`].
    #[must_use = "the commands must be executed"]
    pub fn metadata_written(
        &mut self,
        now: Duration,
        id: CheckpointId,
        outcome: MetadataOutcome,
    ) -> Vec<Command<T, A, R>> {
        self.advance(now);
        let mut out = Vec::new();
        let Some(rules) = self.rules else { return out };
        if self.ended {
            return out;
        }
        let Some(mut f) = self.in_flight.take_if(|f| f.id == id && f.writing) else { return out };
        let mut location = Location::CheckpointDir;
        let mut copied = None;
        match (outcome, f.savepoint.take()) {
            (MetadataOutcome::MetadataFailed(e), savepoint) => {
                f.savepoint = savepoint;
                self.fail(f, format!("writing the metadata failed: {e}"), &mut out);
                return out;
            }
            (_, None) => {}
            (MetadataOutcome::Written, Some(savepoint)) => {
                location = Location::Savepoint(savepoint.target.clone());
                copied = Some(savepoint);
            }
            (MetadataOutcome::SavepointFailed(e), Some(savepoint)) => {
                let terminal = savepoint.terminal;
                out.push(reply(savepoint, Err(e.to_string())));
                if terminal {
                    self.fail_job(e, &mut out);
                    return out;
                }
                // The checkpoint itself is complete: it completes from its own directory,
                // and the savepoint has had its one answer.
            }
            (MetadataOutcome::SavepointCrashed(reason), Some(savepoint)) => {
                out.push(reply(savepoint, Err(reason.clone())));
                self.fail_job(Error::Internal(reason), &mut out);
                return out;
            }
        }
        let older = u64::try_from(rules.retained.saturating_sub(1)).unwrap_or(u64::MAX);
        out.push(Command::Retire { latest: id, retained: rules.retained, discard_below: id.saturating_sub(older) });
        out.push(Command::Completed { id, kind: f.kind, location });
        // Answered only now, so that a requester who looks finds it in the statistics.
        if let Some(savepoint) = copied {
            let target = savepoint.target.clone();
            out.push(reply(savepoint, Ok(target)));
        }
        self.consecutive_failures = 0;
        self.next_trigger = self.next_after(f.started, rules);
        out.push(Command::NotifyComplete { id });
        out
    }

    /// Source `task` reached the end of its input. Once every source has, the final
    /// checkpoint triggers at the next [`tick`](Self::tick).
    pub fn source_finished(&mut self, task: T) {
        if self.sources.contains(&task) {
            self.finished_sources.insert(task);
        }
    }

    /// A user asked for a savepoint: it is queued, or refused at once (checkpointing off,
    /// the attempt ended, or a terminal barrier already triggered).
    #[must_use = "the commands must be executed"]
    pub fn savepoint_requested(&mut self, savepoint: Savepoint<R>) -> Vec<Command<T, A, R>> {
        let refusal = if self.rules.is_none() {
            Some(NOT_CONFIGURED)
        } else if self.ended {
            Some(ENDED)
        } else if self.terminal_triggered {
            Some(FINISHING)
        } else {
            None
        };
        match refusal {
            Some(reason) => vec![reply(savepoint, Err(reason.to_string()))],
            None => {
                self.savepoints.push_back(savepoint);
                Vec::new()
            }
        }
    }

    /// The attempt stops (a task failed, the job was canceled, or every task finished):
    /// the checkpoint in flight is discarded and every savepoint still waiting is answered
    /// with `reason`. Afterwards every event is ignored and every savepoint request
    /// refused. Calling it again does nothing.
    #[must_use = "the commands must be executed"]
    pub fn attempt_ended(&mut self, reason: &str) -> Vec<Command<T, A, R>> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.ended = true;
        if let Some(f) = self.in_flight.take() {
            out.push(Command::Discard { id: f.id });
            if let Some(savepoint) = f.savepoint {
                out.push(reply(savepoint, Err(reason.to_string())));
            }
        }
        for savepoint in self.savepoints.drain(..) {
            out.push(reply(savepoint, Err(reason.to_string())));
        }
        out
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    fn all_sources_finished(&self) -> bool {
        // `finished_sources` only holds sources, so equal counts mean all of them.
        self.finished_sources.len() == self.sources.len()
    }

    /// When the next periodic checkpoint may trigger, after one triggered at `started`
    /// ends now.
    fn next_after(&self, started: Duration, rules: Rules) -> Duration {
        started.saturating_add(rules.interval).max(self.now.saturating_add(rules.min_pause))
    }

    /// Triggers a savepoint, or a checkpoint (terminal when `end_of_input`).
    fn trigger(
        &mut self,
        end_of_input: bool,
        savepoint: Option<Savepoint<R>>,
        wall_ms: i64,
        out: &mut Vec<Command<T, A, R>>,
    ) {
        let (kind, terminal, drain) = match &savepoint {
            Some(s) => (CheckpointKind::Savepoint, s.terminal, s.drain),
            None => (CheckpointKind::Checkpoint, end_of_input, false),
        };
        let id = self.next_id;
        let Some(next) = id.checked_add(1) else {
            // Unreachable in practice (one checkpoint a millisecond for 500 million
            // years), but an id must never be reused.
            if let Some(savepoint) = savepoint {
                out.push(reply(savepoint, Err("checkpoint ids are exhausted".into())));
            }
            self.fail_job(Error::Internal("checkpoint ids are exhausted".into()), out);
            return;
        };
        self.next_id = next;
        out.push(Command::Trigger { id, kind, terminal, drain, timestamp_ms: wall_ms });
        if terminal {
            self.terminal_triggered = true;
            // Nothing triggers after a terminal barrier: the savepoints still queued
            // behind it get the answer a request arriving now would get.
            for queued in self.savepoints.drain(..) {
                out.push(reply(queued, Err(FINISHING.to_string())));
            }
        }
        self.in_flight = Some(InFlight {
            id,
            kind,
            terminal,
            timestamp_ms: wall_ms,
            started: self.now,
            acks: BTreeMap::new(),
            savepoint,
            writing: false,
        });
    }

    /// Fails the checkpoint in flight if it is `id` and still waiting for acks.
    fn fail_in_flight(&mut self, id: CheckpointId, reason: String, out: &mut Vec<Command<T, A, R>>) {
        if self.ended {
            return;
        }
        if let Some(f) = self.in_flight.take_if(|f| f.id == id && !f.writing) {
            self.fail(f, reason, out);
        }
    }

    /// Aborts `f`, taken out of `in_flight`, and applies the failure rules.
    fn fail(&mut self, f: InFlight<T, A, R>, reason: String, out: &mut Vec<Command<T, A, R>>) {
        let Some(rules) = self.rules else { return };
        out.push(Command::Abort { id: f.id, reason: reason.clone() });
        self.next_trigger = self.next_after(f.started, rules);
        if f.terminal {
            if let Some(savepoint) = f.savepoint {
                out.push(reply(savepoint, Err(reason.clone())));
            }
            let error = Error::CheckpointFailed {
                checkpoint_id: f.id,
                reason: format!("the final checkpoint failed: {reason}"),
            };
            self.fail_job(error, out);
            return;
        }
        if let Some(savepoint) = f.savepoint {
            // A savepoint is the user's to retry; it does not count against the job.
            out.push(reply(savepoint, Err(reason)));
            return;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.consecutive_failures > rules.tolerable_failures {
            let error = Error::TooManyCheckpointFailures {
                failures: self.consecutive_failures,
                tolerable: rules.tolerable_failures,
                last: reason,
            };
            self.fail_job(error, out);
        }
    }

    /// Ends the coordinator, answering every waiting savepoint, then fails the job.
    fn fail_job(&mut self, error: Error, out: &mut Vec<Command<T, A, R>>) {
        out.extend(self.attempt_ended(&format!("the job failed: {error}")));
        out.push(Command::FailJob { error });
    }
}

/// The answer to a savepoint request.
fn reply<T, A, R>(savepoint: Savepoint<R>, result: Result<PathBuf, String>) -> Command<T, A, R> {
    Command::ReplySavepoint { token: savepoint.token, terminal: savepoint.terminal, result }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Coord = CheckpointCoordinator<usize, (), u32>;
    type Cmd = Command<usize, (), u32>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(interval: u64, timeout: u64, min_pause: u64) -> CheckpointConfig {
        CheckpointConfig::new("/tmp/coordinator-test")
            .with_interval(ms(interval))
            .with_timeout(ms(timeout))
            .with_min_pause(ms(min_pause))
    }

    /// Tasks `0..tasks`, of which `0..sources` are sources; time 0, next id 1.
    fn coordinator(cfg: &CheckpointConfig, tasks: usize, sources: usize) -> Coord {
        CheckpointCoordinator::new(Some(cfg), 0..tasks, 0..sources, 1, Duration::ZERO)
    }

    fn tick(c: &mut Coord, at: u64) -> Vec<Cmd> {
        c.tick(ms(at), at as i64)
    }

    fn trigger_of(cmds: &[Cmd]) -> Option<(CheckpointId, CheckpointKind, bool)> {
        cmds.iter().find_map(|cmd| match cmd {
            Command::Trigger { id, kind, terminal, .. } => Some((*id, *kind, *terminal)),
            _ => None,
        })
    }

    fn triggered_id(cmds: &[Cmd]) -> Option<CheckpointId> {
        trigger_of(cmds).map(|t| t.0)
    }

    fn abort_reason(cmds: &[Cmd]) -> Option<&str> {
        cmds.iter().find_map(|cmd| match cmd {
            Command::Abort { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
    }

    fn notified(cmds: &[Cmd], id: CheckpointId) -> bool {
        cmds.iter().any(|cmd| matches!(cmd, Command::NotifyComplete { id: n } if *n == id))
    }

    fn writes(cmds: &[Cmd]) -> bool {
        cmds.iter().any(|cmd| matches!(cmd, Command::WriteMetadata { .. }))
    }

    fn replies(cmds: &[Cmd]) -> Vec<(u32, Result<PathBuf, String>)> {
        cmds.iter()
            .filter_map(|cmd| match cmd {
                Command::ReplySavepoint { token, result, .. } => Some((*token, result.clone())),
                _ => None,
            })
            .collect()
    }

    /// The variant names, to check the order of a batch.
    fn names(cmds: &[Cmd]) -> Vec<&'static str> {
        cmds.iter()
            .map(|cmd| match cmd {
                Command::Trigger { .. } => "Trigger",
                Command::Acknowledged { .. } => "Acknowledged",
                Command::WriteMetadata { .. } => "WriteMetadata",
                Command::Abort { .. } => "Abort",
                Command::Retire { .. } => "Retire",
                Command::Completed { .. } => "Completed",
                Command::NotifyComplete { .. } => "NotifyComplete",
                Command::ReplySavepoint { .. } => "ReplySavepoint",
                Command::Discard { .. } => "Discard",
                Command::FailJob { .. } => "FailJob",
            })
            .collect()
    }

    fn savepoint(token: u32, terminal: bool) -> Savepoint<u32> {
        Savepoint { target: PathBuf::from(format!("/savepoints/{token}")), terminal, drain: false, token }
    }

    /// Every one of `tasks` acks `id` at `at`.
    fn ack_all(c: &mut Coord, at: u64, id: CheckpointId, tasks: usize) -> Vec<Cmd> {
        let mut out = Vec::new();
        for task in 0..tasks {
            out.extend(c.ack(ms(at), id, task, ()));
        }
        out
    }

    /// Every task acks `id` and its metadata is written, at `at`; returns the completion.
    fn complete(c: &mut Coord, at: u64, id: CheckpointId, tasks: usize) -> Vec<Cmd> {
        let acked = ack_all(c, at, id, tasks);
        assert!(writes(&acked), "{acked:?}");
        c.metadata_written(ms(at), id, MetadataOutcome::Written)
    }

    /// Triggers the next checkpoint at `at` and has task 0 decline it a millisecond later.
    fn trigger_and_decline(c: &mut Coord, at: u64) -> Vec<Cmd> {
        let id = triggered_id(&tick(c, at)).unwrap();
        c.decline(ms(at + 1), id, 0, "declined".into())
    }

    #[test]
    fn periodic_checkpoints_trigger_on_the_interval() {
        let cfg = config(100, 1000, 0);
        let mut c = coordinator(&cfg, 2, 1);
        assert_eq!(c.deadline(), Some(ms(100)));
        assert!(tick(&mut c, 99).is_empty());
        let first = tick(&mut c, 100);
        assert!(matches!(first.as_slice(), [Command::Trigger { id: 1, timestamp_ms: 100, terminal: false, .. }]));
        assert_eq!(c.deadline(), Some(ms(1100)), "in flight: the timeout is next");
        // The interval counts from trigger to trigger: after 30 ms of checkpointing the
        // next one is 70 ms away.
        assert!(notified(&complete(&mut c, 130, 1, 2), 1));
        assert_eq!(c.deadline(), Some(ms(200)));
        assert!(tick(&mut c, 199).is_empty());
        assert_eq!(triggered_id(&tick(&mut c, 200)), Some(2));
    }

    #[test]
    fn min_pause_separates_the_end_of_one_from_the_next_trigger() {
        let cfg = config(100, 1000, 50).with_tolerable_failures(5);
        let mut c = coordinator(&cfg, 1, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        let _ = complete(&mut c, 180, 1, 1);
        // The interval would allow 200, but the pause after the end at 180 lasts to 230.
        assert_eq!(c.deadline(), Some(ms(230)));
        assert!(tick(&mut c, 229).is_empty());
        assert_eq!(triggered_id(&tick(&mut c, 230)), Some(2));
        // The pause follows a failure too: 230 + 100 = 330 < 300 + 50.
        assert!(abort_reason(&c.decline(ms(300), 2, 0, "no".into())).is_some());
        assert_eq!(c.deadline(), Some(ms(350)));
        assert!(tick(&mut c, 349).is_empty());
        assert_eq!(triggered_id(&tick(&mut c, 350)), Some(3));
    }

    #[test]
    fn a_checkpoint_not_acked_in_time_fails_and_late_acks_are_ignored() {
        let cfg = config(100, 50, 0).with_tolerable_failures(1);
        let mut c = coordinator(&cfg, 2, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        let acked = c.ack(ms(110), 1, 0, ());
        assert!(matches!(acked.as_slice(), [Command::Acknowledged { id: 1, task: 0 }]));
        assert_eq!(c.deadline(), Some(ms(150)));
        assert!(tick(&mut c, 149).is_empty());
        let timed_out = tick(&mut c, 150);
        assert_eq!(abort_reason(&timed_out), Some("timed out after 50 ms"));
        assert_eq!(triggered_id(&timed_out), None, "a tick that fails a checkpoint triggers nothing");
        assert_eq!(c.in_flight(), None);
        assert_eq!(c.consecutive_failures(), 1);
        // The straggler's ack arrives late, and so does a decline: both are ignored.
        assert!(c.ack(ms(151), 1, 1, ()).is_empty());
        assert!(c.decline(ms(152), 1, 1, "late".into()).is_empty());
        // The next one is due one interval after the trigger of the one that failed.
        assert_eq!(c.deadline(), Some(ms(200)));
        assert_eq!(triggered_id(&tick(&mut c, 200)), Some(2));
    }

    #[test]
    fn consecutive_failures_beyond_the_tolerable_number_fail_the_job() {
        let cfg = config(100, 1000, 0).with_tolerable_failures(2);
        let mut c = coordinator(&cfg, 1, 1);
        for at in [100, 200] {
            let failed = trigger_and_decline(&mut c, at);
            assert_eq!(names(&failed), ["Abort"]);
        }
        assert_eq!(c.consecutive_failures(), 2);
        // A completion resets the count.
        assert_eq!(triggered_id(&tick(&mut c, 300)), Some(3));
        let _ = complete(&mut c, 301, 3, 1);
        assert_eq!(c.consecutive_failures(), 0);
        for at in [400, 500] {
            assert_eq!(names(&trigger_and_decline(&mut c, at)), ["Abort"]);
        }
        // A failed savepoint is answered and does not count, and it triggers without
        // waiting for the interval (due at 600).
        assert!(c.savepoint_requested(savepoint(9, false)).is_empty());
        assert_eq!(trigger_of(&tick(&mut c, 550)), Some((6, CheckpointKind::Savepoint, false)));
        let failed = c.decline(ms(551), 6, 0, "no".into());
        assert_eq!(names(&failed), ["Abort", "ReplySavepoint"]);
        assert_eq!(replies(&failed), [(9, Err("no".to_string()))]);
        assert_eq!(c.consecutive_failures(), 2);
        // The third periodic failure in a row is one too many.
        let last = trigger_and_decline(&mut c, 650);
        assert!(
            matches!(
                last.as_slice(),
                [
                    Command::Abort { id: 7, .. },
                    Command::FailJob { error: Error::TooManyCheckpointFailures { failures: 3, tolerable: 2, .. } }
                ]
            ),
            "{last:?}"
        );
        assert!(c.has_ended());
        assert_eq!(c.deadline(), None);
        assert!(tick(&mut c, 10_000).is_empty());
    }

    #[test]
    fn a_metadata_write_failure_fails_the_checkpoint_and_counts() {
        let cfg = config(100, 1000, 0);
        let mut c = coordinator(&cfg, 2, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        assert!(writes(&ack_all(&mut c, 110, 1, 2)));
        let failed = c.metadata_written(ms(120), 1, MetadataOutcome::MetadataFailed(Error::Internal("disk".into())));
        assert!(abort_reason(&failed).is_some_and(|r| r.starts_with("writing the metadata failed: ")), "{failed:?}");
        assert!(matches!(failed.last(), Some(Command::FailJob { error: Error::TooManyCheckpointFailures { .. } })));
    }

    #[test]
    fn a_trigger_the_shell_could_not_carry_out_fails_like_a_decline() {
        let cfg = config(100, 1000, 0).with_tolerable_failures(1);
        let mut c = coordinator(&cfg, 1, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        assert_eq!(abort_reason(&c.trigger_failed(ms(100), 1, "no space".into())), Some("no space"));
        assert_eq!(c.consecutive_failures(), 1);
        assert!(c.trigger_failed(ms(100), 1, "again".into()).is_empty(), "failed once");
        assert_eq!(triggered_id(&tick(&mut c, 200)), Some(2), "the id is not reused");
    }

    #[test]
    fn one_checkpoint_in_flight_at_a_time() {
        let cfg = config(100, 10_000, 0);
        let mut c = coordinator(&cfg, 2, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        assert!(c.savepoint_requested(savepoint(7, false)).is_empty());
        for at in [200, 300, 900] {
            assert!(tick(&mut c, at).is_empty(), "nothing triggers while 1 is in flight");
        }
        assert!(!writes(&c.ack(ms(950), 1, 0, ())));
        assert!(writes(&c.ack(ms(960), 1, 1, ())));
        // While its metadata is written the checkpoint holds its slot and cannot time out.
        assert_eq!(c.in_flight(), Some(1));
        assert_eq!(c.deadline(), None);
        assert!(tick(&mut c, 20_000).is_empty());
        assert!(c.decline(ms(20_000), 1, 0, "too late".into()).is_empty());
        assert!(notified(&c.metadata_written(ms(20_000), 1, MetadataOutcome::Written), 1));
        // The savepoint that waited goes at once.
        assert_eq!(c.deadline(), Some(ms(20_000)));
        assert_eq!(trigger_of(&tick(&mut c, 20_000)), Some((2, CheckpointKind::Savepoint, false)));
    }

    #[test]
    fn completion_needs_an_ack_from_every_task() {
        let cfg = config(100, 10_000, 0);
        let mut c = coordinator(&cfg, 3, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        assert_eq!(names(&c.ack(ms(101), 1, 0, ())), ["Acknowledged"]);
        assert_eq!(names(&c.ack(ms(102), 1, 0, ())), ["Acknowledged"], "a repeated ack counts once");
        assert!(c.ack(ms(103), 1, 9, ()).is_empty(), "not a task of this job");
        assert!(c.ack(ms(104), 2, 1, ()).is_empty(), "not the checkpoint in flight");
        assert_eq!(names(&c.ack(ms(105), 1, 1, ())), ["Acknowledged"]);
        let last = c.ack(ms(106), 1, 2, ());
        assert_eq!(names(&last), ["Acknowledged", "WriteMetadata"]);
        let Some(Command::WriteMetadata { id: 1, acks, savepoint_target: None, timestamp_ms: 100, .. }) = last.last()
        else {
            panic!("{last:?}")
        };
        assert_eq!(acks.iter().map(|(task, _)| *task).collect::<Vec<_>>(), [0, 1, 2]);
        let done = c.metadata_written(ms(107), 1, MetadataOutcome::Written);
        assert_eq!(names(&done), ["Retire", "Completed", "NotifyComplete"]);
        assert!(matches!(done[1], Command::Completed { id: 1, location: Location::CheckpointDir, .. }));
        assert!(c.metadata_written(ms(108), 1, MetadataOutcome::Written).is_empty(), "completes once");
    }

    #[test]
    fn savepoints_trigger_in_request_order_and_are_reported_once() {
        let cfg = config(100, 10_000, 0);
        let mut c = coordinator(&cfg, 1, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        for token in [10, 11, 12] {
            assert!(c.savepoint_requested(savepoint(token, false)).is_empty());
        }
        // The input ends too: the savepoints still go before the final checkpoint.
        c.source_finished(0);
        let _ = complete(&mut c, 110, 1, 1);
        let mut answered = Vec::new();
        for (id, at) in [(2, 120), (3, 130), (4, 140)] {
            assert_eq!(trigger_of(&tick(&mut c, at)), Some((id, CheckpointKind::Savepoint, false)));
            let done = complete(&mut c, at + 1, id, 1);
            // Answered after the statistics know it and before the tasks commit.
            assert_eq!(names(&done), ["Retire", "Completed", "ReplySavepoint", "NotifyComplete"]);
            assert!(matches!(&done[1], Command::Completed { location: Location::Savepoint(_), .. }));
            answered.extend(replies(&done));
        }
        assert_eq!(
            answered,
            [
                (10, Ok(PathBuf::from("/savepoints/10"))),
                (11, Ok(PathBuf::from("/savepoints/11"))),
                (12, Ok(PathBuf::from("/savepoints/12")))
            ]
        );
        assert_eq!(trigger_of(&tick(&mut c, 150)), Some((5, CheckpointKind::Checkpoint, true)));
        // Once the final checkpoint is under way, a request is refused, once.
        assert_eq!(replies(&c.savepoint_requested(savepoint(13, false))), [(13, Err(FINISHING.to_string()))]);
        assert!(replies(&c.attempt_ended("the job finished")).is_empty());
    }

    #[test]
    fn savepoints_queued_behind_a_stop_with_savepoint_are_refused_when_it_triggers() {
        let cfg = config(100, 10_000, 0);
        let mut c = coordinator(&cfg, 1, 1);
        assert!(c.savepoint_requested(savepoint(1, true)).is_empty());
        assert!(c.savepoint_requested(savepoint(2, false)).is_empty());
        let stop = tick(&mut c, 5);
        assert_eq!(trigger_of(&stop), Some((1, CheckpointKind::Savepoint, true)));
        assert_eq!(replies(&stop), [(2, Err(FINISHING.to_string()))]);
        let done = complete(&mut c, 6, 1, 1);
        assert!(matches!(
            &done[2],
            Command::ReplySavepoint { token: 1, terminal: true, result: Ok(p) } if p == &PathBuf::from("/savepoints/1")
        ));
        assert_eq!(c.deadline(), None, "nothing triggers after a terminal barrier");
        assert!(tick(&mut c, 1_000_000).is_empty());
    }

    #[test]
    fn a_savepoint_that_cannot_be_copied_is_reported_failed_once() {
        let cfg = config(100, 10_000, 0);
        // Not terminal: the checkpoint completes from its own directory.
        let mut c = coordinator(&cfg, 1, 1);
        assert!(c.savepoint_requested(savepoint(1, false)).is_empty());
        assert_eq!(triggered_id(&tick(&mut c, 1)), Some(1));
        assert!(writes(&ack_all(&mut c, 2, 1, 1)));
        let done =
            c.metadata_written(ms(3), 1, MetadataOutcome::SavepointFailed(Error::Internal("target full".into())));
        assert_eq!(names(&done), ["ReplySavepoint", "Retire", "Completed", "NotifyComplete"]);
        assert!(matches!(replies(&done).as_slice(), [(1, Err(_))]));
        assert!(matches!(done[2], Command::Completed { location: Location::CheckpointDir, .. }));
        // Terminal: the job fails.
        let mut c = coordinator(&cfg, 1, 1);
        assert!(c.savepoint_requested(savepoint(2, true)).is_empty());
        assert_eq!(triggered_id(&tick(&mut c, 1)), Some(1));
        assert!(writes(&ack_all(&mut c, 2, 1, 1)));
        let failed =
            c.metadata_written(ms(3), 1, MetadataOutcome::SavepointFailed(Error::Internal("target full".into())));
        assert_eq!(names(&failed), ["ReplySavepoint", "FailJob"]);
        // A crashed writer fails the job whatever the savepoint.
        let mut c = coordinator(&cfg, 1, 1);
        assert!(c.savepoint_requested(savepoint(3, false)).is_empty());
        assert_eq!(triggered_id(&tick(&mut c, 1)), Some(1));
        assert!(writes(&ack_all(&mut c, 2, 1, 1)));
        let crashed = c.metadata_written(ms(3), 1, MetadataOutcome::SavepointCrashed("panicked".into()));
        assert_eq!(names(&crashed), ["ReplySavepoint", "FailJob"]);
        assert!(matches!(crashed.last(), Some(Command::FailJob { error: Error::Internal(m) }) if m == "panicked"));
    }

    #[test]
    fn completion_retires_all_but_the_retained_newest() {
        let cfg = config(100, 10_000, 0).with_retained(3);
        // Ids go on from where an earlier attempt stopped.
        let mut c: Coord = CheckpointCoordinator::new(Some(&cfg), 0..1, 0..1, 5, Duration::ZERO);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(5));
        let done = complete(&mut c, 110, 5, 1);
        assert!(matches!(done[0], Command::Retire { latest: 5, retained: 3, discard_below: 3 }), "{done:?}");
        assert_eq!(c.next_id(), 6);
        let cfg = config(100, 10_000, 0).with_retained(1);
        let mut c = coordinator(&cfg, 1, 1);
        assert_eq!(triggered_id(&tick(&mut c, 100)), Some(1));
        let done = complete(&mut c, 110, 1, 1);
        assert!(matches!(done[0], Command::Retire { latest: 1, retained: 1, discard_below: 1 }), "{done:?}");
    }

    #[test]
    fn the_final_checkpoint_triggers_once_every_source_finished() {
        let cfg = config(100_000, 10_000, 0);
        let mut c = coordinator(&cfg, 3, 2);
        c.source_finished(0);
        c.source_finished(2); // not a source
        assert!(tick(&mut c, 10).is_empty());
        c.source_finished(1);
        assert_eq!(c.deadline(), Some(ms(10)), "due at once");
        assert_eq!(trigger_of(&tick(&mut c, 11)), Some((1, CheckpointKind::Checkpoint, true)));
        assert!(notified(&complete(&mut c, 12, 1, 3), 1));
        assert_eq!(c.deadline(), None);
        assert!(tick(&mut c, 1_000_000).is_empty());
    }

    #[test]
    fn a_failed_final_checkpoint_fails_the_job() {
        let cfg = config(100, 10_000, 0).with_tolerable_failures(5);
        let mut c = coordinator(&cfg, 1, 1);
        c.source_finished(0);
        assert_eq!(trigger_of(&tick(&mut c, 1)), Some((1, CheckpointKind::Checkpoint, true)));
        let failed = c.decline(ms(2), 1, 0, "sink broke".into());
        assert!(
            matches!(
                failed.as_slice(),
                [Command::Abort { id: 1, .. }, Command::FailJob { error: Error::CheckpointFailed { checkpoint_id: 1, reason } }]
                    if reason == "the final checkpoint failed: sink broke"
            ),
            "{failed:?}"
        );
    }

    #[test]
    fn an_ended_attempt_discards_its_checkpoint_and_answers_waiting_savepoints() {
        let cfg = config(100, 10_000, 0);
        let mut c = coordinator(&cfg, 2, 1);
        assert!(c.savepoint_requested(savepoint(1, false)).is_empty());
        assert_eq!(triggered_id(&tick(&mut c, 1)), Some(1));
        assert!(c.savepoint_requested(savepoint(2, true)).is_empty());
        let ended = c.attempt_ended("the job was canceled");
        assert_eq!(names(&ended), ["Discard", "ReplySavepoint", "ReplySavepoint"]);
        assert_eq!(
            replies(&ended),
            [(1, Err("the job was canceled".to_string())), (2, Err("the job was canceled".to_string()))]
        );
        assert!(c.attempt_ended("again").is_empty());
        assert!(c.ack(ms(2), 1, 0, ()).is_empty());
        assert!(tick(&mut c, 1_000).is_empty());
        assert_eq!(replies(&c.savepoint_requested(savepoint(3, false))), [(3, Err(ENDED.to_string()))]);
    }

    #[test]
    fn without_checkpointing_nothing_triggers_and_savepoints_are_refused() {
        let mut c: Coord = CheckpointCoordinator::new(None, 0..2, 0..1, 1, Duration::ZERO);
        assert_eq!(c.deadline(), None);
        c.source_finished(0);
        assert!(tick(&mut c, 1_000_000).is_empty());
        assert_eq!(replies(&c.savepoint_requested(savepoint(1, true))), [(1, Err(NOT_CONFIGURED.to_string()))]);
    }

    // --- property test ------------------------------------------------------------------

    /// Ack payload: the checkpoint and task it was sent for.
    type Payload = (CheckpointId, usize);
    type PCmd = Command<usize, Payload, u32>;

    #[derive(Debug, Clone)]
    enum Op {
        /// This many ms pass, then the shell ticks.
        Wait(u64),
        /// A task acks: `skew` 0 or 1 the newest checkpoint, 2 the one before, 3 the next.
        Ack {
            task: usize,
            skew: u8,
        },
        /// A task declines, with `skew` as for acks.
        Decline {
            task: usize,
            skew: u8,
        },
        SourceFinished(usize),
        Savepoint {
            terminal: bool,
        },
        /// The shell could not make the directory of the checkpoint in flight.
        TriggerFailed,
        /// The shell finishes the metadata write it was asked for, with this outcome.
        Written(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..120).prop_map(Op::Wait),
            6 => (0usize..4, 0u8..4).prop_map(|(task, skew)| Op::Ack { task, skew }),
            1 => (0usize..4, 0u8..4).prop_map(|(task, skew)| Op::Decline { task, skew }),
            1 => (0usize..4).prop_map(Op::SourceFinished),
            1 => any::<bool>().prop_map(|terminal| Op::Savepoint { terminal }),
            1 => Just(Op::TriggerFailed),
            3 => (0u8..5).prop_map(Op::Written),
        ]
    }

    fn outcome(k: u8) -> MetadataOutcome {
        match k {
            0 | 1 => MetadataOutcome::Written,
            2 => MetadataOutcome::MetadataFailed(Error::Internal("disk full".into())),
            3 => MetadataOutcome::SavepointFailed(Error::Internal("target unwritable".into())),
            _ => MetadataOutcome::SavepointCrashed("savepoint writer panicked".into()),
        }
    }

    /// What the test's shell has seen, to check each command against.
    #[derive(Debug, Default)]
    struct Seen {
        /// Every id triggered, in order.
        triggered: Vec<CheckpointId>,
        /// The checkpoint triggered and not yet ended, and when it triggered.
        open: Option<(CheckpointId, Duration)>,
        /// The checkpoint whose metadata the shell was asked to write.
        writing: Option<CheckpointId>,
        /// Acks the shell sent: (checkpoint, task).
        acks_sent: BTreeSet<(CheckpointId, usize)>,
        /// Checkpoints whose metadata was asked for, with every ack.
        fully_acked: BTreeSet<CheckpointId>,
        completed: BTreeSet<CheckpointId>,
        aborted: BTreeSet<CheckpointId>,
        /// Answers per savepoint token.
        answers: BTreeMap<u32, usize>,
        job_failed: bool,
    }

    impl Seen {
        fn open_id(&self) -> Option<CheckpointId> {
            self.open.map(|(id, _)| id)
        }

        /// The id an ack or decline with this skew names.
        fn pick(&self, skew: u8) -> CheckpointId {
            let newest = self.triggered.last().copied().unwrap_or(1);
            match skew {
                2 => newest.saturating_sub(1),
                3 => newest + 1,
                _ => newest,
            }
        }

        fn check(&mut self, cmds: Vec<PCmd>, now: Duration, tasks: usize) -> Result<(), TestCaseError> {
            let mut savepoint_completed = false;
            for cmd in cmds {
                prop_assert!(
                    !self.job_failed || matches!(cmd, Command::ReplySavepoint { .. }),
                    "{:?} after the job failed",
                    cmd
                );
                match cmd {
                    Command::Trigger { id, .. } => {
                        prop_assert!(self.open.is_none(), "{} triggered while {:?} is in flight", id, self.open);
                        prop_assert!(
                            self.triggered.last().is_none_or(|last| id > *last),
                            "id {} after {:?}",
                            id,
                            self.triggered
                        );
                        self.triggered.push(id);
                        self.open = Some((id, now));
                    }
                    Command::Acknowledged { id, task } => {
                        prop_assert_eq!(self.open_id(), Some(id));
                        prop_assert!(task < tasks);
                    }
                    Command::WriteMetadata { id, acks, .. } => {
                        prop_assert_eq!(self.open_id(), Some(id));
                        let from: Vec<usize> = acks.iter().map(|(task, _)| *task).collect();
                        prop_assert_eq!(from, (0..tasks).collect::<Vec<_>>(), "{} written without every ack", id);
                        for (task, payload) in &acks {
                            prop_assert_eq!(*payload, (id, *task), "an ack for another checkpoint was taken");
                            prop_assert!(self.acks_sent.contains(&(id, *task)));
                        }
                        self.writing = Some(id);
                        self.fully_acked.insert(id);
                    }
                    Command::Abort { id, .. } => {
                        prop_assert_eq!(self.open_id(), Some(id));
                        prop_assert!(!self.completed.contains(&id));
                        self.aborted.insert(id);
                        self.open = None;
                    }
                    Command::Completed { id, kind, location } => {
                        prop_assert!(self.fully_acked.contains(&id), "{} completed without every ack", id);
                        savepoint_completed = kind == CheckpointKind::Savepoint
                            && matches!(location, Location::Savepoint(_))
                            && self.open_id() == Some(id);
                    }
                    Command::NotifyComplete { id } => {
                        prop_assert!(self.fully_acked.contains(&id), "{} completed without every ack", id);
                        prop_assert!(!self.aborted.contains(&id), "{} completed after it was aborted", id);
                        prop_assert!(self.completed.insert(id), "{} completed twice", id);
                        prop_assert_eq!(self.open_id(), Some(id));
                        self.open = None;
                    }
                    Command::Discard { id } => {
                        prop_assert_eq!(self.open_id(), Some(id));
                        self.open = None;
                    }
                    Command::ReplySavepoint { token, result, .. } => {
                        prop_assert!(
                            result.is_err() || savepoint_completed,
                            "savepoint {} reported done without a completed savepoint",
                            token
                        );
                        let n = self.answers.entry(token).or_insert(0);
                        *n += 1;
                        prop_assert_eq!(*n, 1, "savepoint {} answered twice", token);
                    }
                    Command::FailJob { .. } => {
                        self.job_failed = true;
                        self.open = None;
                    }
                    Command::Retire { .. } => {}
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random interleavings of time, acks, declines, finished sources, savepoint
        /// requests, failed triggers and metadata writes, checked as they happen:
        /// - ids only increase, and one checkpoint at a time is in flight;
        /// - no checkpoint is written or completes without an ack for it from every task;
        /// - a checkpoint ends once (completed or aborted), and nothing happens after the
        ///   job failed;
        /// - no checkpoint waits for acks past its timeout once a tick has seen it;
        /// - every savepoint request is answered exactly once by the end of the attempt,
        ///   and answered with a location only when its savepoint completed.
        #[test]
        fn coordinator_invariants(
            tasks in 1usize..4,
            sources in 1usize..4,
            interval in 1u64..100,
            timeout in 1u64..300,
            min_pause in 0u64..60,
            tolerable in 0u32..3,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let cfg = config(interval, timeout, min_pause).with_tolerable_failures(tolerable);
            let mut c: CheckpointCoordinator<usize, Payload, u32> =
                CheckpointCoordinator::new(Some(&cfg), 0..tasks, 0..sources.min(tasks), 1, Duration::ZERO);
            let mut seen = Seen::default();
            let mut now = Duration::ZERO;
            let mut requested = Vec::new();
            for op in ops {
                let is_tick = matches!(op, Op::Wait(_));
                let cmds = match op {
                    Op::Wait(step) => {
                        now += ms(step);
                        c.tick(now, 0)
                    }
                    Op::Ack { task, skew } => {
                        let id = seen.pick(skew);
                        seen.acks_sent.insert((id, task));
                        c.ack(now, id, task, (id, task))
                    }
                    Op::Decline { task, skew } => c.decline(now, seen.pick(skew), task, "declined".into()),
                    Op::SourceFinished(task) => {
                        c.source_finished(task);
                        Vec::new()
                    }
                    Op::Savepoint { terminal } => {
                        let token = u32::try_from(requested.len()).unwrap();
                        requested.push(token);
                        let target = PathBuf::from(format!("/savepoints/{token}"));
                        c.savepoint_requested(Savepoint { target, terminal, drain: false, token })
                    }
                    Op::TriggerFailed => match seen.open_id() {
                        Some(id) => c.trigger_failed(now, id, "no space".into()),
                        None => Vec::new(),
                    },
                    Op::Written(k) => match seen.writing.take() {
                        Some(id) => c.metadata_written(now, id, outcome(k)),
                        None => Vec::new(),
                    },
                };
                seen.check(cmds, now, tasks)?;
                if let (true, None, Some((id, since))) = (is_tick, seen.writing, seen.open) {
                    prop_assert!(now < since + ms(timeout), "{} still waits for acks past its timeout", id);
                }
            }
            seen.check(c.attempt_ended("the attempt ended"), now, tasks)?;
            prop_assert_eq!(seen.open, None, "the attempt ended with a checkpoint neither ended nor discarded");
            for token in requested {
                prop_assert_eq!(seen.answers.get(&token).copied(), Some(1), "savepoint {} not answered once", token);
            }
        }
    }
}
