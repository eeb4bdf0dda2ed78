//! Unit tests that need no job: format names, committing parts, removing stale files.

use crate::error::SinkError;

use super::config::FileFormat;
use super::sink::{PendingPart, clean_stale, commit_parts};

#[test]
fn formats_parse() {
    assert_eq!(FileFormat::parse("sink.format", "JSON").unwrap(), FileFormat::JsonLines);
    assert_eq!(FileFormat::parse("sink.format", "parquet").unwrap(), FileFormat::Parquet);
    assert!(FileFormat::parse("sink.format", "xml").unwrap_err().to_string().contains("sink.format"));
}

#[test]
fn commit_is_idempotent_and_detects_lost_parts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".part-x-0-0.json.inprogress"), b"{}\n").unwrap();
    let parts = vec![PendingPart { temp: ".part-x-0-0.json.inprogress".into(), final_name: "part-x-0-0.json".into() }];
    let fs = operators_core::fs::LocalFileSystem;
    commit_parts(&fs, dir.path(), &parts).unwrap();
    commit_parts(&fs, dir.path(), &parts).unwrap();
    assert!(dir.path().join("part-x-0-0.json").exists());
    std::fs::remove_file(dir.path().join("part-x-0-0.json")).unwrap();
    assert!(matches!(commit_parts(&fs, dir.path(), &parts), Err(SinkError::LostPart { .. })));
}

#[test]
fn stale_cleanup_keeps_the_current_run() {
    let dir = tempfile::tempdir().unwrap();
    for n in [
        ".part-old1a0-0-0.json.inprogress",
        ".part-cur1a2-1-3.json.inprogress",
        "part-old1a0-0-1.json",
        ".other",
        ".probe-12-0",
    ] {
        std::fs::write(dir.path().join(n), b"").unwrap();
    }
    assert_eq!(clean_stale(&operators_core::fs::LocalFileSystem, dir.path(), "part", "cur1a2").unwrap(), 2);
    assert!(!dir.path().join(".probe-12-0").exists());
    assert!(dir.path().join(".part-cur1a2-1-3.json.inprogress").exists());
    assert!(dir.path().join("part-old1a0-0-1.json").exists());
}
