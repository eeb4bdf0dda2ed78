//! Unit tests of the directory source and the format-independent pieces.

use super::source::DirectoryState;
use super::*;
use arrow::datatypes::{DataType, Field};

#[test]
fn schema_guard_names_both_files_and_the_column() {
    let mut g = SchemaGuard::default();
    let a = Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("x", DataType::Utf8, true)]);
    let b = Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("x", DataType::Int32, true)]);
    g.check("/d/a.parquet", &a).unwrap();
    g.check("/d/a2.parquet", &a).unwrap();
    let e = g.check("/d/b.parquet", &b).unwrap_err().to_string();
    assert!(e.contains("/d/b.parquet") && e.contains("/d/a.parquet") && e.contains("column 2"), "{e}");
    assert!(e.contains("`x` Utf8 vs `x` Int32"), "{e}");
}

#[test]
fn state_of_a_single_current_file_still_restores() {
    // The layout before several files could be read at once.
    #[derive(Serialize)]
    struct V1 {
        done: Vec<String>,
        current: Option<(String, FilePosition)>,
        initial: Option<Vec<String>>,
        schema: SchemaGuard,
    }
    let position = FilePosition::Text { offset: 42, line: 3, encoding: "UTF-8".into(), header_done: true };
    let old = V1 {
        done: vec!["a.csv".into()],
        current: Some(("b.csv".into(), position.clone())),
        initial: None,
        schema: SchemaGuard::default(),
    };
    let s = DirectoryState::decode(&postcard::to_allocvec(&old).unwrap()).unwrap();
    assert_eq!(s.done, ["a.csv"]);
    assert_eq!(s.reading, [("b.csv".to_string(), position.clone())]);
    let new = DirectoryState {
        done: vec![],
        reading: vec![("c.csv".into(), position.clone()), ("d.csv".into(), position)],
        initial: Some(vec!["c.csv".into(), "d.csv".into()]),
        schema: SchemaGuard::default(),
    };
    let again = DirectoryState::decode(&postcard::to_allocvec(&new).unwrap()).unwrap();
    assert_eq!(again.reading.len(), 2);
}

#[test]
fn watch_modes_parse() {
    assert_eq!(WatchMode::parse("process_once", 5).unwrap(), WatchMode::ProcessOnce);
    assert!(
        matches!(WatchMode::parse("PROCESS_CONTINUOUSLY", 0), Err(SourceError::Config { key, .. }) if key == "source.watch.interval")
    );
    assert!(WatchMode::parse("sometimes", 5).unwrap_err().to_string().contains("source.watch.type"));
}
