//! The supervisor: runs a job as a sequence of attempts, restarting by the restart
//! strategy, and the shell that carries out the checkpoint coordinator's commands inside
//! each attempt's event loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::channel::{DOWNSTREAM_CLOSED, EdgeOutput, InputGate, OutputRouter};
use crate::checkpoint::coordinator::CheckpointCoordinator;
use crate::checkpoint::restore::plan_restore;
use crate::checkpoint::stats::RestoredRecord;
use crate::checkpoint::storage::{CheckpointStorage, LoadedCheckpoint, read_metadata};
use crate::control::TaskId;
use crate::error::{Error, Result};
use crate::graph::{JobGraph, NodeKind, Partitioning};
use crate::key::key_group_range;
use crate::message::{CheckpointKind, Message};
use crate::operator::TaskInfo;
use crate::restart::RestartTracker;
use crate::state::StateBackend;
use crate::task::{KeyedSetup, OperatorFactory, TaskCheckpointing, TaskEnv, run_operator_task, run_source_task};

use super::coordinator::Coordinator;
use super::{JobCommand, JobConfig, JobOutcome, JobShared, JobStatus, SavepointStatus, lock, millis};

enum AttemptOutcome {
    Finished { savepoint: Option<PathBuf> },
    Canceled,
    CanceledWithSavepoint(PathBuf),
    Failed(Error),
}

