//! Checkpoint storage on a directory of any [`crate::fs::FileSystem`]: the local disk,
//! or a registered store such as HDFS.
//!
//! ```text
//! <checkpoint dir>/<job>/chk-<n>/_metadata            checkpoint n (JSON, written atomically)
//! <checkpoint dir>/<job>/chk-<n>/<op>-<subtask>.opstate  operator state of one subtask
//! <checkpoint dir>/<job>/shared/c<n>-<op>-<subtask>-<r>.kv  keyed-state files (bases, deltas)
//! <savepoint dir>/savepoint-<job6>-<r12>/...          self-contained: no shared files
//! ```
//!
//! Keyed-state files are shared between checkpoints (a checkpoint's chain is a base plus
//! deltas), so they live in `shared/` and are deleted only when no retained checkpoint
//! references them. Paths inside `_metadata` are relative to its directory, so a
//! checkpoint or savepoint directory can be moved as a whole.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::{FileSystem, for_path, normalize};
use crate::key::KeyGroupRange;
use crate::message::{CheckpointId, CheckpointKind};
use crate::state::kvfile::{KvFileWriter, MergedChain};

/// Name of the metadata file in a checkpoint or savepoint directory.
pub const METADATA_FILE: &str = "_metadata";
const FORMAT_VERSION: u32 = 1;

/// A state file and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Absolute in memory; relative to the metadata directory on disk.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// The snapshot of one operator subtask.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskSnapshot {
    /// Subtask index.
    pub subtask: usize,
    /// Operator state, pending commits and flags (postcard, see `OperatorStateBlob`).
    pub operator_state: Option<StateFile>,
    /// Keyed state chain: base first, then deltas.
    pub keyed_state: Vec<StateFile>,
    /// Key groups covered by `keyed_state`.
    pub key_groups: Option<KeyGroupRange>,
    /// A source that had read all its input when the snapshot was taken.
    pub finished: bool,
}

impl SubtaskSnapshot {
    /// Total bytes of the files this snapshot references.
    pub fn full_size(&self) -> u64 {
        self.operator_state.as_ref().map_or(0, |f| f.size) + self.keyed_state.iter().map(|f| f.size).sum::<u64>()
    }
}

/// All subtasks of one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// Parallelism when the snapshot was taken.
    pub parallelism: usize,
    /// Number of key groups (fixed for the life of the state).
    pub max_parallelism: u16,
    /// One entry per subtask, by index.
    pub subtasks: Vec<SubtaskSnapshot>,
}

/// The content of `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Format version of this file.
    pub format_version: u32,
    /// Job name.
    pub job_name: String,
    /// Id of the run that wrote it.
    pub job_id: String,
    /// Checkpoint id.
    pub checkpoint_id: CheckpointId,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Trigger time, ms since epoch.
    pub timestamp_ms: i64,
    /// Snapshots by operator id.
    pub operators: BTreeMap<String, OperatorSnapshot>,
}

impl CheckpointMetadata {
    /// A metadata record for the given checkpoint.
    pub fn new(
        job_name: &str,
        job_id: &str,
        checkpoint_id: CheckpointId,
        kind: CheckpointKind,
        timestamp_ms: i64,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            job_name: job_name.to_string(),
            job_id: job_id.to_string(),
            checkpoint_id,
            kind,
            timestamp_ms,
            operators: BTreeMap::new(),
        }
    }

    fn map_paths(&mut self, f: &dyn Fn(&Path) -> PathBuf) {
        for op in self.operators.values_mut() {
            for st in &mut op.subtasks {
                if let Some(file) = &mut st.operator_state {
                    file.path = f(&file.path);
                }
                for file in &mut st.keyed_state {
                    file.path = f(&file.path);
                }
            }
        }
    }

    /// Total size of all referenced files.
    pub fn full_size(&self) -> u64 {
        self.operators.values().flat_map(|o| o.subtasks.iter()).map(SubtaskSnapshot::full_size).sum()
    }
}

/// A checkpoint or savepoint read from disk, with absolute paths.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// The directory holding `_metadata`.
    pub dir: PathBuf,
    /// The metadata, paths resolved.
    pub metadata: CheckpointMetadata,
}

