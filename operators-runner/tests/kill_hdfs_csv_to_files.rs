//! Kill test on HDFS (`testing/services/hdfs.sh`): the runner reads a CSV directory on
//! HDFS into JSON part files on HDFS, with its checkpoints on HDFS, in EXACTLY_ONCE mode,
//! and is SIGKILLed at random moments, 25 times, each time restarted from its newest
//! checkpoint. The committed output must equal the input row for row: no duplicates, no
//! gaps — HDFS's atomic renames carry the file sink's commit and the checkpoint metadata
//! as the local file system's do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[test]
fn sigkill_at_random_moments_on_hdfs_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = support::hdfs_dir("kill-csv");
    let spec = support::kill::Spec {
        name: "kill-hdfs-csv",
        // Slower than the local kill test, whose runs are shorter: a run here commits its
        // first rows about 2.5 s after it starts (below), so 25 runs of 2.5 to 6 s read
        // about half the input at this rate.
        rate: 8_000,
        interval_ms: 200,
        // Longer than on local disk: a checkpoint on this HDFS takes 1.5 to 2 s, most of
        // it in closes the NameNode first refuses (the DataNode has not reported the last
        // block yet) and hdfs-native retries 500 ms later; nothing is committed before
        // the first checkpoint completes.
        delays_ms: 2500..6000,
        kills: 25,
    };
    support::kill::csv_to_files(tmp.path(), &root, &spec);
    operators_core::fs::for_path(&root).unwrap().remove_dir_all(&root).unwrap();
}
