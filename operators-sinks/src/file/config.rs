//! The settings: the format of part files.

use crate::error::SinkError;

/// The format of part files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line.
    JsonLines,
    /// CSV with a header line in every part.
    Csv,
    /// Parquet (snappy).
    Parquet,
}

impl FileFormat {
    /// Parses `json`, `csv` or `parquet`.
    pub fn parse(key: &str, value: &str) -> std::result::Result<Self, SinkError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "ndjson" => Ok(FileFormat::JsonLines),
            "csv" => Ok(FileFormat::Csv),
            "parquet" => Ok(FileFormat::Parquet),
            other => Err(SinkError::config(key, format!("unknown format `{other}`; expected json, csv or parquet"))),
        }
    }

    pub(super) fn extension(self) -> &'static str {
        match self {
            FileFormat::JsonLines => "json",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}
