//! HDFS for the operators runtime: checkpoints, savepoints and file sinks on
//! `hdfs://namenode:port/dir`, or on `hdfs:///dir` of the default file system
//! (`fs.defaultFS` of the Hadoop configuration under `HADOOP_CONF_DIR`, as Hadoop's own
//! clients read it).
//!
//! [`register`] makes `hdfs://` a [`FileSystem`] of the process
//! ([`operators_core::fs::register`]); from then on a checkpoint directory, a savepoint
//! target or a file sink may be on HDFS:
//!
//! ```no_run
//! use operators_core::JobConfig;
//! use operators_core::checkpoint::CheckpointConfig;
//!
//! operators_hdfs::register()?;
//! let config = JobConfig::new("ingest")
//!     .with_checkpointing(CheckpointConfig::new("hdfs://namenode:9000/tmp/csp/flink/checkpoints"));
//! # Ok::<(), operators_core::Error>(())
//! ```
//!
//! The client is [hdfs-native](https://docs.rs/hdfs-native), a Rust implementation of
//! HDFS's RPC and data-transfer protocols: no JVM, no libhdfs. The HDFS user is
//! `HADOOP_USER_NAME`, else the process's user; on a Kerberos-secured cluster
//! (`hadoop.security.authentication kerberos` in `core-site.xml`) it authenticates with
//! the ticket cache of `kinit`, through the system's `libgssapi_krb5`, loaded when first
//! needed.
//!
//! Guarantees: a file is complete and durable once [`FileWrite::finish`] returns (the
//! close that completes its last block on every DataNode of its pipeline); renames are
//! HDFS's atomic renames, on which the checkpoint metadata and the file sink's commit
//! rely. Each call waits at most the file system's timeout (two minutes unless set): a
//! NameNode that does not answer fails the checkpoint or the commit, which the restart
//! strategy then retries, instead of hanging a task forever.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hdfs_native::file::{FileReader, FileWriter};
use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};
use operators_core::fs::{DirEntry, FileStatus, FileSystem, FileWrite, OpenFile};

/// Bytes sent to the DataNodes in one call, and read from them in one call.
const CHUNK: usize = 4 << 20;

/// The default time one call to HDFS may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Registers [`HdfsFileSystem`] for `hdfs://` in this process, with [`DEFAULT_TIMEOUT`].
pub fn register() -> operators_core::Result<()> {
    operators_core::fs::register("hdfs", Arc::new(HdfsFileSystem::default()))
}

/// The runtime HDFS clients do their I/O on: one for the process, never dropped. Left to
/// itself, a client made outside a runtime makes its own and drops it with the client —
/// from inside a job's runtime, where tokio refuses to drop a runtime (a panic when the
/// job ends).
pub fn io_runtime() -> Result<tokio::runtime::Handle, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hdfs-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match rt {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(format!("cannot start the HDFS client's I/O threads: {e}")),
    }
}

/// The NameNode authority (empty for the default file system) and the absolute path of
/// an `hdfs://` URL; `None` when it is not one (`hdfs:/x` has no authority part).
///
/// ```
/// assert_eq!(operators_hdfs::split_url("hdfs://nn:9000/a/b"), Some(("nn:9000", "/a/b")));
/// assert_eq!(operators_hdfs::split_url("hdfs:///a"), Some(("", "/a")));
/// assert_eq!(operators_hdfs::split_url("hdfs://nn"), Some(("nn", "/")));
/// assert_eq!(operators_hdfs::split_url("hdfs:/a"), None);
/// ```
pub fn split_url(value: &str) -> Option<(&str, &str)> {
    let rest = value.get(..7).filter(|p| p.eq_ignore_ascii_case("hdfs://")).map(|_| &value[7..])?;
    Some(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// The client of the NameNode (or name service) `authority`, `""` for the default file
/// system; one per authority for the process, since a client holds its connections and
/// renews the leases of the files it writes.
pub fn client(authority: &str) -> Result<Client, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Client>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients.lock().map_err(|_| "the HDFS client cache is poisoned".to_string())?;
    if let Some(c) = clients.get(authority) {
        return Ok(c.clone());
    }
    let mut builder = ClientBuilder::new().with_io_runtime(io_runtime()?);
    if !authority.is_empty() {
        builder = builder.with_url(format!("hdfs://{authority}"));
    }
    let client = builder.build().map_err(|e| {
        if authority.is_empty() {
            format!(
                "`hdfs:///` names the default file system, and none is configured (set `fs.defaultFS` in \
                 core-site.xml under `HADOOP_CONF_DIR`, or write the NameNode in the URL): {e}"
            )
        } else {
            format!("cannot make an HDFS client for `hdfs://{authority}`: {e}")
        }
    })?;
    clients.insert(authority.to_string(), client.clone());
    Ok(client)
}

/// HDFS as an [`operators_core::fs::FileSystem`]: locations are `hdfs://` URLs held as
/// paths.
#[derive(Debug, Clone)]
pub struct HdfsFileSystem {
    timeout: Duration,
}

impl Default for HdfsFileSystem {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT }
    }
}

