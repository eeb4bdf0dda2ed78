//! The job graph: operators (nodes), their connections (edges), output ports and
//! exchanges, as the pipeline builder records them and as a validated [`JobGraph`] the
//! job runs.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::key::KeySelector;
use crate::operator::{SinkFactory, SourceFactory, TransformFactory};

/// Which output of an operator a stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// The records the operator emits.
    Main,
    /// Records the operator could not process, with their provenance.
    DeadLetter,
    /// Input records that arrived after their event-time window's allowed lateness, in
    /// the input's schema (see [`crate::window`]).
    Late,
}

/// How records are distributed between the subtasks of two connected operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i sends to subtask i; both operators must have the same parallelism.
    Forward,
    /// Round robin, batch by batch.
    Rebalance,
    /// By the hash of the key columns: all rows of a key reach the same subtask.
    Hash(KeySelector),
}

impl Partitioning {
    fn name(&self) -> String {
        match self {
            Partitioning::Forward => "FORWARD".into(),
            Partitioning::Rebalance => "REBALANCE".into(),
            Partitioning::Hash(k) => format!("HASH[{}]", k.columns().join(",")),
        }
    }
}

pub(crate) enum NodeKind {
    Source(Arc<dyn SourceFactory>),
    Transform(Arc<dyn TransformFactory>),
    Sink(Arc<dyn SinkFactory>),
}

impl NodeKind {
    fn name(&self) -> &'static str {
        match self {
            NodeKind::Source(_) => "source",
            NodeKind::Transform(_) => "transform",
            NodeKind::Sink(_) => "sink",
        }
    }
}

pub(crate) struct NodeSpec {
    pub(crate) id: String,
    pub(crate) kind: NodeKind,
    pub(crate) parallelism: Option<usize>,
}

pub(crate) struct EdgeSpec {
    pub(crate) from: usize,
    pub(crate) port: Port,
    pub(crate) to: usize,
    pub(crate) partitioning: Option<Partitioning>,
}

#[derive(Default)]
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) edges: Vec<EdgeSpec>,
}

pub(crate) type SharedBuilder = Arc<Mutex<GraphBuilder>>;

pub(crate) fn lock(g: &SharedBuilder) -> MutexGuard<'_, GraphBuilder> {
    // A poisoned lock only means another builder call panicked; the graph data is intact.
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// An operator of a validated graph.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) kind: NodeKind,
    pub(crate) parallelism: usize,
    /// Edge indices into this node, in input order.
    pub(crate) inputs: Vec<usize>,
    /// Edge indices out of this node.
    pub(crate) outputs: Vec<usize>,
    /// Key of the input when it is hash-partitioned (keyed state available).
    pub(crate) key: Option<KeySelector>,
}

/// A connection of a validated graph.
pub(crate) struct Edge {
    pub(crate) from: usize,
    pub(crate) port: Port,
    pub(crate) to: usize,
    pub(crate) partitioning: Partitioning,
}

/// A validated pipeline: unique ids, valid parallelism, resolved exchanges.
pub struct JobGraph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
}

impl std::fmt::Debug for JobGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// One operator as shown by [`JobGraph::vertices`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VertexInfo {
    /// Operator id.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub kind: &'static str,
    /// Parallelism.
    pub parallelism: usize,
    /// Inputs as `(upstream id, port, exchange)`.
    pub inputs: Vec<(String, String, String)>,
}