pub(super) async fn supervise(
    graph: JobGraph,
    config: JobConfig,
    shared: Arc<JobShared>,
    mut commands: mpsc::UnboundedReceiver<JobCommand>,
    initial_restore: Option<LoadedCheckpoint>,
    storage: Option<CheckpointStorage>,
    backend: Arc<dyn StateBackend>,
) -> Result<JobOutcome> {
    if let Some(storage) = &storage
        && let Err(e) = storage.create_dirs()
    {
        shared.set_status(JobStatus::Failed, Some(e.to_string()));
        return Err(e);
    }
    let mut next_id = initial_restore.as_ref().map_or(1, |r| r.metadata.checkpoint_id + 1);
    if let Some(storage) = &storage {
        // Never reuse the id of a directory an earlier run left behind: a new chk-1 would
        // replace its checkpoint, and retention would keep the older run's instead. A
        // store that cannot say (a NameNode down) fails the start rather than guess.
        let latest = match storage.latest() {
            Ok(latest) => latest.map(|dir| read_metadata(&dir)).transpose(),
            Err(e) => Err(e),
        };
        match latest {
            Ok(Some(l)) => next_id = next_id.max(l.metadata.checkpoint_id + 1),
            Err(e @ Error::Io { .. }) => {
                shared.set_status(JobStatus::Failed, Some(e.to_string()));
                return Err(e);
            }
            // Nothing there, or a checkpoint this version cannot read: as before.
            Ok(None) | Err(_) => {}
        }
    }
    let mut restore = initial_restore;
    let mut last_completed: Option<PathBuf> = None;
    let mut tracker = RestartTracker::new(config.restart.clone());
    let mut attempt = 0u32;
    loop {
        if let Some(r) = &restore {
            lock(&shared.stats).restored(RestoredRecord {
                id: r.metadata.checkpoint_id,
                restore_timestamp: shared.clock.now_ms(),
                is_savepoint: r.metadata.kind == CheckpointKind::Savepoint,
                external_path: r.dir.display().to_string(),
            });
        }
        shared.set_status(JobStatus::Running, None);
        let started = Instant::now();
        let outcome = run_attempt(
            &graph,
            &config,
            &shared,
            &mut commands,
            restore.as_ref(),
            attempt,
            &mut next_id,
            &mut last_completed,
            storage.as_ref(),
            &backend,
        )
        .await;
        lock(&shared.stats).abandon_in_progress(shared.clock.now_ms());
        let restarts = tracker.restarts();
        match outcome {
            AttemptOutcome::Finished { savepoint } => {
                if let Some(storage) = &storage
                    && let Err(e) = storage.discard_all()
                {
                    tracing::warn!(error = %e, "could not remove the checkpoints of the finished job");
                }
                shared.set_status(JobStatus::Finished, None);
                return Ok(JobOutcome { status: JobStatus::Finished, savepoint, restarts });
            }
            AttemptOutcome::Canceled | AttemptOutcome::CanceledWithSavepoint(_) => {
                if let (Some(storage), Some(cp)) = (&storage, &config.checkpointing)
                    && !cp.retain_on_cancel
                    && let Err(e) = storage.discard_all()
                {
                    tracing::warn!(error = %e, "could not remove the checkpoints of the canceled job");
                }
                let savepoint = match outcome {
                    AttemptOutcome::CanceledWithSavepoint(s) => Some(s),
                    _ => None,
                };
                shared.set_status(JobStatus::Canceled, None);
                return Ok(JobOutcome { status: JobStatus::Canceled, savepoint, restarts });
            }
            AttemptOutcome::Failed(err) => {
                let Some(delay) = tracker.on_failure(Instant::now(), started, &err) else {
                    tracing::error!(error = %err, "job failed");
                    shared.set_status(JobStatus::Failed, Some(err.to_string()));
                    return Err(err);
                };
                tracing::warn!(error = %err, delay_ms = millis(delay), attempt = attempt + 1, "job failed; restarting");
                let mut delay = delay;
                let mut reason = err.to_string();
                loop {
                    lock(&shared.status).restarts = tracker.restarts();
                    shared.set_status(JobStatus::Restarting, Some(reason.clone()));
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            cmd = commands.recv() => match cmd {
                                Some(JobCommand::Cancel) => {
                                    shared.set_status(JobStatus::Canceled, None);
                                    return Ok(JobOutcome { status: JobStatus::Canceled, savepoint: None, restarts: tracker.restarts() });
                                }
                                Some(JobCommand::Savepoint(req)) => shared.set_savepoint(
                                    &req.request_id,
                                    SavepointStatus::Failed { reason: "the job is restarting".into() },
                                ),
                                None => { sleep.as_mut().await; break; }
                            }
                        }
                    }
                    attempt += 1;
                    let Some(path) = &last_completed else { break };
                    match read_metadata(path) {
                        Ok(l) => {
                            restore = Some(l);
                            break;
                        }
                        // The store of the checkpoints not answering (a NameNode down) is
                        // one more failure for the restart strategy, not the job's end; a
                        // corrupt or unreadable checkpoint does not mend by waiting.
                        Err(e) => match matches!(e, Error::Io { .. })
                            .then(|| tracker.on_failure(Instant::now(), Instant::now(), &e))
                            .flatten()
                        {
                            Some(next) => {
                                tracing::warn!(error = %e, delay_ms = millis(next), attempt = attempt + 1, "cannot read the checkpoint to restore; restarting");
                                delay = next;
                                reason = e.to_string();
                            }
                            None => {
                                tracing::error!(error = %e, "job failed");
                                shared.set_status(JobStatus::Failed, Some(e.to_string()));
                                return Err(e);
                            }
                        },
                    }
                }
            }
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "canceled".into();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// Picks the error that caused a failure: consequences (closed channels, cancellations)
/// are reported only when nothing else is known.
fn root_cause(errors: Vec<Error>) -> Error {
    let is_consequence = |e: &Error| match e {
        Error::Canceled => true,
        Error::Internal(m) => m.contains(DOWNSTREAM_CLOSED),
        Error::Operator { source, .. } => {
            matches!(source.as_ref(), Error::Internal(m) if m.contains(DOWNSTREAM_CLOSED))
        }
        _ => false,
    };
    let mut fallback = None;
    for e in errors {
        if !is_consequence(&e) {
            return e;
        }
        fallback.get_or_insert(e);
    }
    fallback.unwrap_or_else(|| Error::Internal("a task failed without an error".into()))
}

#[allow(clippy::too_many_arguments)]
async fn run_attempt(
    graph: &JobGraph,
    config: &JobConfig,
    shared: &JobShared,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
    restore: Option<&LoadedCheckpoint>,
    attempt: u32,
    next_id: &mut u64,
    last_completed: &mut Option<PathBuf>,
    storage: Option<&CheckpointStorage>,
    backend: &Arc<dyn StateBackend>,
) -> AttemptOutcome {
    let mut restore_plan = match restore {
        Some(loaded) => {
            let g = graph;
            match plan_restore(g, loaded, storage, config.max_parallelism) {
                Ok(p) => p,
                Err(e) => return AttemptOutcome::Failed(e),
            }
        }
        None => HashMap::new(),
    };

    // Channels: inputs[node][subtask] and outputs[node][subtask].
    let mut inputs: Vec<Vec<Vec<mpsc::Receiver<Message>>>> =
        graph.nodes.iter().map(|n| (0..n.parallelism).map(|_| Vec::new()).collect()).collect();
    let mut outputs: Vec<Vec<Vec<EdgeOutput>>> =
        graph.nodes.iter().map(|n| (0..n.parallelism).map(|_| Vec::new()).collect()).collect();
    for edge in &graph.edges {
        let (pa, pb) = (graph.nodes[edge.from].parallelism, graph.nodes[edge.to].parallelism);
        match &edge.partitioning {
            Partitioning::Forward => {
                for i in 0..pa {
                    let (tx, rx) = mpsc::channel(config.channel_capacity);
                    outputs[edge.from][i].push(EdgeOutput {
                        port: edge.port,
                        partitioning: edge.partitioning.clone(),
                        senders: vec![tx],
                        next: 0,
                    });
                    inputs[edge.to][i].push(rx);
                }
            }
            _ => {
                let mut senders: Vec<Vec<mpsc::Sender<Message>>> = (0..pa).map(|_| Vec::with_capacity(pb)).collect();
                for downstream in inputs[edge.to].iter_mut() {
                    for sender in senders.iter_mut() {
                        let (tx, rx) = mpsc::channel(config.channel_capacity);
                        sender.push(tx);
                        downstream.push(rx);
                    }
                }
                for (i, s) in senders.into_iter().enumerate() {
                    outputs[edge.from][i].push(EdgeOutput {
                        port: edge.port,
                        partitioning: edge.partitioning.clone(),
                        senders: s,
                        // Spread the round robin's starting point over the subtasks.
                        next: i % pb,
                    });
                }
            }
        }
    }

    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let checkpointing = match (&config.checkpointing, storage) {
        (Some(cp), Some(storage)) => Some(TaskCheckpointing { storage: storage.clone(), mode: cp.mode }),
        _ => None,
    };
    let mut join_set = JoinSet::new();
    let mut task_of = HashMap::new();
    let mut controls = Vec::new();
    for (node_idx, node) in graph.nodes.iter().enumerate() {
        let node_inputs = std::mem::take(&mut inputs[node_idx]);
        let node_outputs = std::mem::take(&mut outputs[node_idx]);
        for (subtask, (ins, outs)) in node_inputs.into_iter().zip(node_outputs).enumerate() {
            let id = TaskId { node: node_idx, subtask };
            let info = Arc::new(TaskInfo {
                job_name: Arc::from(config.name.as_str()),
                job_id: Arc::from(shared.id.as_str()),
                run_id: Arc::from(shared.run_id.as_str()),
                operator_id: Arc::from(node.id.as_str()),
                subtask,
                parallelism: node.parallelism,
                max_parallelism: config.max_parallelism,
                attempt,
            });
            let metrics = shared.metrics[node_idx].subtasks[subtask].clone();
            let (control_tx, control_rx) = mpsc::unbounded_channel();
            let is_source = matches!(node.kind, NodeKind::Source(_));
            controls.push((id, control_tx, is_source));
            let env = TaskEnv {
                id,
                info: info.clone(),
                control: control_rx,
                events: events_tx.clone(),
                inputs: InputGate::new(ins),
                output: OutputRouter::new(info.operator_id.clone(), outs, config.max_parallelism, metrics.clone()),
                metrics,
                checkpointing: checkpointing.clone(),
                clock: config.clock.clone(),
                restore: restore_plan.remove(&id),
                keyed: node.key.clone().map(|selector| KeyedSetup {
                    backend: backend.clone(),
                    key_groups: key_group_range(subtask, node.parallelism, config.max_parallelism),
                    selector,
                }),
                idle_wait: config.idle_wait,
            };
            let handle = match &node.kind {
                NodeKind::Source(f) => join_set.spawn(run_source_task(env, f.clone()).in_current_span()),
                NodeKind::Transform(f) => {
                    join_set.spawn(run_operator_task(env, OperatorFactory::Transform(f.clone())).in_current_span())
                }
                NodeKind::Sink(f) => {
                    join_set.spawn(run_operator_task(env, OperatorFactory::Sink(f.clone())).in_current_span())
                }
            };
            task_of.insert(handle.id(), id);
        }
    }

    let machine = CheckpointCoordinator::new(
        checkpointing.as_ref().and(config.checkpointing.as_ref()),
        controls.iter().map(|(id, _, _)| *id),
        controls.iter().filter(|(_, _, is_source)| *is_source).map(|(id, _, _)| *id),
        *next_id,
        Duration::ZERO,
    );
    let mut coord = Coordinator {
        machine,
        origin: Instant::now(),
        storage,
        shared,
        graph,
        max_parallelism: config.max_parallelism,
        tasks: controls,
        stop_savepoint: None,
    };
    let mut commands_open = true;

    let failure = loop {
        let deadline = coord.deadline();
        tokio::select! {
            Some(ev) = events_rx.recv() => {
                if let Err(e) = coord.on_event(ev, last_completed).await {
                    break e;
                }
            }
            cmd = commands.recv(), if commands_open => match cmd {
                Some(JobCommand::Cancel) => {
                    join_set.abort_all();
                    while join_set.join_next().await.is_some() {}
                    coord.end("the job was canceled");
                    return AttemptOutcome::Canceled;
                }
                Some(JobCommand::Savepoint(req)) => {
                    if let Err(e) = coord.queue_savepoint(req, last_completed).await {
                        break e;
                    }
                }
                None => commands_open = false,
            },
            res = join_set.join_next_with_id() => match res {
                None => {
                    coord.end("the job finished");
                    return match coord.stop_savepoint.take() {
                        Some((savepoint, true)) => AttemptOutcome::CanceledWithSavepoint(savepoint),
                        other => AttemptOutcome::Finished { savepoint: other.map(|(s, _)| s) },
                    };
                }
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((_, Err(e)))) => break e,
                Some(Err(e)) => {
                    let task = task_of.get(&e.id()).copied();
                    let (operator, subtask) = task.map_or((String::from("?"), 0), |t| (graph.nodes[t.node].id.clone(), t.subtask));
                    break Error::Panic { operator, subtask, message: panic_message(e) };
                }
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        if let Err(e) = coord.tick(next_id, last_completed).await {
            break e;
        }
    };

    // Stop everything, then find the error that started it.
    join_set.abort_all();
    let mut errors = vec![failure];
    while let Some(res) = join_set.join_next_with_id().await {
        match res {
            Ok((_, Err(e))) => errors.push(e),
            Err(e) if e.is_panic() => {
                let task = task_of.get(&e.id()).copied();
                let (operator, subtask) =
                    task.map_or((String::from("?"), 0), |t| (graph.nodes[t.node].id.clone(), t.subtask));
                errors.push(Error::Panic { operator, subtask, message: panic_message(e) });
            }
            _ => {}
        }
    }
    let error = root_cause(errors);
    coord.end(&format!("the job failed: {error}"));
    AttemptOutcome::Failed(error)
}