impl HdfsFileSystem {
    /// Sets the time one call may take before it fails with
    /// [`io::ErrorKind::TimedOut`]. Zero is refused.
    pub fn with_timeout(self, timeout: Duration) -> operators_core::Result<Self> {
        if timeout.is_zero() {
            return Err(operators_core::Error::config("hdfs timeout", "must be greater than 0 ms"));
        }
        Ok(Self { timeout })
    }

    /// The client and absolute path of location `path`.
    fn locate(&self, path: &Path) -> io::Result<(Client, String)> {
        let text = path.to_str().ok_or_else(|| invalid(path, "is not UTF-8"))?;
        let (authority, abs) = split_url(text).ok_or_else(|| {
            invalid(path, "is not an HDFS URL: write `hdfs://namenode:port/dir`, or `hdfs:///dir` for `fs.defaultFS`")
        })?;
        let client = client(authority).map_err(io::Error::other)?;
        Ok((client, abs.to_string()))
    }

    /// Runs `op` on the I/O runtime and waits for it, at most the timeout.
    fn run<T: Send + 'static>(
        &self,
        what: &str,
        path: &str,
        op: impl Future<Output = Result<T, HdfsError>> + Send + 'static,
    ) -> io::Result<T> {
        wait(self.timeout, what, path, op)?.map_err(to_io)
    }
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("`{}` {why}", path.display()))
}

/// Runs `op` on the I/O runtime and waits for its result, at most `timeout`. Works from
/// any thread, a job's runtime threads included (which is why it is not `block_on`).
fn wait<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    path: &str,
    op: impl Future<Output = T> + Send + 'static,
) -> io::Result<T> {
    let rt = io_runtime().map_err(io::Error::other)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(op.await);
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => Ok(v),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            // Not left to finish unseen: a file it would create after this error would
            // be a file nobody closes, locked to this client for the lease's hour.
            task.abort();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("HDFS did not answer {what} `{path}` within {} s", timeout.as_secs_f64()),
            ))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(io::Error::other(format!("the HDFS call {what} `{path}` ended without an answer (it panicked)")))
        }
    }
}

/// An HDFS error as an I/O error of the kind callers test for.
fn to_io(e: HdfsError) -> io::Error {
    use io::ErrorKind as K;
    let kind = match &e {
        HdfsError::IOError(inner) => return io::Error::new(inner.kind(), e.to_string()),
        HdfsError::FileNotFound(_) => K::NotFound,
        // hdfs-native reports a file another client is writing (its lease held) as one
        // that exists; that one passes when the lease is recovered or expires.
        HdfsError::AlreadyExists(m) if m.contains("lease") || m.contains("being created") => K::ResourceBusy,
        HdfsError::AlreadyExists(_) => K::AlreadyExists,
        HdfsError::IsADirectoryError(_) => K::IsADirectory,
        HdfsError::InvalidPath(_) | HdfsError::InvalidArgument(_) => K::InvalidInput,
        HdfsError::RPCError(class, _) | HdfsError::FatalRPCError(class, _) => match class.rsplit('.').next() {
            Some("FileNotFoundException") => K::NotFound,
            Some("FileAlreadyExistsException") => K::AlreadyExists,
            Some("PathIsNotEmptyDirectoryException") => K::DirectoryNotEmpty,
            Some("ParentNotDirectoryException") => K::NotADirectory,
            Some("AccessControlException") => K::PermissionDenied,
            // Not `Interrupted`: `write_all` and `read_to_end` retry that kind at once.
            Some("SafeModeException" | "RetriableException" | "StandbyException") => K::ResourceBusy,
            _ => K::Other,
        },
        _ => K::Other,
    };
    io::Error::new(kind, e.to_string())
}

