//! State backends: where an operator's working keyed state lives while the job runs.
//!
//! Keyed state is worked on in memory, in a hash table per operator subtask
//! ([`KeyedStateStore`]). A [`StateBackend`] decides what happens past memory: the memory
//! backend ([`MemoryStateBackend`]) keeps everything in the table; the disk backend
//! ([`DiskStateBackend`], the original toolkit's `rocksdb` option) gives each subtask an
//! embedded on-disk [`KeyValueStore`] (fjall) that receives the entries evicted past the job's
//! [`MemoryBudget`], so state may outgrow memory. Either way the working state is a
//! scratch copy: durability comes from checkpoints, which record each subtask's changes as
//! sorted files ([`kvfile`]) written off the processing path. On restore a fresh store is
//! filled from those files.

pub mod keyed;
pub mod kvfile;
mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};

pub use keyed::{Changelog, KeyedStateStore, MapState, MemoryBudget, StateTtl, TtlUpdate, ValueState};

/// Default memory for a job's keyed state with a spilling backend: past it, entries not
/// used recently go to disk.
pub const DEFAULT_MEMORY_BUDGET: u64 = 512 << 20;

/// Identifies the subtask a store belongs to.
#[derive(Debug, Clone)]
pub struct StoreScope<'a> {
    /// Job id (unique per run).
    pub job_id: &'a str,
    /// Operator id.
    pub operator_id: &'a str,
    /// Subtask index.
    pub subtask: usize,
    /// Restart attempt (0 for the first run).
    pub attempt: u32,
}

/// Keys from this first byte on are only ever scanned in key order, never read one at a
/// time: a [`KeyValueStore`] may keep them without what speeds up reads by key. The disk
/// store keeps them apart, without bloom filters. (Keyed state writes there the changes
/// it evicted before a checkpoint took them, which a checkpoint reads back in order and
/// deletes: with filters they doubled the filters' memory, and their deletions added as
/// much again until compacted away.)
pub const SCANNED_FROM: u8 = 1;

/// A byte-ordered key-value store: where a subtask's keyed state goes past its memory budget.
///
/// Keys starting with a byte below [`SCANNED_FROM`] are read by key (`get`); the others
/// are read by `scan`. Every operation works on every key: that is only what it is
/// tuned for.
pub trait KeyValueStore: Send {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes `key` (no error if absent).
    fn delete(&mut self, key: &[u8]) -> Result<()>;
    /// Up to `limit` entries with `start <= key < end`, in key order.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Memory the store holds that grows with what it stores, not bounded by its caches
    /// (an LSM tree's bloom filters): counted in the keyed-state budget, so that the
    /// table in memory shrinks as the store grows.
    fn resident_bytes(&self) -> u64 {
        0
    }
    /// Applies puts (`Some`) and deletions (`None`) in one batch.
    fn apply(&mut self, batch: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        for (k, v) in batch {
            match v {
                Some(v) => self.put(&k, &v)?,
                None => self.delete(&k)?,
            }
        }
        Ok(())
    }
}

/// Decides where operator subtasks' keyed state goes past memory.
pub trait StateBackend: Send + Sync + fmt::Debug {
    /// Short name (`memory`, `disk`), shown in the REST API and logs.
    fn name(&self) -> &'static str;
    /// Opens an empty spill store for one subtask (`None`: state stays in memory).
    fn open_store(&self, scope: &StoreScope<'_>) -> Result<Option<Box<dyn KeyValueStore>>>;
    /// The memory budget the job's subtasks share (`None`: unbounded).
    fn memory_budget(&self) -> Option<Arc<MemoryBudget>> {
        None
    }
}

/// Which state backend to use, as named in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateBackendKind {
    /// Working state in memory (`memory`, and `fs`: Flink's FsStateBackend also keeps
    /// working state on the heap and only writes checkpoints to files).
    Memory,
    /// Working state in memory up to a budget, past it in an embedded on-disk store
    /// (`disk`, and the toolkit's `rocksdb`; `sled` names it too, for configurations
    /// written for earlier versions).
    #[default]
    Disk,
}

impl FromStr for StateBackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" | "fs" | "filesystem" | "hashmap" => Ok(StateBackendKind::Memory),
            "disk" | "rocksdb" | "sled" => Ok(StateBackendKind::Disk),
            other => Err(Error::config(
                "state.backend",
                format!("unknown state backend `{other}`; expected one of memory, fs, rocksdb, disk"),
            )),
        }
    }
}

