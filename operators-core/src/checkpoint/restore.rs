//! Restoring a job from a checkpoint or savepoint: whether a snapshot fits the job's
//! graph, and what every subtask restores from it (operator state, pending
//! committables, and the keyed-state files of the key groups it now owns).

use std::collections::HashMap;

use crate::checkpoint::storage::{CheckpointStorage, LoadedCheckpoint, OperatorSnapshot, OperatorStateBlob};
use crate::control::{KeyedRestore, TaskId, TaskRestore};
use crate::error::{Error, Result};
use crate::graph::JobGraph;
use crate::key::key_group_range;
use crate::operator::{Committable, RestoredState};

fn has_state(op: &OperatorSnapshot) -> bool {
    op.subtasks.iter().any(|s| s.operator_state.is_some() || !s.keyed_state.is_empty())
}

/// Checks that a snapshot can be restored into `graph`.
pub(crate) fn validate_restore(
    graph: &JobGraph,
    loaded: &LoadedCheckpoint,
    max_parallelism: u16,
    allow_non_restored: bool,
) -> Result<()> {
    for (op_id, op) in &loaded.metadata.operators {
        let node = graph.nodes.iter().find(|n| &n.id == op_id);
        match node {
            None if has_state(op) && !allow_non_restored => {
                return Err(Error::Restore {
                    path: loaded.dir.clone(),
                    message: format!(
                        "it holds state for operator `{op_id}`, which this job does not have; \
                         allow non-restored state to start without it"
                    ),
                });
            }
            None => {
                if has_state(op) {
                    tracing::warn!(operator = %op_id, "skipping state of an operator the job no longer has");
                }
            }
            Some(_) => {
                let keyed = op.subtasks.iter().any(|s| !s.keyed_state.is_empty());
                if keyed && op.max_parallelism != max_parallelism {
                    return Err(Error::Restore {
                        path: loaded.dir.clone(),
                        message: format!(
                            "operator `{op_id}` has keyed state for max parallelism {}, but the job uses {}; \
                             max parallelism cannot change while state is kept",
                            op.max_parallelism, max_parallelism
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Works out what every subtask restores from `loaded`.
pub(crate) fn plan_restore(
    graph: &JobGraph,
    loaded: &LoadedCheckpoint,
    storage: Option<&CheckpointStorage>,
    max_parallelism: u16,
) -> Result<HashMap<TaskId, TaskRestore>> {
    let mut plan = HashMap::new();
    let checkpoint_id = loaded.metadata.checkpoint_id;
    for (node_idx, node) in graph.nodes.iter().enumerate() {
        let Some(op) = loaded.metadata.operators.get(&node.id) else {
            continue;
        };
        let p = node.parallelism;
        let mut snapshots = Vec::new();
        let mut committables: Vec<Vec<Committable>> = vec![Vec::new(); p];
        for st in &op.subtasks {
            if let Some(file) = &st.operator_state {
                let blob = OperatorStateBlob::read(&file.path)?;
                if let Some(state) = blob.state {
                    snapshots.push((st.subtask, state));
                }
                // A pending transaction goes to one new subtask, which finishes it.
                for (checkpoint_id, data) in blob.committables {
                    committables[st.subtask % p].push(Committable { checkpoint_id, data });
                }
            }
        }
        for (subtask, committables) in committables.into_iter().enumerate() {
            let keyed = if node.key.is_some() {
                let range = key_group_range(subtask, p, max_parallelism);
                let mut overlapping: Vec<_> = op
                    .subtasks
                    .iter()
                    .filter(|s| !s.keyed_state.is_empty() && s.key_groups.is_some_and(|kg| kg.overlaps(&range)))
                    .collect();
                overlapping.sort_by_key(|s| s.key_groups.map(|kg| kg.start));
                let reuse = match (overlapping.as_slice(), storage) {
                    ([only], Some(storage))
                        if only.key_groups == Some(range)
                            && only.keyed_state.iter().all(|f| f.path.starts_with(storage.shared_dir())) =>
                    {
                        Some(only.keyed_state.clone())
                    }
                    _ => None,
                };
                Some(KeyedRestore {
                    chains: overlapping
                        .iter()
                        .map(|s| s.keyed_state.iter().map(|f| f.path.clone()).collect())
                        .collect(),
                    reuse,
                    checkpoint_id,
                })
            } else {
                None
            };
            plan.insert(
                TaskId { node: node_idx, subtask },
                TaskRestore {
                    operator_state: RestoredState::new(checkpoint_id, op.parallelism, snapshots.clone(), subtask, p),
                    committables,
                    keyed,
                },
            );
        }
    }
    Ok(plan)
}