/// Operator state of one subtask as stored in its `.opstate` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateBlob {
    /// The operator's own snapshot (source position, ...).
    pub state: Option<Vec<u8>>,
    /// A sink's pre-committed, not yet committed transactions, oldest first.
    pub committables: Vec<(CheckpointId, Vec<u8>)>,
}

impl OperatorStateBlob {
    /// Writes the blob to `path` (durably). Returns the size.
    pub fn write(&self, path: &Path) -> Result<u64> {
        let bytes =
            postcard::to_allocvec(self).map_err(|e| Error::Internal(format!("serializing operator state: {e}")))?;
        for_path(path)?.write(path, &bytes).map_err(|e| Error::io(path, e))?;
        Ok(bytes.len() as u64)
    }

    /// Reads a blob written by [`OperatorStateBlob::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = for_path(path)?.read(path).map_err(|e| Error::io(path, e))?;
        postcard::from_bytes(&bytes)
            .map_err(|e| Error::CorruptState { path: path.to_path_buf(), reason: e.to_string() })
    }
}

/// `path` relative to `base` if it lies under `base` or its parent; else `path` itself.
fn relativize(path: &Path, base: &Path) -> PathBuf {
    if let Ok(rel) = path.strip_prefix(base) {
        return rel.to_path_buf();
    }
    if let Some(parent) = base.parent()
        && let Ok(rel) = path.strip_prefix(parent)
    {
        return Path::new("..").join(rel);
    }
    path.to_path_buf()
}

/// Writes `_metadata` into `dir` atomically: temp file, fsync, rename, fsync of the dir.
pub fn write_metadata(dir: &Path, metadata: &CheckpointMetadata) -> Result<PathBuf> {
    let mut on_disk = metadata.clone();
    on_disk.map_paths(&|p| relativize(p, dir));
    let json = serde_json::to_vec_pretty(&on_disk)
        .map_err(|e| Error::Internal(format!("serializing checkpoint metadata: {e}")))?;
    let tmp = dir.join(format!("{METADATA_FILE}.tmp"));
    let target = dir.join(METADATA_FILE);
    let fs = for_path(dir)?;
    fs.write(&tmp, &json).map_err(|e| Error::io(&tmp, e))?;
    fs.rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(target)
}

/// Reads a checkpoint or savepoint.
///
/// `path` may be the `_metadata` file, the directory holding it, or a job's checkpoint
/// root (then the newest complete checkpoint in it is used).
pub fn read_metadata(path: &Path) -> Result<LoadedCheckpoint> {
    let fs = for_path(path)?;
    let is_file = |p: &Path| fs.is_file(p).map_err(|e| Error::io(p, e));
    let dir = if path.file_name().is_some_and(|n| n == METADATA_FILE) {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    } else if is_file(&path.join(METADATA_FILE))? {
        path.to_path_buf()
    } else if fs.status(path).map_err(|e| Error::io(path, e))?.is_some_and(|s| s.is_dir) {
        match latest_in(path)? {
            Some(dir) => dir,
            None => {
                return Err(Error::Restore {
                    path: path.to_path_buf(),
                    message: "no `_metadata` here and no complete checkpoint (chk-<n>/_metadata) below".into(),
                });
            }
        }
    } else {
        return Err(Error::Restore {
            path: path.to_path_buf(),
            message: "no such checkpoint or savepoint directory".into(),
        });
    };
    let file = dir.join(METADATA_FILE);
    let bytes = fs.read(&file).map_err(|e| Error::io(&file, e))?;
    let mut metadata: CheckpointMetadata = serde_json::from_slice(&bytes)
        .map_err(|e| Error::CorruptState { path: file.clone(), reason: e.to_string() })?;
    if metadata.format_version != FORMAT_VERSION {
        return Err(Error::Restore {
            path: file,
            message: format!(
                "metadata format version {} is not supported (expected {FORMAT_VERSION})",
                metadata.format_version
            ),
        });
    }
    let base = dir.clone();
    metadata.map_paths(&|p| {
        if p.is_absolute() || crate::fs::scheme_of(p).is_some() { p.to_path_buf() } else { normalize(&base.join(p)) }
    });
    Ok(LoadedCheckpoint { dir, metadata })
}