impl StateBackendKind {
    /// Builds the backend; disk stores live under `local_dir`, and hold what exceeds
    /// `memory_budget` bytes ([`DEFAULT_MEMORY_BUDGET`] if `None`).
    ///
    /// A budget with the memory backend is refused: it has nowhere to put what exceeds it.
    pub fn build(&self, local_dir: PathBuf, memory_budget: Option<u64>) -> Result<Arc<dyn StateBackend>> {
        match self {
            StateBackendKind::Memory => match memory_budget {
                None => Ok(Arc::new(MemoryStateBackend)),
                Some(_) => Err(Error::config(
                    "state.memory.budget",
                    "the memory state backend keeps all keyed state in memory and cannot honour a budget; \
                     use the disk (rocksdb) backend to spill state past it",
                )),
            },
            StateBackendKind::Disk => {
                #[cfg(feature = "disk")]
                {
                    let budget = memory_budget.unwrap_or(DEFAULT_MEMORY_BUDGET);
                    Ok(Arc::new(DiskStateBackend::new(local_dir).with_memory_budget(budget)))
                }
                #[cfg(not(feature = "disk"))]
                {
                    let _ = (local_dir, memory_budget);
                    Err(Error::config(
                        "state.backend",
                        "the disk state backend is not compiled in (enable the `disk` feature of operators-core)",
                    ))
                }
            }
        }
    }
}

/// All keyed state in memory, without a budget (Flink's heap state backend).
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStateBackend;

impl StateBackend for MemoryStateBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn open_store(&self, _scope: &StoreScope<'_>) -> Result<Option<Box<dyn KeyValueStore>>> {
        Ok(None)
    }
}

/// An ordered in-memory [`KeyValueStore`], for tests and for embedding code that wants
/// eviction without a disk.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KeyValueStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self.map.get_mut(key) {
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                self.map.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.map.remove(key);
        Ok(())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(feature = "disk")]
pub use disk_backend::{DiskStateBackend, DiskStore};

