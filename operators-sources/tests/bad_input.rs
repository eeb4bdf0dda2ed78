//! The bad-input corpus in `tests/bad_input`: every file is read with the dead-letter
//! policy (the bad records must come out exactly as `expected.json` says, with file, line
//! and byte offset, and rows read = rows emitted + rows dead-lettered) and with the fail
//! policy (the job must fail naming the first bad record).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use operators_core::operator::BadRecordPolicy;
use operators_core::schema::parse_schema;
use operators_sources::file::text::{TextFormat, parse_charset};
use serde::Deserialize;
use support::read_dir;

#[derive(Debug, Deserialize)]
struct Expected {
    line: u64,
    offset: u64,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Case {
    file: String,
    schema: String,
    charset: String,
    header: bool,
    good: usize,
    dead: Vec<Expected>,
    note: String,
}

fn corpus() -> (PathBuf, Vec<Case>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("bad_input");
    let cases = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    (dir, cases)
}

fn format(case: &Case, policy: BadRecordPolicy) -> TextFormat {
    TextFormat::csv()
        .with_schema(parse_schema(&case.schema).unwrap())
        .with_charset(parse_charset("source.charset", &case.charset).unwrap())
        .with_header(case.header)
        .with_bad_records(policy)
}

#[tokio::test]
async fn dead_letters_match_the_corpus() {
    dead_letters_match_the_corpus_in_chunks_of(None).await;
}

/// Lines and offsets must not depend on where the reads cut the file: the reader
/// extends one text segment over consecutive chunks and counts its lines only when
/// asked, and a bad line in between starts a new segment.
#[tokio::test]
async fn dead_letters_match_the_corpus_in_small_chunks() {
    for chunk in [64, 97, 1000] {
        dead_letters_match_the_corpus_in_chunks_of(Some(chunk)).await;
    }
}

async fn dead_letters_match_the_corpus_in_chunks_of(chunk: Option<usize>) {
    let (dir, cases) = corpus();
    assert!(cases.len() >= 5);
    for case in &cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join(&case.file), tmp.path().join(&case.file)).unwrap();
        let mut format = format(case, BadRecordPolicy::DeadLetter);
        if let Some(bytes) = chunk {
            format = format.with_chunk_bytes(bytes);
        }
        let read = read_dir(tmp.path(), format, 1).await.unwrap_or_else(|e| panic!("{} ({chunk:?}): {e}", case.file));
        let dead = read.dead_letters();
        assert_eq!(read.num_rows(), case.good, "{} ({}): good rows", case.file, case.note);
        assert_eq!(dead.len(), case.dead.len(), "{}: dead letters {dead:?}", case.file);
        for (got, want) in dead.iter().zip(&case.dead) {
            assert_eq!(got.0, case.file);
            assert_eq!(got.1, Some(want.line), "{} ({chunk:?}): line of {got:?}", case.file);
            assert_eq!(got.2, Some(want.offset), "{} ({chunk:?}): offset of {got:?}", case.file);
            assert!(got.3.contains(&want.reason), "{}: reason `{}` lacks `{}`", case.file, got.3, want.reason);
            assert!(!got.4.is_empty(), "{}: the record text is kept", case.file);
        }
        // Counts add up: every data record is either emitted or dead-lettered.
        let records =
            std::fs::read(dir.join(&case.file)).unwrap().split(|b| *b == b'\n').filter(|l| !l.is_empty()).count()
                - usize::from(case.header);
        assert_eq!(read.num_rows() + dead.len(), records, "{}", case.file);
    }
}

#[tokio::test]
async fn the_fail_policy_names_the_first_bad_record() {
    let (dir, cases) = corpus();
    for case in &cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join(&case.file), tmp.path().join(&case.file)).unwrap();
        let err = read_dir(tmp.path(), format(case, BadRecordPolicy::Fail), 1).await.unwrap_err().to_string();
        let first = &case.dead[0];
        let location = format!("{}:{} (byte {})", case.file, first.line, first.offset);
        assert!(err.contains(&location), "{}: `{err}` lacks `{location}`", case.file);
        assert!(err.contains(&first.reason), "{}: `{err}` lacks `{}`", case.file, first.reason);
    }
}

/// A stray quote in the middle of a large file, read in small chunks: with the default
/// limit the end of the file shows the quote was never closed, with a small one the field
/// outgrows the limit first. Either way only the quote's own line is lost (dead-lettered
/// with its file, line and byte), every row after it is read, and the fail policy names
/// the same place.
#[tokio::test]
async fn a_stray_quote_in_a_large_file_loses_only_its_line() {
    let (rows, bad) = (200_000usize, 100_000usize);
    let mut text = String::from("id,name\n");
    let mut bad_offset = 0;
    for i in 0..rows {
        if i == bad {
            bad_offset = text.len() + format!("{i},").len();
            text.push_str(&format!("{i},\"stray\n"));
        } else {
            text.push_str(&format!("{i},n{i}\n"));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("big.csv"), &text).unwrap();
    let line = bad as u64 + 2;
    for (max, reason) in
        [(None, "is never closed".to_string()), (Some(64usize << 10), format!("still open after {} bytes", 64 << 10))]
    {
        let format = |policy| {
            let f = TextFormat::csv()
                .with_schema(parse_schema("struct<id:BigInt,name:String>").unwrap())
                .with_header(true)
                .with_chunk_bytes(16 << 10)
                .with_bad_records(policy);
            match max {
                Some(m) => f.with_max_field_bytes(std::num::NonZeroUsize::new(m).unwrap()),
                None => f,
            }
        };
        let read = read_dir(tmp.path(), format(BadRecordPolicy::DeadLetter), 1).await.unwrap();
        let ids: Vec<usize> = read.strings().iter().map(|r| r[0].parse().unwrap()).collect();
        assert_eq!(ids, (0..rows).filter(|&i| i != bad).collect::<Vec<_>>(), "limit {max:?}");
        let dead = read.dead_letters();
        assert_eq!(dead.len(), 1, "limit {max:?}: {dead:?}");
        assert_eq!((dead[0].1, dead[0].2), (Some(line), Some(bad_offset as u64)), "limit {max:?}");
        assert!(dead[0].3.contains(&reason), "limit {max:?}: `{}` lacks `{reason}`", dead[0].3);
        assert_eq!(dead[0].4, format!("{bad},\"stray"), "limit {max:?}");

        let err = read_dir(tmp.path(), format(BadRecordPolicy::Fail), 1).await.unwrap_err().to_string();
        let location = format!("big.csv:{line} (byte {bad_offset})");
        assert!(err.contains(&location) && err.contains(&reason), "limit {max:?}: `{err}` lacks `{location}`");
    }
}
