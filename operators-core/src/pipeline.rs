//! Building pipelines in plain Rust: sources, transforms, sinks, parallelism, exchanges.
//!
//! ```
//! use operators_core::builtins::{DiscardSink, GeneratorSource, MapTransform};
//! use operators_core::{JobConfig, Pipeline};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> operators_core::Result<()> {
//! let pipeline = Pipeline::new();
//! pipeline
//!     .source("numbers", GeneratorSource::bounded(10_000))
//!     .parallelism(2)
//!     .key_by(["key"])
//!     .transform("identity", MapTransform::new(|batch| Ok(Some(batch))))
//!     .sink("discard", DiscardSink::default());
//! let job = pipeline.start(JobConfig::new("doc example"))?;
//! job.wait().await?;
//! # Ok(()) }
//! ```
//!
//! Between two operators the exchange is *forward* (subtask i feeds subtask i) when their
//! parallelism is equal and *rebalance* (round robin) otherwise, unless set explicitly
//! with [`Stream::key_by`], [`Stream::rebalance`] or [`Stream::forward`]. Operator ids
//! are the stable names under which state is stored: keep them when the job changes.

use std::sync::Arc;

use crate::error::Result;
use crate::graph::{EdgeSpec, NodeKind, NodeSpec, SharedBuilder, lock};
pub use crate::graph::{JobGraph, Partitioning, Port, VertexInfo};
use crate::job::{Job, JobConfig, JobOutcome};
use crate::key::KeySelector;
use crate::operator::{SinkFactory, SourceFactory, TransformFactory};

/// A pipeline under construction.
#[derive(Clone, Default)]
pub struct Pipeline {
    graph: SharedBuilder,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = lock(&self.graph);
        f.debug_struct("Pipeline")
            .field("operators", &g.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

/// A stream of record batches: the output of an operator, ready to be connected.
#[derive(Clone)]
pub struct Stream {
    graph: SharedBuilder,
    node: usize,
    port: Port,
    partitioning: Option<Partitioning>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("node", &self.node)
            .field("port", &self.port)
            .field("partitioning", &self.partitioning)
            .finish()
    }
}

/// Several streams feeding one operator.
#[derive(Clone, Debug)]
pub struct UnionStream {
    streams: Vec<Stream>,
}

/// A sink added to a pipeline.
#[derive(Clone)]
pub struct SinkHandle {
    graph: SharedBuilder,
    node: usize,
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle").field("node", &self.node).finish()
    }
}

fn add_node(graph: &SharedBuilder, id: &str, kind: NodeKind, inputs: &[Stream]) -> usize {
    let mut g = lock(graph);
    let idx = g.nodes.len();
    g.nodes.push(NodeSpec { id: id.to_string(), kind, parallelism: None });
    for s in inputs {
        g.edges.push(EdgeSpec { from: s.node, port: s.port, to: idx, partitioning: s.partitioning.clone() });
    }
    idx
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source with the stable id `id`.
    pub fn source(&self, id: &str, factory: impl SourceFactory) -> Stream {
        let node = add_node(&self.graph, id, NodeKind::Source(Arc::new(factory)), &[]);
        Stream { graph: self.graph.clone(), node, port: Port::Main, partitioning: None }
    }

    /// Validates the graph against `config` and resolves exchanges. Touches no file and
    /// no service: a dry run builds the graph to describe it.
    pub fn build(&self, config: &JobConfig) -> Result<JobGraph> {
        JobGraph::from_builder(&lock(&self.graph), config.parallelism, config.max_parallelism)
    }

    /// Validates everything, runs the checks that need I/O (every operator's
    /// [`SinkFactory::preflight`] and its source and transform counterparts, then
    /// [`JobConfig::check_dirs`]) and starts the job on the current tokio runtime.
    pub fn start(&self, config: JobConfig) -> Result<Job> {
        config.validate()?;
        let graph = self.build(&config)?;
        // I/O last, after every check that needs none, so that a job refused for a
        // setting has created as little as possible.
        graph.preflight()?;
        config.check_dirs()?;
        Job::start(graph, config)
    }

    /// Starts the job and waits for it to end.
    pub async fn run(&self, config: JobConfig) -> Result<JobOutcome> {
        self.start(config)?.wait().await
    }
}

impl Stream {
    /// Sets the parallelism of the operator producing this stream.
    pub fn parallelism(self, parallelism: usize) -> Self {
        lock(&self.graph).nodes[self.node].parallelism = Some(parallelism);
        self
    }

