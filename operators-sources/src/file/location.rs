//! Where a directory source reads: a local directory or a `file://` URL, behind
//! `object_store` so that other stores (S3, HDFS...) plug in without touching the readers.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::error::SourceError;

/// A directory in an object store.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The directory inside the store.
    pub dir: Path,
    /// The directory as the user wrote it, for messages.
    pub display: String,
    /// The directory on the local file system, when the store is one: readers then keep
    /// the file open and read into their own buffers (a `get_range` on the local store
    /// opens the file again and allocates a fresh buffer per range, and the page faults
    /// of those buffers were a tenth of a CSV job's CPU).
    local: Option<std::path::PathBuf>,
}

impl Location {
    /// Parses `source.path`: a local path or a `file://` URL, by the rule every
    /// directory setting follows ([`operators_core::path::local_dir`]). Other schemes are
    /// refused with a message naming the key, the value and what is supported. Reads the
    /// directory's metadata; changes nothing.
    pub fn parse(key: &str, value: &str) -> Result<Self, SourceError> {
        let dir = operators_core::path::local_dir(key, value).map_err(|e| match e {
            operators_core::Error::Config { key, message } => SourceError::config(key, message),
            other => SourceError::config(key, other.to_string()),
        })?;
        let local = dir.to_string_lossy().into_owned();
        let path = dir.as_path();
        let meta = std::fs::metadata(path)
            .map_err(|e| SourceError::config(key, format!("cannot read directory `{local}`: {e}")))?;
        if !meta.is_dir() {
            return Err(SourceError::config(key, format!("`{local}` is not a directory")));
        }
        let store = LocalFileSystem::new_with_prefix(path)
            .map_err(|e| SourceError::config(key, format!("cannot open directory `{local}`: {e}")))?;
        Ok(Self { store: Arc::new(store), dir: Path::default(), local: Some(path.to_path_buf()), display: local })
    }

    /// A location in an arbitrary store (S3, memory, ...).
    pub fn in_store(store: Arc<dyn ObjectStore>, dir: Path, display: impl Into<String>) -> Self {
        Self { store, dir, display: display.into(), local: None }
    }

    /// The local path of a file in this directory, when the directory is local.
    pub fn local_file(&self, name: &str) -> Option<std::path::PathBuf> {
        self.local.as_ref().map(|dir| dir.join(name))
    }

    /// The display path of a file in this directory.
    pub fn file_display(&self, name: &str) -> String {
        format!("{}/{name}", self.display.trim_end_matches('/'))
    }

    /// The store path of a file in this directory.
    pub fn file_path(&self, name: &str) -> Path {
        self.dir.clone().join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_str().unwrap();
        assert_eq!(Location::parse("source.path", p).unwrap().display, p);
        assert_eq!(Location::parse("source.path", &format!("file://{p}")).unwrap().display, p);
    }

    #[test]
    fn unsupported_and_missing_paths_name_the_key() {
        let e = Location::parse("source.path", "hdfs:///user/x").unwrap_err().to_string();
        assert!(e.contains("source.path") && e.contains("hdfs://"), "{e}");
        for value in ["s3://bucket/x", "gs://bucket/x", "hdfs:/user/x"] {
            let e = Location::parse("source.path", value).unwrap_err().to_string();
            assert!(e.contains("`source.path`") && e.contains(value) && e.contains("file://"), "{e}");
        }
        let e = Location::parse("source.path", "/no/such/dir/x").unwrap_err().to_string();
        assert!(e.contains("/no/such/dir/x"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = Location::parse("source.path", file.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}
