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
    /// The client and absolute path of a directory on HDFS: object_store lists a missing
    /// directory as an empty one, and a source must not read nothing without saying so.
    #[cfg(feature = "hdfs")]
    hdfs: Option<(hdfs_native::Client, String)>,
}

impl Location {
    /// Parses `source.path`: a local path or a `file://` URL, by the rule every
    /// directory setting follows ([`operators_core::path::local_dir`]). Other schemes are
    /// refused with a message naming the key, the value and what is supported. Reads the
    /// directory's metadata; changes nothing.
    ///
    /// With the `hdfs` feature, `hdfs://namenode:port/dir` is a directory on that HDFS,
    /// and `hdfs:///dir` one on the default file system (`fs.defaultFS` of the Hadoop
    /// configuration in `HADOOP_CONF_DIR`, as Hadoop's own clients read it). The HDFS user
    /// is `HADOOP_USER_NAME` or the process's. Nothing is read from HDFS here: a missing
    /// directory is reported when the source first lists it.
    pub fn parse(key: &str, value: &str) -> Result<Self, SourceError> {
        if operators_core::path::url_scheme(value).is_some_and(|s| s.eq_ignore_ascii_case("hdfs")) {
            return Self::hdfs(key, value);
        }
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
        Ok(Self { local: Some(path.to_path_buf()), ..Self::in_store(Arc::new(store), Path::default(), local) })
    }

    #[cfg(feature = "hdfs")]
    fn hdfs(key: &str, value: &str) -> Result<Self, SourceError> {
        let Some((authority, path)) = operators_hdfs::split_url(value) else {
            return Err(SourceError::config(
                key,
                format!(
                    "`{value}` is not an HDFS URL: write `hdfs://namenode:port/dir`, or `hdfs:///dir` for `fs.defaultFS`"
                ),
            ));
        };
        // The process's client of that NameNode, shared with checkpoints and file sinks.
        let client = operators_hdfs::client(authority)
            .map_err(|e| SourceError::config(key, format!("cannot use HDFS for `{value}`: {e}")))?;
        let store = hdfs_native_object_store::HdfsObjectStore::new(client.clone());
        let dir = Path::from(path);
        let absolute = format!("/{dir}");
        Ok(Self { hdfs: Some((client, absolute)), ..Self::in_store(Arc::new(store), dir, value) })
    }

    /// Checks that the directory exists, where the store can tell (HDFS; a local directory
    /// is checked by [`parse`](Self::parse)). `key` names the parameter in the error.
    pub async fn check_directory(&self, key: &str) -> Result<(), SourceError> {
        #[cfg(feature = "hdfs")]
        if let Some((client, path)) = &self.hdfs {
            return match client.get_file_info(path).await {
                Ok(status) if status.isdir => Ok(()),
                Ok(_) => Err(SourceError::config(key, format!("`{}` is a file, not a directory", self.display))),
                Err(hdfs_native::HdfsError::FileNotFound(_)) => {
                    Err(SourceError::config(key, format!("the directory `{}` does not exist", self.display)))
                }
                // The NameNode unreachable or failing: worth a retry (a restart), unlike
                // a directory that is not there.
                Err(e) => Err(SourceError::Storage {
                    path: self.display.clone(),
                    source: object_store::Error::Generic { store: "HDFS", source: Box::new(e) },
                }),
            };
        }
        let _ = key;
        Ok(())
    }

    #[cfg(not(feature = "hdfs"))]
    fn hdfs(key: &str, value: &str) -> Result<Self, SourceError> {
        Err(SourceError::config(
            key,
            format!(
                "`{value}` is on HDFS, and this build has no HDFS support: build with the `hdfs` feature of operators-sources"
            ),
        ))
    }

    /// A location in an arbitrary store (S3, memory, ...).
    pub fn in_store(store: Arc<dyn ObjectStore>, dir: Path, display: impl Into<String>) -> Self {
        Self {
            store,
            dir,
            display: display.into(),
            local: None,
            #[cfg(feature = "hdfs")]
            hdfs: None,
        }
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
        for value in ["s3://bucket/x", "gs://bucket/x"] {
            let e = Location::parse("source.path", value).unwrap_err().to_string();
            assert!(e.contains("`source.path`") && e.contains(value) && e.contains("file://"), "{e}");
        }
        // `hdfs:` without `//`: with the `hdfs` feature, the form to write; without it, that
        // the build has no HDFS.
        let e = Location::parse("source.path", "hdfs:/user/x").unwrap_err().to_string();
        assert!(e.contains("source.path") && e.contains("hdfs:/user/x") && e.contains("hdfs"), "{e}");
        let e = Location::parse("source.path", "/no/such/dir/x").unwrap_err().to_string();
        assert!(e.contains("/no/such/dir/x"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = Location::parse("source.path", file.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}