impl FileSystem for HdfsFileSystem {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileWrite>> {
        self.create_with(path, 0o644)
    }

    fn create_private(&self, path: &Path) -> io::Result<Box<dyn FileWrite>> {
        // A replaced file is a new inode on HDFS: it takes these permissions, not the old.
        self.create_with(path, 0o600)
    }

    fn open(&self, path: &Path) -> io::Result<OpenFile> {
        let (client, abs) = self.locate(path)?;
        let p = abs.clone();
        let reader = self.run("opening", &abs, async move { client.read(&p).await })?;
        let len = reader.file_length() as u64;
        Ok(OpenFile {
            reader: Box::new(HdfsRead { timeout: self.timeout, path: abs, reader: Some(reader), buf: Bytes::new() }),
            len,
        })
    }

    fn status(&self, path: &Path) -> io::Result<Option<FileStatus>> {
        let (client, abs) = self.locate(path)?;
        let p = abs.clone();
        match self.run("reading the status of", &abs, async move { client.get_file_info(&p).await }) {
            Ok(s) => Ok(Some(FileStatus { is_dir: s.isdir, len: if s.isdir { 0 } else { s.length as u64 } })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let (client, abs) = self.locate(dir)?;
        let p = abs.clone();
        let statuses = self.run("listing", &abs, async move { client.list_status(&p, false).await })?;
        Ok(statuses
            .into_iter()
            .filter_map(|s| {
                let name = s.path.rsplit('/').next().filter(|n| !n.is_empty())?.to_string();
                Some(DirEntry { path: dir.join(name), is_dir: s.isdir, len: if s.isdir { 0 } else { s.length as u64 } })
            })
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let (client, abs) = self.locate(dir)?;
        let p = abs.clone();
        self.run("creating the directory", &abs, async move { client.mkdirs(&p, 0o755, true).await })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_with(from, to, true)
    }

    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_with(from, to, false)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.delete(path, false)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.delete(dir, true)
    }

    fn remove_empty_dir(&self, dir: &Path) -> io::Result<()> {
        self.delete(dir, false)
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // The NameNode has logged a rename or a creation durably when it answers.
        Ok(())
    }

    fn qualify(&self, url: &str) -> Result<PathBuf, String> {
        let (authority, _) = split_url(url)
            .ok_or("not an HDFS URL: write `hdfs://namenode:port/dir`, or `hdfs:///dir` for `fs.defaultFS`")?;
        // Makes the client now, so that a missing default file system is reported with
        // the setting that needs it rather than at the first checkpoint.
        client(authority)?;
        Ok(PathBuf::from(url))
    }
}

impl HdfsFileSystem {
    fn create_with(&self, path: &Path, permission: u32) -> io::Result<Box<dyn FileWrite>> {
        let (client, abs) = self.locate(path)?;
        let p = abs.clone();
        let options = WriteOptions::default().create_parent(false).permission(permission);
        // hdfs-native's `overwrite` fails on a file that is not there, so a new file is
        // tried first and a replacement second.
        let writer = self.run("creating", &abs, async move {
            match client.create(&p, options.clone()).await {
                Err(HdfsError::AlreadyExists(_)) => client.create(&p, options.overwrite(true)).await,
                other => other,
            }
        })?;
        Ok(Box::new(HdfsWrite { timeout: self.timeout, path: abs, writer: Some(writer), buf: Vec::new() }))
    }

    fn rename_with(&self, from: &Path, to: &Path, overwrite: bool) -> io::Result<()> {
        let authority = |p: &Path| p.to_str().and_then(split_url).map(|(a, _)| a.to_string());
        if authority(from) != authority(to) {
            return Err(invalid(to, &format!("is on another file system than `{}`", from.display())));
        }
        let (client, src) = self.locate(from)?;
        let (_, dst) = self.locate(to)?;
        let s = src.clone();
        self.run("renaming", &src, async move { client.rename(&s, &dst, overwrite).await })
    }

    fn delete(&self, path: &Path, recursive: bool) -> io::Result<()> {
        let (client, abs) = self.locate(path)?;
        let p = abs.clone();
        let deleted = self.run("deleting", &abs, async move { client.delete(&p, recursive).await })?;
        if deleted {
            Ok(())
        } else {
            // HDFS answers `false` for a path that is not there.
            Err(io::Error::new(io::ErrorKind::NotFound, format!("`{abs}` does not exist")))
        }
    }
}

/// A file being written: bytes are sent to the DataNodes a chunk at a time.
struct HdfsWrite {
    timeout: Duration,
    path: String,
    writer: Option<FileWriter>,
    buf: Vec<u8>,
}

impl HdfsWrite {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut writer =
            self.writer.take().ok_or_else(|| io::Error::other(format!("`{}`: an earlier write failed", self.path)))?;
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        let (writer, result) = wait(self.timeout, "writing", &self.path, async move {
            let r = writer.write(bytes).await;
            (writer, r)
        })?;
        result.map_err(to_io)?;
        self.writer = Some(writer);
        Ok(())
    }
}

impl Write for HdfsWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing is readable before the close completes the file; sending a chunk early
        // would make no byte of it durable.
        Ok(())
    }
}