    /// Routes rows by the hash of `columns`, so every row of a key reaches the same
    /// subtask of the next operator, which may then use keyed state.
    pub fn key_by<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.partitioning = Some(Partitioning::Hash(KeySelector::new(columns)));
        self
    }

    /// Distributes batches round robin over the next operator's subtasks.
    pub fn rebalance(mut self) -> Self {
        self.partitioning = Some(Partitioning::Rebalance);
        self
    }

    /// Sends subtask i's output to subtask i of the next operator.
    pub fn forward(mut self) -> Self {
        self.partitioning = Some(Partitioning::Forward);
        self
    }

    /// The dead-letter output of the operator producing this stream.
    pub fn dead_letters(&self) -> Stream {
        Stream { graph: self.graph.clone(), node: self.node, port: Port::DeadLetter, partitioning: None }
    }

    /// The late-records output of the operator producing this stream: the input rows an
    /// event-time [window](crate::window) received after its allowed lateness, in the
    /// input's schema. Connect it like any stream; unconnected, late rows are counted in
    /// the operator's `late_records` metric and dropped.
    pub fn late_records(&self) -> Stream {
        Stream { graph: self.graph.clone(), node: self.node, port: Port::Late, partitioning: None }
    }

    /// Adds a transform reading this stream.
    pub fn transform(self, id: &str, factory: impl TransformFactory) -> Stream {
        let graph = self.graph.clone();
        let node = add_node(&graph, id, NodeKind::Transform(Arc::new(factory)), &[self]);
        Stream { graph, node, port: Port::Main, partitioning: None }
    }

    /// Keeps the first row of each key of `columns`, dropping rows with the same key
    /// for `ttl` after it: a hash exchange on the keys, then a
    /// [`DedupTransform`](crate::builtins::DedupTransform).
    pub fn dedup<I, S>(self, id: &str, columns: I, ttl: std::time::Duration) -> Stream
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key_by(columns).transform(id, crate::builtins::DedupTransform::new(ttl))
    }

    /// Groups the rows of each key into windows and emits one result row per key and
    /// window (see [`crate::window`]). The stream must be keyed ([`Stream::key_by`]);
    /// event-time windows need watermarks upstream ([`Stream::assign_watermarks`]). Rows
    /// later than the allowed lateness come out of [`Stream::late_records`] on the
    /// returned stream.
    pub fn window(self, id: &str, spec: crate::window::Windows) -> Stream {
        self.transform(id, crate::window::WindowTransform::new(spec))
    }

    /// Runs a [`KeyedProcessFunction`](crate::window::KeyedProcessFunction) (cloned for
    /// every subtask) with keyed state and per-key timers. The stream must be keyed.
    pub fn process<F>(self, id: &str, function: F) -> Stream
    where
        F: crate::window::KeyedProcessFunction + Clone + Sync,
    {
        self.transform(id, crate::window::KeyedProcessTransform::new(function))
    }

    /// Adds a [`WatermarkGenerator`](crate::window::WatermarkGenerator). Unless an
    /// exchange was set on this stream, it gets the upstream operator's parallelism and a
    /// forward exchange, so each subtask tracks the event time of the partitions its
    /// upstream subtask reads.
    pub fn assign_watermarks(self, id: &str, generator: crate::window::WatermarkGenerator) -> Stream {
        let parallelism = lock(&self.graph).nodes[self.node].parallelism;
        match (parallelism, &self.partitioning) {
            // An exchange chosen explicitly stays, and so does the default parallelism.
            (Some(p), None) => self.forward().transform(id, generator).parallelism(p),
            _ => self.transform(id, generator),
        }
    }

    /// Adds a sink reading this stream.
    pub fn sink(self, id: &str, factory: impl SinkFactory) -> SinkHandle {
        let graph = self.graph.clone();
        let node = add_node(&graph, id, NodeKind::Sink(Arc::new(factory)), &[self]);
        SinkHandle { graph, node }
    }

    /// Combines this stream with others as the inputs of one operator.
    pub fn union(self, others: impl IntoIterator<Item = Stream>) -> UnionStream {
        let mut streams = vec![self];
        streams.extend(others);
        UnionStream { streams }
    }
}

impl UnionStream {
    /// Adds a transform reading all the streams.
    pub fn transform(self, id: &str, factory: impl TransformFactory) -> Stream {
        let graph = self.streams[0].graph.clone();
        let node = add_node(&graph, id, NodeKind::Transform(Arc::new(factory)), &self.streams);
        Stream { graph, node, port: Port::Main, partitioning: None }
    }

    /// Adds a sink reading all the streams.
    pub fn sink(self, id: &str, factory: impl SinkFactory) -> SinkHandle {
        let graph = self.streams[0].graph.clone();
        let node = add_node(&graph, id, NodeKind::Sink(Arc::new(factory)), &self.streams);
        SinkHandle { graph, node }
    }
}

impl SinkHandle {
    /// The records the sink could not write (rejected by the target system), with the
    /// target's reason; connect it like any stream. Unconnected, they are logged and
    /// counted in the sink's metrics.
    pub fn dead_letters(&self) -> Stream {
        Stream { graph: self.graph.clone(), node: self.node, port: Port::DeadLetter, partitioning: None }
    }

    /// Sets the sink's parallelism.
    pub fn parallelism(self, parallelism: usize) -> Self {
        lock(&self.graph).nodes[self.node].parallelism = Some(parallelism);
        self
    }
}