#[cfg(feature = "disk")]
mod disk_backend {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, Weak};

    use super::{DEFAULT_MEMORY_BUDGET, KeyValueStore, MemoryBudget, StateBackend, StoreScope};
    use crate::error::{Error, Result};

    /// Keyed state in memory up to a budget, and past it in an embedded LSM store (fjall)
    /// under a local directory: one per job, a partition per subtask, so that its block
    /// cache and write buffer are the job's, not multiplied by its subtasks.
    ///
    /// An LSM store suits spilled state: evictions are sequential writes, and the lookup
    /// of a key never seen (most lookups of a deduplication) is answered by bloom filters
    /// without reading the disk. Each store is a scratch copy deleted when its task ends;
    /// a job's directory also records the owning process so that copies left behind by a
    /// killed process are removed the next time a job starts.
    #[derive(Debug, Clone)]
    pub struct DiskStateBackend {
        dir: PathBuf,
        /// Block cache and write buffer of the job's store.
        store_memory: u64,
        budget: Arc<MemoryBudget>,
        /// The open store of each job, while a subtask uses it.
        open: Arc<Mutex<HashMap<String, Weak<JobStore>>>>,
    }

    /// Bits per key of the disk store's bloom filters (fjall's default): a lookup of a key
    /// never seen reads the disk about once in a hundred.
    const BLOOM_BITS: u8 = 10;

    /// A job's fjall keyspace, removed from disk when its last subtask store closes.
    struct JobStore {
        keyspace: Option<fjall::Keyspace>,
        path: PathBuf,
    }

    impl Drop for JobStore {
        fn drop(&mut self) {
            // Closed (its background threads stopped) before its files go.
            drop(self.keyspace.take());
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    impl DiskStateBackend {
        /// Stores under `dir` (created if missing), with a memory budget of
        /// [`DEFAULT_MEMORY_BUDGET`].
        pub fn new(dir: PathBuf) -> Self {
            Self::new_with_budget(dir, DEFAULT_MEMORY_BUDGET)
        }

        fn new_with_budget(dir: PathBuf, bytes: u64) -> Self {
            // A store's block cache and write buffer come out of the budget: an eighth
            // each (4 to 64 MiB). So does half an eighth more for the store's memory
            // outside them (its segments' indexes, flush and compaction buffers, the
            // reads of a checkpoint's merge): heaptrack saw about 7 MB of that on the
            // 10 M-key run under 128 MiB. The rest is for the in-memory table.
            let store_memory = (bytes / 8).clamp(4 << 20, 64 << 20);
            let table = bytes.saturating_sub(2 * store_memory + store_memory / 2).max(bytes / 2);
            Self { dir, store_memory, budget: Arc::new(MemoryBudget::new(table)), open: Arc::default() }
        }

        /// Sets the memory the job's keyed state may take, the disk store's caches
        /// included, before entries go to disk.
        pub fn with_memory_budget(self, bytes: u64) -> Self {
            Self::new_with_budget(self.dir, bytes)
        }
    }

    impl StateBackend for DiskStateBackend {
        fn name(&self) -> &'static str {
            "disk"
        }

        fn memory_budget(&self) -> Option<Arc<MemoryBudget>> {
            Some(self.budget.clone())
        }

        fn open_store(&self, scope: &StoreScope<'_>) -> Result<Option<Box<dyn KeyValueStore>>> {
            let job_dir = self.dir.join(sanitize(scope.job_id));
            std::fs::create_dir_all(&job_dir).map_err(|e| Error::io(&job_dir, e))?;
            let pid_file = job_dir.join("owner.pid");
            if !pid_file.exists() {
                sweep_orphans(&self.dir);
                std::fs::write(&pid_file, std::process::id().to_string()).map_err(|e| Error::io(&pid_file, e))?;
            }
            let job_store = self.job_store(&job_dir)?;
            let Some(keyspace) = &job_store.keyspace else {
                return Err(Error::Internal("a job's disk store used after close".into()));
            };
            let name = partition_name(scope);
            // A partition under this name is one a closed subtask store left: it is not
            // reused (it holds that store's entries) nor deleted (see `DiskStore`).
            let mut name = name;
            while keyspace.partition_exists(&name) || keyspace.partition_exists(&scanned_name(&name)) {
                name = format!("{name}-r{:08x}", rand::random::<u32>());
            }
            let path = job_store.path.join(&name);
            let memtable = u32::try_from(self.store_memory / 4).unwrap_or(u32::MAX);
            // Compaction keeps a 16-byte hash per key of the segment it writes (for its bloom
            // filter): at the default 64 MiB segments of small entries, a hundred MiB
            // outside the budget. Small segments bound that to a few MiB.
            let target = u32::try_from(self.store_memory / 4).unwrap_or(u32::MAX).max(2 << 20);
            let options = || {
                fjall::PartitionCreateOptions::default().max_memtable_size(memtable).compaction_strategy(
                    fjall::compaction::Strategy::Leveled(fjall::compaction::Leveled {
                        target_size: target,
                        ..Default::default()
                    }),
                )
            };
            let partition = keyspace
                .open_partition(&name, options().bloom_filter_bits(Some(BLOOM_BITS)))
                .map_err(|e| store_err(&path, "opening", e))?;
            let scanned = keyspace
                .open_partition(&scanned_name(&name), options().bloom_filter_bits(None))
                .map_err(|e| store_err(&job_store.path.join(scanned_name(&name)), "opening", e))?;
            Ok(Some(Box::new(DiskStore { partition, scanned, job: job_store.clone(), path })))
        }
    }

    impl DiskStateBackend {
        /// The job's open store, or a new one.
        fn job_store(&self, job_dir: &Path) -> Result<Arc<JobStore>> {
            let mut open = self.open.lock().map_err(|_| Error::Internal("disk store registry poisoned".into()))?;
            let key = job_dir.display().to_string();
            if let Some(store) = open.get(&key).and_then(Weak::upgrade) {
                return Ok(store);
            }
            // A directory of its own: the store it replaces may still be removing its
            // files (that happens when its last subtask store drops, outside this lock).
            let path = job_dir.join(format!("store-{:08x}", rand::random::<u32>()));
            let keyspace = fjall::Config::new(&path)
                // fjall weighs a cached block by its encoded size; decoded, a block of small
                // entries takes about twice that (a shared slice per key and per value):
                // heaptrack saw 27 MB of cached blocks under a 16 MiB cache. Half the
                // share is given, so that the cache's real size is what the budget counts.
                // (A block not cached is read again from the OS page cache, outside RSS.)
                .cache_size(self.store_memory / 2)
                // fjall counts a memtable's keys and values; its skip list takes about as
                // much again, so half the write buffer's share is given.
                .max_write_buffer_size(self.store_memory / 2)
                // Durability comes from checkpoints; the working copy is disposable (and
                // removed when the job's last store closes).
                .fsync_ms(None)
                .open()
                .map_err(|e| store_err(&path, "opening", e))?;
            let store = Arc::new(JobStore { keyspace: Some(keyspace), path });
            open.retain(|_, w| w.strong_count() > 0);
            open.insert(key, Arc::downgrade(&store));
            Ok(store)
        }
    }

    /// A subtask's partition: fjall allows 255 bytes of `[A-Za-z0-9_#$-]`, so a long or
    /// unusual operator id is shortened and told apart by a hash of it.
    fn partition_name(scope: &StoreScope<'_>) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        scope.operator_id.hash(&mut hasher);
        let readable: String = sanitize(scope.operator_id).chars().take(64).collect();
        format!("{readable}-{:016x}-{}-a{}", hasher.finish(), scope.subtask, scope.attempt)
    }

    /// The partition beside `name` for its keys from [`SCANNED_FROM`](super::SCANNED_FROM) on.
    fn scanned_name(name: &str) -> String {
        format!("{name}-s")
    }

    /// Removes job directories whose owning process is gone (left by a killed process).
    fn sweep_orphans(root: &Path) {
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(pid) = std::fs::read_to_string(dir.join("owner.pid")) else {
                continue;
            };
            let alive = Path::new("/proc").join(pid.trim()).exists() || !Path::new("/proc/self").exists();
            if !alive {
                tracing::debug!(dir = %dir.display(), "removing keyed state left by a dead process");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    fn sanitize(s: &str) -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
    }

    fn store_err(path: &Path, what: &str, e: fjall::Error) -> Error {
        Error::external(format!("keyed-state store {} ({what})", path.display()), false, e)
    }

    /// One subtask's disk store: two partitions of its job's, one for the keys read by
    /// key and one, without bloom filters, for those only scanned
    /// ([`SCANNED_FROM`](super::SCANNED_FROM)).
    ///
    /// Its partitions are not deleted when it closes, but with the job's keyspace, when the
    /// job's last store closes (a restart closes them all). fjall 2.11 cannot delete a
    /// partition while the partition's memtable is being flushed: its flush thread
    /// panics and poisons the keyspace under every other subtask. A subtask that ends
    /// before the others (its input ended first) used to do exactly that.
    pub struct DiskStore {
        /// Keys read by key, with bloom filters.
        partition: fjall::PartitionHandle,
        /// Keys from [`SCANNED_FROM`](super::SCANNED_FROM) on, without.
        scanned: fjall::PartitionHandle,
        job: Arc<JobStore>,
        /// For error messages.
        path: PathBuf,
    }

    impl DiskStore {
        fn keyspace(&self) -> Result<&fjall::Keyspace> {
            self.job.keyspace.as_ref().ok_or_else(|| Error::Internal("disk store used after close".into()))
        }

        /// The partition that holds `key`.
        fn of(&self, key: &[u8]) -> &fjall::PartitionHandle {
            if key.first().is_some_and(|&b| b >= super::SCANNED_FROM) { &self.scanned } else { &self.partition }
        }

        fn scan_into(
            &self,
            partition: &fjall::PartitionHandle,
            start: &[u8],
            end: &[u8],
            limit: usize,
            out: &mut Vec<(Vec<u8>, Vec<u8>)>,
        ) -> Result<()> {
            if start >= end {
                return Ok(());
            }
            for item in partition.range(start..end).take(limit.saturating_sub(out.len())) {
                let (k, v) = item.map_err(|e| store_err(&self.path, "scan", e))?;
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(())
        }
    }

    impl KeyValueStore for DiskStore {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.of(key).get(key).map(|v| v.map(|v| v.to_vec())).map_err(|e| store_err(&self.path, "get", e))
        }

        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
            self.of(key).insert(key, value).map_err(|e| store_err(&self.path, "put", e))
        }

        fn delete(&mut self, key: &[u8]) -> Result<()> {
            self.of(key).remove(key).map_err(|e| store_err(&self.path, "delete", e))
        }

        fn apply(&mut self, batch: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
            let mut b = self.keyspace()?.batch();
            for (k, v) in batch {
                let partition = self.of(&k);
                match v {
                    Some(v) => b.insert(partition, k, v),
                    None => b.remove(partition, k),
                }
            }
            b.commit().map_err(|e| store_err(&self.path, "batch", e))
        }

        fn resident_bytes(&self) -> u64 {
            // fjall keeps every segment's bloom filter in memory: BLOOM_BITS per item
            // written (its count includes overwritten versions and tombstones not yet
            // compacted away, which their filters hold too). The scanned keys have none.
            self.partition.approximate_len() as u64 * u64::from(BLOOM_BITS) / 8
        }

        fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
            // Every key of the first partition sorts before every key of the second.
            let split: &[u8] = &[super::SCANNED_FROM];
            let mut out = Vec::new();
            self.scan_into(&self.partition, start, end.min(split), limit, &mut out)?;
            self.scan_into(&self.scanned, start.max(split), end, limit, &mut out)?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> StoreScope<'static> {
        StoreScope { job_id: "job", operator_id: "op", subtask: 0, attempt: 0 }
    }

    fn exercise(store: &mut dyn KeyValueStore) {
        store.put(b"b", b"2").unwrap();
        store.put(b"a", b"1").unwrap();
        store.put(b"c", b"3").unwrap();
        store.put(b"a", b"11").unwrap();
        assert_eq!(store.get(b"a").unwrap(), Some(b"11".to_vec()));
        store.delete(b"b").unwrap();
        assert_eq!(store.get(b"b").unwrap(), None);
        let all = store.scan(b"a", b"z", 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(store.scan(b"a", b"z", 1).unwrap().len(), 1);
        assert!(store.scan(b"z", b"a", 10).unwrap().is_empty());
    }

    #[test]
    fn memory_store_semantics() {
        assert!(MemoryStateBackend.open_store(&scope()).unwrap().is_none());
        let mut s = MemoryStore::default();
        exercise(&mut s);
        s.apply(vec![(b"x".to_vec(), Some(b"1".to_vec())), (b"a".to_vec(), None)]).unwrap();
        assert_eq!(s.get(b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"a").unwrap(), None);
    }

    #[cfg(feature = "disk")]
    #[test]
    fn disk_store_semantics_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DiskStateBackend::new(dir.path().to_path_buf());
        let mut s = backend.open_store(&scope()).unwrap().unwrap();
        exercise(s.as_mut());
        s.apply(vec![(b"x".to_vec(), Some(b"1".to_vec())), (b"c".to_vec(), None)]).unwrap();
        assert_eq!(s.get(b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"c").unwrap(), None);
        // Another subtask of the job: the same store on disk, its own keys.
        let mut other = backend
            .open_store(&StoreScope { job_id: "job", operator_id: "op", subtask: 1, attempt: 0 })
            .unwrap()
            .unwrap();
        assert_eq!(other.get(b"x").unwrap(), None);
        other.put(b"x", b"2").unwrap();
        assert_eq!(s.get(b"x").unwrap(), Some(b"1".to_vec()));
        let stores = || -> Vec<_> {
            std::fs::read_dir(dir.path().join("job"))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("store-"))
                .collect()
        };
        assert_eq!(stores().len(), 1, "one store for the job's subtasks");
        drop(s);
        assert_eq!(other.get(b"x").unwrap(), Some(b"2".to_vec()), "the other subtask's store stays open");
        drop(other);
        assert!(stores().is_empty(), "the job's store is removed with its last subtask store");
        // An operator id fjall could not name a partition after still opens.
        let long = "x.".repeat(300);
        let mut s = backend
            .open_store(&StoreScope { job_id: "job", operator_id: &long, subtask: 0, attempt: 0 })
            .unwrap()
            .unwrap();
        s.put(b"k", b"v").unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[cfg(feature = "disk")]
    #[test]
    fn a_subtask_store_closing_while_the_others_flush_breaks_nothing() {
        // Small memtables, so that flushes run all the time; one subtask's store closes
        // in the middle of them, as when its input ends first.
        let dir = tempfile::tempdir().unwrap();
        let backend = DiskStateBackend::new(dir.path().to_path_buf()).with_memory_budget(8 << 20);
        for round in 0..6u32 {
            let job = format!("job{round}");
            let open = |subtask| {
                backend
                    .open_store(&StoreScope { job_id: &job, operator_id: "op", subtask, attempt: 0 })
                    .unwrap()
                    .unwrap()
            };
            let (mut a, mut b) = (open(0), open(1));
            let batch = |n: u32| (0..2000u32).map(move |i| ((n * 2000 + i).to_be_bytes().to_vec(), Some(vec![7; 64])));
            for n in 0..40 {
                a.apply(batch(n).collect()).unwrap();
                b.apply(batch(n).collect()).unwrap();
            }
            drop(a);
            for n in 40..80 {
                b.apply(batch(n).collect()).unwrap();
            }
            assert_eq!(b.get(&(79u32 * 2000).to_be_bytes()).unwrap(), Some(vec![7; 64]), "round {round}");
            // A store reopened under a closed one's name starts empty.
            let mut again = open(0);
            assert_eq!(again.get(&0u32.to_be_bytes()).unwrap(), None);
            again.put(b"k", b"v").unwrap();
        }
    }

    #[cfg(feature = "disk")]
    #[test]
    fn the_disk_store_counts_its_bloom_filters_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStateBackend::new(dir.path().to_path_buf()).open_store(&scope()).unwrap().unwrap();
        assert_eq!(s.resident_bytes(), 0);
        s.apply((0u32..8000).map(|i| (i.to_be_bytes().to_vec(), Some(vec![1]))).collect()).unwrap();
        // Ten bits a key.
        assert_eq!(s.resident_bytes(), 10_000);
        assert_eq!(MemoryStore::default().resident_bytes(), 0);
    }

    /// Keys on both sides of [`SCANNED_FROM`] (two partitions in the disk store) read,
    /// scan and delete as one byte-ordered store.
    #[cfg(feature = "disk")]
    #[test]
    fn scanned_keys_and_keys_read_by_key_make_one_ordered_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DiskStateBackend::new(dir.path().to_path_buf()).open_store(&scope()).unwrap().unwrap();
        let mut memory = MemoryStore::default();
        let keys: Vec<Vec<u8>> =
            vec![vec![0], vec![0, 9], vec![0, 255], vec![1], vec![1, 0], vec![2, 7], vec![255, 1], vec![SCANNED_FROM]];
        for store in [disk.as_mut(), &mut memory as &mut dyn KeyValueStore] {
            store.apply(keys.iter().map(|k| (k.clone(), Some(k.clone()))).collect()).unwrap();
            store.apply(vec![(vec![0, 9], None), (vec![2, 7], None)]).unwrap();
            store.put(&[1, 5], b"x").unwrap();
            store.delete(&[0, 255]).unwrap();
        }
        for k in keys.iter().chain([&vec![1, 5]]) {
            assert_eq!(disk.get(k).unwrap(), memory.get(k).unwrap(), "{k:?}");
        }
        for (start, end, limit) in [
            (vec![0], vec![255, 255], 100),
            (vec![0], vec![255, 255], 3),
            (vec![0, 1], vec![1, 1], 100),
            (vec![1], vec![2], 100),
            (vec![0], vec![1], 100),
            (vec![2], vec![1], 100),
        ] {
            assert_eq!(
                disk.scan(&start, &end, limit).unwrap(),
                memory.scan(&start, &end, limit).unwrap(),
                "{start:?}..{end:?} limit {limit}"
            );
        }
        // The scanned keys carry no bloom filters: only the others count.
        let before = disk.resident_bytes();
        disk.apply((0u32..8000).map(|i| ([&[2u8][..], &i.to_be_bytes()].concat(), Some(vec![1]))).collect()).unwrap();
        assert_eq!(disk.resident_bytes(), before);
    }

    #[test]
    fn backend_names_parse() {
        assert_eq!("ROCKSDB".parse::<StateBackendKind>().unwrap(), StateBackendKind::Disk);
        assert_eq!("fs".parse::<StateBackendKind>().unwrap(), StateBackendKind::Memory);
        let err = "leveldb".parse::<StateBackendKind>().unwrap_err().to_string();
        assert!(err.contains("state.backend") && err.contains("leveldb"), "{err}");
        let err = StateBackendKind::Memory.build(PathBuf::from("."), Some(1 << 20)).unwrap_err().to_string();
        assert!(err.contains("state.memory.budget"), "{err}");
    }
}