impl JobGraph {
    /// Validates the builder's graph: `default_parallelism` is that of operators that set
    /// none, `max_parallelism` the bound of every operator's.
    pub(crate) fn from_builder(b: &GraphBuilder, default_parallelism: usize, max_parallelism: u16) -> Result<Self> {
        if b.nodes.is_empty() {
            return Err(Error::Graph { operator: String::new(), message: "the pipeline has no operators".into() });
        }
        let mut seen = HashSet::new();
        for n in &b.nodes {
            if n.id.trim().is_empty() {
                return Err(Error::Graph { operator: n.id.clone(), message: "operator ids must not be empty".into() });
            }
            if !seen.insert(n.id.as_str()) {
                return Err(Error::Graph {
                    operator: n.id.clone(),
                    message: "two operators use this id; ids must be unique because state is stored under them".into(),
                });
            }
        }
        let max = usize::from(max_parallelism);
        let mut nodes: Vec<Node> = Vec::with_capacity(b.nodes.len());
        for spec in &b.nodes {
            let parallelism = spec.parallelism.unwrap_or(default_parallelism);
            if parallelism == 0 || parallelism > max {
                return Err(Error::Graph {
                    operator: spec.id.clone(),
                    message: format!("parallelism {parallelism} is outside 1..={max} (max parallelism)"),
                });
            }
            let kind = match &spec.kind {
                NodeKind::Source(f) => NodeKind::Source(f.clone()),
                NodeKind::Transform(f) => NodeKind::Transform(f.clone()),
                NodeKind::Sink(f) => NodeKind::Sink(f.clone()),
            };
            nodes.push(Node {
                id: spec.id.clone(),
                kind,
                parallelism,
                inputs: Vec::new(),
                outputs: Vec::new(),
                key: None,
            });
        }
        let mut edges = Vec::with_capacity(b.edges.len());
        for (i, e) in b.edges.iter().enumerate() {
            let (from_p, to_p) = (nodes[e.from].parallelism, nodes[e.to].parallelism);
            let partitioning = match &e.partitioning {
                Some(p) => p.clone(),
                None if from_p == to_p => Partitioning::Forward,
                None => Partitioning::Rebalance,
            };
            match &partitioning {
                Partitioning::Forward if from_p != to_p => {
                    return Err(Error::Graph {
                        operator: nodes[e.to].id.clone(),
                        message: format!(
                            "forward exchange from `{}` needs equal parallelism ({from_p} != {to_p})",
                            nodes[e.from].id
                        ),
                    });
                }
                Partitioning::Hash(k) if k.columns().is_empty() => {
                    return Err(Error::Graph {
                        operator: nodes[e.to].id.clone(),
                        message: "key_by needs at least one column".into(),
                    });
                }
                _ => {}
            }
            if matches!(nodes[e.from].kind, NodeKind::Sink(_)) && e.port != Port::DeadLetter {
                return Err(Error::Graph {
                    operator: nodes[e.from].id.clone(),
                    message: "a sink has no output to connect but its dead letters".into(),
                });
            }
            nodes[e.from].outputs.push(i);
            nodes[e.to].inputs.push(i);
            edges.push(Edge { from: e.from, port: e.port, to: e.to, partitioning });
        }
        for node in nodes.iter_mut() {
            let keys: Vec<Option<&KeySelector>> = node
                .inputs
                .iter()
                .map(|&e| match &edges[e].partitioning {
                    Partitioning::Hash(k) => Some(k),
                    _ => None,
                })
                .collect();
            if let Some(first) = keys.first() {
                if keys.iter().any(|k| k != first) {
                    return Err(Error::Graph {
                        operator: node.id.clone(),
                        message: "all inputs of an operator must be keyed by the same columns, or none".into(),
                    });
                }
                node.key = first.cloned();
            }
        }
        if !nodes.iter().any(|n| matches!(n.kind, NodeKind::Source(_))) {
            return Err(Error::Graph { operator: nodes[0].id.clone(), message: "the pipeline has no source".into() });
        }
        Ok(Self { nodes, edges })
    }

    /// Runs every operator's checks that need I/O, in the order the operators were
    /// added; the first failure is the answer, as the operator reported it (a
    /// configuration error keeps the setting it names).
    pub(crate) fn preflight(&self) -> Result<()> {
        for n in &self.nodes {
            match &n.kind {
                NodeKind::Source(f) => f.preflight()?,
                NodeKind::Transform(f) => f.preflight()?,
                NodeKind::Sink(f) => f.preflight()?,
            }
        }
        Ok(())
    }

    /// Operators in the order they were added.
    pub fn vertices(&self) -> Vec<VertexInfo> {
        self.nodes
            .iter()
            .map(|n| VertexInfo {
                id: n.id.clone(),
                kind: n.kind.name(),
                parallelism: n.parallelism,
                inputs: n
                    .inputs
                    .iter()
                    .map(|&e| {
                        let edge = &self.edges[e];
                        (
                            self.nodes[edge.from].id.clone(),
                            match edge.port {
                                Port::Main => "main".to_string(),
                                Port::DeadLetter => "dead-letters".to_string(),
                                Port::Late => "late-records".to_string(),
                            },
                            edge.partitioning.name(),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    /// A readable description of the operators and their connections.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for v in self.vertices() {
            let _ = writeln!(out, "{} [{}, parallelism {}]", v.id, v.kind, v.parallelism);
            for (from, port, exchange) in &v.inputs {
                let port = if port == "main" { String::new() } else { format!(" ({port})") };
                let _ = writeln!(out, "    <- {from}{port} via {exchange}");
            }
        }
        out
    }

    /// Operator ids.
    pub fn operator_ids(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.id.as_str()).collect()
    }
}
