//! A job's settings ([`JobConfig`]) and where it restores from ([`RestoreSettings`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::is_job_id;
use crate::checkpoint::CheckpointConfig;
use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::key::{DEFAULT_MAX_PARALLELISM, MAX_MAX_PARALLELISM};
use crate::restart::RestartStrategy;
use crate::state::{StateBackend, StateBackendKind};

/// Where to restore a job from when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSettings {
    /// A savepoint or checkpoint directory (or its `_metadata` file, or a job's
    /// checkpoint root, meaning its newest checkpoint).
    pub path: PathBuf,
    /// Start even if the snapshot has state for operators this job no longer has.
    pub allow_non_restored_state: bool,
}

/// Settings of a job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Job name; also names the job's checkpoint directory.
    pub name: String,
    /// Default parallelism of operators that do not set their own. Default 1.
    pub parallelism: usize,
    /// Number of key groups; bounds parallelism and is fixed for the life of the state.
    /// Default 128.
    pub max_parallelism: u16,
    /// Capacity, in batches, of each channel between two subtasks. Default 2: enough to
    /// overlap producer and consumer, and little data in flight, so that checkpoint
    /// barriers do not queue behind a long backlog when a sink is slow.
    pub channel_capacity: usize,
    /// Periodic checkpoints; `None` disables them (and savepoints).
    pub checkpointing: Option<CheckpointConfig>,
    /// Where working keyed state lives. Default disk (memory up to a budget, then disk).
    pub state_backend: StateBackendKind,
    /// Memory for keyed state before the backend spills (see
    /// [`with_state_memory_budget`](Self::with_state_memory_budget)).
    pub state_memory_budget: Option<u64>,
    /// A custom backend, overriding `state_backend`.
    pub custom_state_backend: Option<Arc<dyn StateBackend>>,
    /// Directory of the disk backend's stores. Default `<temp>/operators-state`.
    pub local_state_dir: PathBuf,
    /// What to do after a failure. Default: fixed delay, 4 attempts, 60 s.
    pub restart: RestartStrategy,
    /// Start from this savepoint or checkpoint.
    pub restore: Option<RestoreSettings>,
    /// Default target of savepoints. Default `<checkpoint dir>/savepoints`.
    pub savepoint_dir: Option<PathBuf>,
    /// Clock for state TTL and timestamps. Default: the system clock.
    pub clock: SharedClock,
    /// How long a source that has nothing to read waits before it is polled again.
    /// Default 20 ms.
    pub idle_wait: Duration,
    /// The id of this run (32 lower-case hex characters). Default: a random one. A
    /// job server sets it to resume a job under the id its clients know.
    pub job_id: Option<String>,
}

impl JobConfig {
    /// Defaults, with checkpointing off.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            channel_capacity: 2,
            checkpointing: None,
            state_backend: StateBackendKind::default(),
            state_memory_budget: None,
            custom_state_backend: None,
            local_state_dir: std::env::temp_dir().join("operators-state"),
            restart: RestartStrategy::default(),
            restore: None,
            savepoint_dir: None,
            clock: Arc::new(SystemClock),
            idle_wait: Duration::from_millis(20),
            job_id: None,
        }
    }

    /// Sets the default parallelism.
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets the number of key groups.
    pub fn with_max_parallelism(mut self, max: u16) -> Self {
        self.max_parallelism = max;
        self
    }

    /// Sets the channel capacity in batches.
    pub fn with_channel_capacity(mut self, capacity: usize) -> Self {
        self.channel_capacity = capacity;
        self
    }

    /// Enables checkpoints.
    pub fn with_checkpointing(mut self, checkpointing: CheckpointConfig) -> Self {
        self.checkpointing = Some(checkpointing);
        self
    }

    /// Sets the state backend.
    pub fn with_state_backend(mut self, kind: StateBackendKind) -> Self {
        self.state_backend = kind;
        self
    }

    /// Sets the memory the job's keyed state may hold before the state backend spills
    /// entries not used recently to disk (the disk backend; the memory backend refuses a
    /// budget). Default: [`DEFAULT_MEMORY_BUDGET`](crate::state::DEFAULT_MEMORY_BUDGET).
    pub fn with_state_memory_budget(mut self, bytes: u64) -> Self {
        self.state_memory_budget = Some(bytes);
        self
    }

    /// Uses a custom state backend.
    pub fn with_custom_state_backend(mut self, backend: Arc<dyn StateBackend>) -> Self {
        self.custom_state_backend = Some(backend);
        self
    }

    /// Sets the directory of the disk backend's stores.
    pub fn with_local_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_state_dir = dir.into();
        self
    }

    /// Sets the restart strategy.
    pub fn with_restart(mut self, restart: RestartStrategy) -> Self {
        self.restart = restart;
        self
    }

    /// Starts from a savepoint or checkpoint.
    pub fn with_restore(mut self, path: impl Into<PathBuf>, allow_non_restored_state: bool) -> Self {
        self.restore = Some(RestoreSettings { path: path.into(), allow_non_restored_state });
        self
    }

    /// Sets the default savepoint directory.
    pub fn with_savepoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.savepoint_dir = Some(dir.into());
        self
    }

    /// Sets the job id (32 lower-case hex characters, as Flink's).
    pub fn with_job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(id.into());
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks every setting without touching the file system: a dry run calls it and
    /// changes nothing. [`JobConfig::check_dirs`] holds the checks that need I/O.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::config("job.name", "must not be empty"));
        }
        if self.parallelism == 0 {
            return Err(Error::config("parallelism", "must be at least 1"));
        }
        if self.max_parallelism == 0 || self.max_parallelism > MAX_MAX_PARALLELISM {
            return Err(Error::config(
                "max-parallelism",
                format!("{} is outside 1..={MAX_MAX_PARALLELISM}", self.max_parallelism),
            ));
        }
        if self.parallelism > usize::from(self.max_parallelism) {
            return Err(Error::config(
                "parallelism",
                format!("{} exceeds max-parallelism {}", self.parallelism, self.max_parallelism),
            ));
        }
        if self.channel_capacity == 0 {
            return Err(Error::config("channel-capacity", "must be at least 1"));
        }
        if let Some(cp) = &self.checkpointing {
            cp.validate()?;
        }
        // A URL here would be read as a relative path (`hdfs:///x` as `./hdfs:/x`).
        crate::path::check_local("state.local-dir", &self.local_state_dir)?;
        if let Some(dir) = &self.savepoint_dir {
            crate::path::check_store("savepoint.dir", dir)?;
        }
        if let Some(r) = &self.restore {
            crate::path::check_store("savepoint.path", &r.path)?;
        }
        if let Some(id) = &self.job_id
            && !is_job_id(id)
        {
            return Err(Error::config("job-id", format!("`{id}` is not 32 lower-case hex characters")));
        }
        self.restart.validate()?;
        Ok(())
    }

    /// The checks of the settings that need I/O: creates the checkpoint directory if
    /// needed and checks that it can be written. [`Pipeline::start`](crate::Pipeline::start)
    /// runs them when the job starts.
    pub fn check_dirs(&self) -> Result<()> {
        if let Some(cp) = &self.checkpointing {
            cp.check_dir()?;
        }
        Ok(())
    }

    pub(super) fn savepoint_target(&self) -> Option<PathBuf> {
        self.savepoint_dir.clone().or_else(|| self.checkpointing.as_ref().map(|c| c.dir.join("savepoints")))
    }
}