/// The entries of `dir`, or none if it does not exist.
fn list_or_empty(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<crate::fs::DirEntry>> {
    match fs.list(dir) {
        Ok(entries) => Ok(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn checkpoint_ids(fs: &dyn FileSystem, root: &Path) -> Result<Vec<(CheckpointId, PathBuf)>> {
    let mut out = Vec::new();
    for entry in list_or_empty(fs, root)? {
        let Some(id) = entry.name().strip_prefix("chk-").and_then(|n| n.parse().ok()) else {
            continue;
        };
        out.push((id, entry.path));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// The newest directory under `root` holding a complete checkpoint.
pub fn latest_in(root: &Path) -> Result<Option<PathBuf>> {
    let fs = for_path(root)?;
    for (_, dir) in checkpoint_ids(&*fs, root)?.into_iter().rev() {
        let metadata = dir.join(METADATA_FILE);
        if fs.is_file(&metadata).map_err(|e| Error::io(&metadata, e))? {
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

/// Turns a job name into a directory name.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') { "job".to_string() } else { s }
}

/// The checkpoint directory of one job.
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    root: PathBuf,
}

impl CheckpointStorage {
    /// Storage under `<dir>/<job name>`.
    pub fn new(dir: &Path, job_name: &str) -> Self {
        Self { root: dir.join(slug(job_name)) }
    }

    /// The job's checkpoint root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where keyed-state files live.
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// Directory of checkpoint `id`.
    pub fn checkpoint_dir(&self, id: CheckpointId) -> PathBuf {
        self.root.join(format!("chk-{id}"))
    }

    /// The file system the checkpoints are on.
    fn fs(&self) -> Result<Arc<dyn FileSystem>> {
        for_path(&self.root)
    }

    /// Creates the root and `shared/`.
    pub fn create_dirs(&self) -> Result<()> {
        let shared = self.shared_dir();
        self.fs()?.create_dir_all(&shared).map_err(|e| Error::io(&shared, e))
    }

    /// Creates the directory of checkpoint `id`.
    pub fn create_checkpoint_dir(&self, id: CheckpointId) -> Result<PathBuf> {
        let dir = self.checkpoint_dir(id);
        let fs = self.fs()?;
        match fs.remove_dir_all(&dir) {
            // Left over by a run that failed before completing it.
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
        fs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// The newest complete checkpoint of this job, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        latest_in(&self.root)
    }

    /// Removes a checkpoint that failed (its shared files are collected later).
    pub fn discard(&self, id: CheckpointId) {
        let dir = self.checkpoint_dir(id);
        let removed = self.fs().and_then(|fs| fs.remove_dir_all(&dir).map_err(|e| Error::io(&dir, e)));
        if let Err(e) = removed
            && !matches!(&e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a failed checkpoint");
        }
    }

    /// Keeps the newest `retained` complete checkpoints, removes older ones and every
    /// incomplete one up to `latest`, then deletes shared files no kept checkpoint uses.
    ///
    /// Shared files created for checkpoints newer than `latest` belong to a checkpoint in
    /// flight and are never touched.
    pub fn retain(&self, retained: usize, latest: CheckpointId) -> Result<()> {
        let fs = self.fs()?;
        let all = checkpoint_ids(&*fs, &self.root)?;
        let mut complete: Vec<&(CheckpointId, PathBuf)> = Vec::new();
        for entry in &all {
            let metadata = entry.1.join(METADATA_FILE);
            if fs.is_file(&metadata).map_err(|e| Error::io(&metadata, e))? {
                complete.push(entry);
            }
        }
        let keep: HashSet<CheckpointId> = complete.iter().rev().take(retained).map(|(id, _)| *id).collect();
        for (id, dir) in &all {
            if *id <= latest && !keep.contains(id) {
                fs.remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        let mut referenced = HashSet::new();
        for (id, dir) in &complete {
            if !keep.contains(id) {
                continue;
            }
            let loaded = read_metadata(dir)?;
            for op in loaded.metadata.operators.values() {
                for st in &op.subtasks {
                    // By name: shared file names are unique, and a root written under one
                    // spelling of its URL (`hdfs:///ck`) and read under another
                    // (`hdfs://nn:8020/ck`) must not make referenced files look stray.
                    for f in &st.keyed_state {
                        if let Some(name) = f.path.file_name() {
                            referenced.insert(name.to_os_string());
                        }
                    }
                }
            }
        }
        let shared = self.shared_dir();
        for entry in list_or_empty(&*fs, &shared)? {
            let created: Option<CheckpointId> =
                entry.name().strip_prefix('c').and_then(|n| n.split('-').next()).and_then(|n| n.parse().ok());
            let Some(created) = created else { continue };
            let name = std::ffi::OsString::from(entry.name());
            let path = entry.path;
            if created <= latest && !referenced.contains(&name) {
                fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Removes every checkpoint and shared file of the job (after it finished).
    pub fn discard_all(&self) -> Result<()> {
        let fs = self.fs()?;
        for (_, dir) in checkpoint_ids(&*fs, &self.root)? {
            fs.remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let shared = self.shared_dir();
        match fs.remove_dir_all(&shared) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&shared, e)),
        }
        // The root itself goes only if nothing else (a user's file) is in it.
        let _ = fs.remove_empty_dir(&self.root);
        Ok(())
    }

    /// A new, unique path for a keyed-state file created for checkpoint `id`.
    pub fn new_shared_file(&self, id: CheckpointId, operator: &str, subtask: usize) -> PathBuf {
        self.shared_dir().join(format!("c{id}-{}-{subtask}-{:08x}.kv", slug(operator), rand::random::<u32>()))
    }
}

/// Writes a self-contained copy of `checkpoint` into `target`: each subtask's keyed chain
/// is merged into one base file, operator state is copied, and `_metadata` comes last.
pub fn write_savepoint(target: &Path, checkpoint: &CheckpointMetadata) -> Result<PathBuf> {
    let fs = for_path(target)?;
    fs.create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let mut out = checkpoint.clone();
    out.kind = CheckpointKind::Savepoint;
    for (op_id, op) in out.operators.iter_mut() {
        for st in &mut op.subtasks {
            let stem = format!("{}-{}", slug(op_id), st.subtask);
            if let Some(file) = &mut st.operator_state {
                let dest = target.join(format!("{stem}.opstate"));
                // The checkpoint may be on another store than the savepoint.
                let bytes = for_path(&file.path)?.read(&file.path).map_err(|e| Error::io(&file.path, e))?;
                fs.write(&dest, &bytes).map_err(|e| Error::io(&dest, e))?;
                file.path = dest;
            }
            if !st.keyed_state.is_empty() {
                let chain: Vec<PathBuf> = st.keyed_state.iter().map(|f| f.path.clone()).collect();
                let dest = target.join(format!("{stem}.kv"));
                let mut w = KvFileWriter::create(&dest)?;
                for entry in MergedChain::open(&chain)? {
                    let (k, v) = entry?;
                    // A base needs no tombstones: nothing older is left under it.
                    if let Some(v) = v {
                        w.append(&k, Some(&v))?;
                    }
                }
                let size = w.finish()?;
                st.keyed_state = vec![StateFile { path: dest, size }];
            }
        }
    }
    write_metadata(target, &out)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::state::kvfile::write_sorted;

    fn meta_with_chain(id: CheckpointId, chain: Vec<StateFile>, opstate: Option<StateFile>) -> CheckpointMetadata {
        let mut m = CheckpointMetadata::new("job", "jid", id, CheckpointKind::Checkpoint, 0);
        m.operators.insert(
            "count".into(),
            OperatorSnapshot {
                parallelism: 1,
                max_parallelism: 128,
                subtasks: vec![SubtaskSnapshot {
                    subtask: 0,
                    operator_state: opstate,
                    keyed_state: chain,
                    key_groups: Some(KeyGroupRange { start: 0, end: 128 }),
                    finished: false,
                }],
            },
        );
        m
    }

    #[test]
    fn metadata_round_trips_with_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::new(dir.path(), "my job");
        storage.create_dirs().unwrap();
        let shared = storage.new_shared_file(1, "count", 0);
        write_sorted(&shared, vec![(b"k".to_vec(), Some(b"v".to_vec()))]).unwrap();
        let chk = storage.create_checkpoint_dir(1).unwrap();
        let opstate = chk.join("count-0.opstate");
        let size =
            OperatorStateBlob { state: Some(vec![1, 2]), committables: vec![(1, vec![9])] }.write(&opstate).unwrap();
        let meta = meta_with_chain(
            1,
            vec![StateFile { path: shared.clone(), size: 10 }],
            Some(StateFile { path: opstate.clone(), size }),
        );
        write_metadata(&chk, &meta).unwrap();
        let raw = fs::read_to_string(chk.join(METADATA_FILE)).unwrap();
        assert!(raw.contains("../shared/"), "{raw}");
        assert!(!raw.contains(dir.path().to_str().unwrap()), "paths are relative");

        let loaded = read_metadata(storage.root()).unwrap();
        assert_eq!(loaded.metadata, meta);
        assert_eq!(storage.latest().unwrap(), Some(chk));
    }

    #[test]
    fn retention_keeps_newest_and_collects_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::new(dir.path(), "job");
        storage.create_dirs().unwrap();
        let mut files = Vec::new();
        for id in 1..=3 {
            let f = storage.new_shared_file(id, "count", 0);
            write_sorted(&f, vec![(vec![id as u8], Some(vec![1]))]).unwrap();
            files.push(StateFile { path: f, size: 1 });
            let chk = storage.create_checkpoint_dir(id).unwrap();
            // Checkpoint n references the chain of files 1..=n, except 3 which compacted.
            let chain = if id == 3 { vec![files[2].clone()] } else { files.clone() };
            write_metadata(&chk, &meta_with_chain(id, chain, None)).unwrap();
        }
        // A file of an in-flight checkpoint 4 must survive.
        let in_flight = storage.new_shared_file(4, "count", 0);
        fs::write(&in_flight, b"partial").unwrap();
        storage.retain(1, 3).unwrap();
        assert!(!storage.checkpoint_dir(1).exists() && !storage.checkpoint_dir(2).exists());
        assert!(storage.checkpoint_dir(3).exists());
        assert!(!files[0].path.exists() && !files[1].path.exists());
        assert!(files[2].path.exists());
        assert!(in_flight.exists());
        storage.discard_all().unwrap();
        assert!(!storage.root().exists());
    }

    #[test]
    fn savepoint_is_self_contained() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::new(dir.path(), "job");
        storage.create_dirs().unwrap();
        let base = storage.new_shared_file(1, "count", 0);
        write_sorted(&base, vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), Some(b"1".to_vec()))]).unwrap();
        let delta = storage.new_shared_file(2, "count", 0);
        write_sorted(&delta, vec![(b"a".to_vec(), None), (b"c".to_vec(), Some(b"2".to_vec()))]).unwrap();
        let meta =
            meta_with_chain(2, vec![StateFile { path: base, size: 1 }, StateFile { path: delta, size: 1 }], None);
        let sp = dir.path().join("sp");
        write_savepoint(&sp, &meta).unwrap();
        storage.discard_all().unwrap();
        let loaded = read_metadata(&sp).unwrap();
        assert_eq!(loaded.metadata.kind, CheckpointKind::Savepoint);
        let chain: Vec<PathBuf> =
            loaded.metadata.operators["count"].subtasks[0].keyed_state.iter().map(|f| f.path.clone()).collect();
        let entries: Vec<_> = MergedChain::open(&chain).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(entries, vec![(b"b".to_vec(), Some(b"1".to_vec())), (b"c".to_vec(), Some(b"2".to_vec()))]);
    }

    #[test]
    fn missing_or_corrupt_metadata_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_metadata(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = read_metadata(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no `_metadata`"), "{err}");
        fs::write(dir.path().join(METADATA_FILE), b"{not json").unwrap();
        assert!(matches!(read_metadata(dir.path()).unwrap_err(), Error::CorruptState { .. }));
    }
}
