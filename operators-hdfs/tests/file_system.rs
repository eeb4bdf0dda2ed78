//! The HDFS file system against a real HDFS (`testing/services/hdfs.sh`, a
//! MiniDFSCluster; `HDFS_URL` names its NameNode): what checkpoints, savepoints and the
//! file sink rely on — durable files, listings, atomic renames with and without
//! replacement, the error kinds of missing paths — and checkpoint storage on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use operators_core::checkpoint::storage::{
    CheckpointMetadata, CheckpointStorage, OperatorSnapshot, OperatorStateBlob, StateFile, SubtaskSnapshot,
    read_metadata, write_metadata, write_savepoint,
};
use operators_core::fs::{self, FileSystem};
use operators_core::key::KeyGroupRange;
use operators_core::message::CheckpointKind;

/// The NameNode the tests use; fails, naming the script that starts it, when unset.
fn hdfs_url() -> String {
    match std::env::var("HDFS_URL") {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_string(),
        _ => panic!(
            "HDFS_URL is not set: start HDFS with `testing/services/hdfs.sh start` (or `eval \"$(testing/services/start-all.sh)\"`)"
        ),
    }
}

/// A fresh directory for one test, created, and its file system.
fn test_dir(name: &str) -> (PathBuf, std::sync::Arc<dyn FileSystem>) {
    operators_hdfs::register().unwrap();
    let dir = PathBuf::from(format!("{}/operators-tests/{name}-{:016x}", hdfs_url(), rand::random::<u64>()));
    let store = fs::for_path(&dir).unwrap();
    store
        .create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("creating {} (is `testing/services/hdfs.sh start` running?): {e}", dir.display()));
    (dir, store)
}

#[test]
fn files_round_trip_in_chunks_and_list() {
    let (dir, store) = test_dir("files");
    // Larger than one chunk sent to the DataNodes, and not a multiple of it.
    let big: Vec<u8> = (0..9_000_001u32).map(|i| (i % 251) as u8).collect();
    let path = dir.join("big.bin");
    let mut w = store.create(&path).unwrap();
    for piece in big.chunks(1 << 16) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap();
    let mut file = store.open(&path).unwrap();
    assert_eq!(file.len, big.len() as u64);
    let mut back = Vec::new();
    file.reader.read_to_end(&mut back).unwrap();
    assert!(back == big, "the file reads back as written");

    // Replacing a file, and an empty one.
    store.write(&path, b"short").unwrap();
    assert_eq!(store.read(&path).unwrap(), b"short");
    store.write(&dir.join("empty"), b"").unwrap();
    assert_eq!(store.read(&dir.join("empty")).unwrap(), b"");

    store.create_dir_all(&dir.join("sub/deeper")).unwrap();
    let mut names: Vec<(String, bool, u64)> =
        store.list(&dir).unwrap().iter().map(|e| (e.name().to_string(), e.is_dir, e.len)).collect();
    names.sort();
    assert_eq!(
        names,
        vec![("big.bin".into(), false, 5), ("empty".into(), false, 0), ("sub".into(), true, 0)],
        "listing of {}",
        dir.display()
    );
    let entry = store.list(&dir).unwrap().into_iter().find(|e| e.name() == "big.bin").unwrap();
    assert_eq!(entry.path, dir.join("big.bin"), "entries are full locations");
    assert_eq!(store.status(&dir.join("sub")).unwrap().map(|s| s.is_dir), Some(true));
    store.remove_dir_all(&dir).unwrap();
    assert_eq!(store.status(&dir).unwrap(), None);
}