impl FileWrite for HdfsWrite {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.send()?;
        let mut writer =
            self.writer.take().ok_or_else(|| io::Error::other(format!("`{}`: an earlier write failed", self.path)))?;
        let result = wait(self.timeout, "closing", &self.path, async move { writer.close().await })?;
        result.map_err(to_io)
    }
}

/// A file being read, a chunk at a time.
struct HdfsRead {
    timeout: Duration,
    path: String,
    reader: Option<FileReader>,
    buf: Bytes,
}

impl Read for HdfsRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            let mut reader = self
                .reader
                .take()
                .ok_or_else(|| io::Error::other(format!("`{}`: an earlier read failed", self.path)))?;
            if reader.remaining() == 0 {
                self.reader = Some(reader);
                return Ok(0);
            }
            let (reader, result) = wait(self.timeout, "reading", &self.path, async move {
                let r = reader.read(CHUNK).await;
                (reader, r)
            })?;
            self.buf = result.map_err(to_io)?;
            self.reader = Some(reader);
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_kinds_callers_test_for() {
        let class = |c: &str| to_io(HdfsError::RPCError(c.into(), "m".into())).kind();
        assert_eq!(class("java.io.FileNotFoundException"), io::ErrorKind::NotFound);
        assert_eq!(class("org.apache.hadoop.fs.FileAlreadyExistsException"), io::ErrorKind::AlreadyExists);
        assert_eq!(class("org.apache.hadoop.fs.PathIsNotEmptyDirectoryException"), io::ErrorKind::DirectoryNotEmpty);
        assert_eq!(to_io(HdfsError::FileNotFound("/x".into())).kind(), io::ErrorKind::NotFound);
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(to_io(HdfsError::IOError(refused)).kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_location_that_is_not_an_hdfs_url_is_refused_naming_it() {
        let fs = HdfsFileSystem::default();
        let e = fs.status(Path::new("hdfs:/x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("hdfs:/x"), "{e}");
        assert!(fs.clone().with_timeout(Duration::ZERO).is_err());
    }
}
