//! Unit tests of the stdout sink's writing; `operators-runner/tests` runs it end to end
//! (`sink.type=stdout`).

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use operators_core::Error;

use super::sink::write_lines;

fn batch() -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec![Some("a\"b"), None]))],
    )
    .unwrap()
}

/// Counts writes, to show a batch goes out in one.
#[derive(Default)]
struct Recorder {
    bytes: Vec<u8>,
    writes: usize,
    flushes: usize,
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes += 1;
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

#[test]
fn a_batch_is_one_write_of_json_lines() {
    let mut out = Recorder::default();
    write_lines(&batch(), &mut out).unwrap();
    let text = String::from_utf8(out.bytes).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, vec![serde_json::json!({"id": 1, "name": "a\"b"}), serde_json::json!({"id": 2, "name": null})]);
    assert!(text.ends_with('\n'));
    assert_eq!((out.writes, out.flushes), (1, 1));
}

/// Standard output closed under the job (a pipe whose reader ended) fails the write,
/// naming it; nothing is reported written.
#[test]
fn a_closed_output_is_an_io_error_naming_it() {
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    match write_lines(&batch(), &mut Closed) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("<stdout>"), "{e}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