#[test]
fn missing_paths_and_renames_have_the_kinds_callers_rely_on() {
    let (dir, store) = test_dir("renames");
    let missing = dir.join("nope");
    assert_eq!(store.status(&missing).unwrap(), None);
    assert_eq!(store.open(&missing).err().map(|e| e.kind()), Some(ErrorKind::NotFound));
    assert_eq!(store.list(&missing).err().map(|e| e.kind()), Some(ErrorKind::NotFound));
    assert_eq!(store.remove_file(&missing).err().map(|e| e.kind()), Some(ErrorKind::NotFound));
    assert_eq!(store.remove_dir_all(&missing).err().map(|e| e.kind()), Some(ErrorKind::NotFound));
    // A file cannot be created where the parent is missing (the sink's directory gone).
    assert!(store.create(&dir.join("no-dir/f")).is_err());

    let (a, b) = (dir.join("a"), dir.join("b"));
    store.write(&a, b"1").unwrap();
    store.write(&b, b"2").unwrap();
    let e = store.rename_no_replace(&a, &b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(store.read(&b).unwrap(), b"2", "the target is untouched");
    store.rename(&a, &b).unwrap();
    assert_eq!(store.read(&b).unwrap(), b"1");
    assert_eq!(store.status(&a).unwrap(), None);
    assert_eq!(store.rename(&a, &b).err().map(|e| e.kind()), Some(ErrorKind::NotFound), "renaming a missing file");

    store.create_dir_all(&dir.join("d")).unwrap();
    store.write(&dir.join("d/f"), b"x").unwrap();
    assert!(store.remove_empty_dir(&dir.join("d")).is_err(), "a directory with a file is not removed");
    store.remove_file(&dir.join("d/f")).unwrap();
    store.remove_empty_dir(&dir.join("d")).unwrap();
    store.remove_dir_all(&dir).unwrap();
}

fn meta(id: u64, chain: Vec<StateFile>, opstate: StateFile) -> CheckpointMetadata {
    let mut m = CheckpointMetadata::new("job", "jid", id, CheckpointKind::Checkpoint, 0);
    m.operators.insert(
        "count".into(),
        OperatorSnapshot {
            parallelism: 1,
            max_parallelism: 128,
            subtasks: vec![SubtaskSnapshot {
                subtask: 0,
                operator_state: Some(opstate),
                keyed_state: chain,
                key_groups: Some(KeyGroupRange { start: 0, end: 128 }),
                finished: false,
            }],
        },
    );
    m
}

#[test]
fn checkpoints_and_savepoints_live_on_hdfs() {
    let (dir, store) = test_dir("checkpoints");
    let storage = CheckpointStorage::new(&dir, "a job");
    storage.create_dirs().unwrap();
    let mut files = Vec::new();
    for id in 1..=3u64 {
        let shared = storage.new_shared_file(id, "count", 0);
        let mut w = operators_core::state::kvfile::KvFileWriter::create(&shared).unwrap();
        w.append(&[id as u8], Some(b"v")).unwrap();
        let size = w.finish().unwrap();
        files.push(StateFile { path: shared, size });
        let chk = storage.create_checkpoint_dir(id).unwrap();
        let opstate = chk.join("count-0.opstate");
        let size = OperatorStateBlob { state: Some(vec![id as u8]), committables: vec![] }.write(&opstate).unwrap();
        write_metadata(&chk, &meta(id, files.clone(), StateFile { path: opstate, size })).unwrap();
    }
    // Metadata paths are relative: nothing in it names the NameNode.
    let raw = store.read(&storage.checkpoint_dir(3).join("_metadata")).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.contains("../shared/") && !raw.contains("hdfs:"), "{raw}");

    let loaded = read_metadata(storage.root()).unwrap();
    assert_eq!(loaded.metadata.checkpoint_id, 3);
    assert_eq!(loaded.dir, storage.checkpoint_dir(3));
    let chain = &loaded.metadata.operators["count"].subtasks[0].keyed_state;
    assert_eq!(
        chain.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
        files.iter().map(|f| f.path.clone()).collect::<Vec<_>>()
    );
    let blob =
        OperatorStateBlob::read(&loaded.metadata.operators["count"].subtasks[0].operator_state.as_ref().unwrap().path)
            .unwrap();
    assert_eq!(blob.state, Some(vec![3]));

    let sp = dir.join("savepoints/sp-1");
    write_savepoint(&sp, &loaded.metadata).unwrap();
    storage.retain(1, 3).unwrap();
    assert_eq!(store.status(&storage.checkpoint_dir(1)).unwrap(), None, "older checkpoints go");
    assert!(store.status(&storage.checkpoint_dir(3)).unwrap().is_some());
    storage.discard_all().unwrap();
    assert_eq!(store.status(storage.root()).unwrap(), None);

    // The savepoint stands on its own once the checkpoints are gone.
    let saved = read_metadata(&sp).unwrap();
    assert_eq!(saved.metadata.kind, CheckpointKind::Savepoint);
    let chain: Vec<PathBuf> =
        saved.metadata.operators["count"].subtasks[0].keyed_state.iter().map(|f| f.path.clone()).collect();
    let entries: Vec<_> =
        operators_core::state::kvfile::MergedChain::open(&chain).unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(entries, vec![vec![1], vec![2], vec![3]]);
    store.remove_dir_all(&dir).unwrap();
}

#[test]
fn the_default_file_system_is_read_from_the_hadoop_configuration() {
    let (dir, store) = test_dir("default-fs");
    let url = dir.to_str().unwrap();
    let (_, abs) = operators_hdfs::split_url(url).unwrap();
    // `hdfs:///dir` is the same directory when fs.defaultFS names this NameNode, as the
    // HADOOP_CONF_DIR the services script writes does.
    let default = PathBuf::from(format!("hdfs://{abs}"));
    store.write(&dir.join("f"), b"via authority").unwrap();
    assert_eq!(store.read(&default.join("f")).unwrap(), b"via authority");
    let qualified = operators_core::path::store_dir("stream.checkpoint.dir", &format!("hdfs://{abs}")).unwrap();
    assert_eq!(qualified, default);
    store.remove_dir_all(Path::new(&dir)).unwrap();
}
