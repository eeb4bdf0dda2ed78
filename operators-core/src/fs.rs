//! File systems for checkpoints, savepoints and file sinks: the local disk, and any
//! store registered under a URL scheme (`hdfs://` by the `operators-hdfs` crate).
//!
//! A location is a [`Path`] either way: a local path, or a URL such as
//! `hdfs://namenode:9000/ck/job` held as a path, so that `join`, `parent` and
//! `file_name` work the same on both. [`for_path`] finds the file system of a location;
//! [`qualify`] turns a setting's value into the location it names (`hdfs:///x` into
//! `hdfs://<default namenode>/x`, say) or refuses it, naming the setting.
//!
//! The interface is synchronous, as the code that writes checkpoints is: a remote store
//! blocks the calling thread while it waits, as the local disk does.
//!
//! ```
//! use std::io::{Read, Write};
//! use operators_core::fs;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("hello.txt");
//! let store = fs::for_path(&path)?;
//! let mut w = store.create(&path)?;
//! w.write_all(b"hello")?;
//! w.finish()?; // durable from here on
//! let mut text = String::new();
//! store.open(&path)?.reader.read_to_string(&mut text)?;
//! assert_eq!(text, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use crate::error::{Error, Result};

/// A file open for writing. Nothing written is guaranteed to be stored until
/// [`FileWrite::finish`] returns.
pub trait FileWrite: Write + Send {
    /// Flushes and makes the file durable (fsync on a local disk, the close that
    /// completes the last block on HDFS).
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// A file open for reading, and its length.
pub struct OpenFile {
    /// The content, from the start.
    pub reader: Box<dyn Read + Send>,
    /// Length in bytes when it was opened.
    pub len: u64,
}

/// What a file system says of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStatus {
    /// A directory, not a file.
    pub is_dir: bool,
    /// Length in bytes (0 for a directory).
    pub len: u64,
}

/// An entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's full location (the listed directory joined with its name).
    pub path: PathBuf,
    /// A directory, not a file.
    pub is_dir: bool,
    /// Length in bytes (0 for a directory).
    pub len: u64,
}

impl DirEntry {
    /// The entry's name in its directory.
    pub fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    }
}

/// The operations checkpoints, savepoints and file sinks need of a store.
///
/// Errors keep their [`io::ErrorKind`]: a missing path is [`io::ErrorKind::NotFound`],
/// which callers rely on (a checkpoint directory not created yet, a rename already done).
pub trait FileSystem: Send + Sync + Debug {
    /// Creates `path` (replacing a file there) for writing. The parent must exist.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileWrite>>;

    /// Creates `path` (replacing a file there) for writing, readable and writable by its
    /// owner only (0600): for records that hold secrets, such as a job server's
    /// submissions. The parent must exist.
    fn create_private(&self, path: &Path) -> io::Result<Box<dyn FileWrite>>;

    /// Opens `path` for reading.
    fn open(&self, path: &Path) -> io::Result<OpenFile>;

    /// The status of `path`, or `None` if nothing is there.
    fn status(&self, path: &Path) -> io::Result<Option<FileStatus>>;

    /// The entries of directory `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;

    /// Creates `dir` and any missing parent.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Renames `from` to `to` atomically, replacing a file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Renames `from` to `to` atomically, failing with
    /// [`io::ErrorKind::AlreadyExists`] if `to` exists.
    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes the directory `dir` and everything under it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Removes the directory `dir` if it is empty.
    fn remove_empty_dir(&self, dir: &Path) -> io::Result<()>;

    /// Makes the renames and creations in `dir` durable (fsync of the directory on a
    /// local disk; a store whose metadata operations are durable when they return does
    /// nothing).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Turns the location `url` (of this file system's scheme) into its canonical form,
    /// or says why it is not one: `hdfs:///x` becomes `hdfs://<namenode>/x`.
    fn qualify(&self, url: &str) -> std::result::Result<PathBuf, String> {
        Ok(PathBuf::from(url))
    }

    /// Copies the file `from` to `to` (replacing it) and makes the copy durable.
    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64> {
        let mut input = self.open(from)?;
        let mut out = self.create(to)?;
        let n = io::copy(&mut input.reader, &mut out)?;
        out.finish()?;
        Ok(n)
    }

    /// Writes `bytes` to `path` (replacing it) durably.
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut out = self.create(path)?;
        out.write_all(bytes)?;
        out.finish()
    }

    /// Reads the whole file `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut file = self.open(path)?;
        let mut bytes = Vec::with_capacity(usize::try_from(file.len).unwrap_or(0));
        file.reader.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Whether `path` is a file.
    fn is_file(&self, path: &Path) -> io::Result<bool> {
        Ok(self.status(path)?.is_some_and(|s| !s.is_dir))
    }
}

/// The local disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalFileSystem;

struct LocalWrite {
    out: io::BufWriter<std::fs::File>,
}

impl Write for LocalWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl FileWrite for LocalWrite {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let file = self.out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()
    }
}

impl FileSystem for LocalFileSystem {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileWrite>> {
        let file = std::fs::File::create(path)?;
        Ok(Box::new(LocalWrite { out: io::BufWriter::with_capacity(256 * 1024, file) }))
    }

    fn create_private(&self, path: &Path) -> io::Result<Box<dyn FileWrite>> {
        // The mode applies only to a file that is created: one already there (a leftover
        // of a crash, made with other permissions) would keep its own.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Box::new(LocalWrite { out: io::BufWriter::with_capacity(64 * 1024, file) }))
    }

    fn open(&self, path: &Path) -> io::Result<OpenFile> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(OpenFile { reader: Box::new(file), len })
    }

    fn status(&self, path: &Path) -> io::Result<Option<FileStatus>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileStatus { is_dir: m.is_dir(), len: if m.is_dir() { 0 } else { m.len() } })),
            // Below a file: nothing there either.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            // A file removed between the listing and its status is left out, as if
            // listed a moment later.
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            out.push(DirEntry { path, is_dir: meta.is_dir(), len: if meta.is_dir() { 0 } else { meta.len() } });
        }
        Ok(out)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        // A hard link fails if `to` exists, where a rename would replace it; the source
        // name goes once the link stands. Both names of one file for a moment is
        // harmless to every caller (the sink's commit treats either as the same file).
        std::fs::hard_link(from, to)?;
        std::fs::remove_file(from)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn remove_empty_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // Directories can be opened read-only for fsync on Unix.
        std::fs::File::open(dir)?.sync_all()
    }
}

fn registry() -> &'static RwLock<HashMap<String, Arc<dyn FileSystem>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Arc<dyn FileSystem>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Makes `scheme://` locations (`hdfs`, say) usable for checkpoints, savepoints and file
/// sinks of every job in this process, replacing an earlier registration of it.
/// `file` cannot be registered: `file://` URLs are local paths.
pub fn register(scheme: &str, fs: Arc<dyn FileSystem>) -> Result<()> {
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "file" || crate::path::url_scheme(&format!("{scheme}:/")).is_none() {
        return Err(Error::config("file system scheme", format!("`{scheme}` cannot be registered")));
    }
    let mut map = registry().write().map_err(|_| Error::Internal("file system registry poisoned".into()))?;
    map.insert(scheme, fs);
    Ok(())
}

/// The schemes registered with [`register`], sorted.
pub fn registered_schemes() -> Vec<String> {
    let mut schemes: Vec<String> = registry().read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    schemes.sort();
    schemes
}

/// The file system registered for `scheme`, if any.
pub fn registered(scheme: &str) -> Option<Arc<dyn FileSystem>> {
    registry().read().ok()?.get(&scheme.to_ascii_lowercase()).cloned()
}

/// The scheme of a location held as a path, for a URL (`hdfs://nn/x`); `None` for a
/// local path.
pub fn scheme_of(path: &Path) -> Option<&str> {
    path.to_str().and_then(crate::path::url_scheme)
}

/// The file system of `path`: the local disk for a plain path, the registered one for a
/// URL. An unregistered scheme is an [`Error::Io`] naming the path.
pub fn for_path(path: &Path) -> Result<Arc<dyn FileSystem>> {
    match scheme_of(path) {
        None => Ok(Arc::new(LocalFileSystem)),
        Some(scheme) => registered(scheme).ok_or_else(|| {
            Error::io(
                path,
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("no file system is registered for `{scheme}://` in this process"),
                ),
            )
        }),
    }
}

/// Creates `dir` if missing and checks that a file can be written in it: writes and
/// removes an empty probe file (empty: on HDFS a file with a block waits for the
/// DataNode's report before it closes). Probes are named uniquely per call, as subtasks
/// of one job check one directory at once, and start with `.probe-`, which tells one a
/// killed process left. An error says what could not be done (`create`, `write to`).
pub fn probe_dir(fs: &dyn FileSystem, dir: &Path) -> std::result::Result<(), (&'static str, io::Error)> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    fs.create_dir_all(dir).map_err(|e| ("create", e))?;
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".probe-{}-{n}", std::process::id()));
    fs.write(&probe, b"").and_then(|()| fs.remove_file(&probe)).map_err(|e| ("write to", e))
}

/// Lexically normalizes `a/b/../c` to `a/c` without touching the store. A URL keeps its
/// `scheme://authority` (a plain path normalization would fold it into `scheme:/`).
pub fn normalize(path: &Path) -> PathBuf {
    if let Some(s) = path.to_str()
        && let Some(scheme) = crate::path::url_scheme(s)
    {
        let rest = &s[scheme.len() + 1..];
        let (authority, tail) = match rest.strip_prefix("//") {
            Some(r) => match r.find('/') {
                Some(i) => (&r[..i], &r[i..]),
                None => (r, "/"),
            },
            None => ("", rest),
        };
        let tail = normalize_plain(Path::new(tail));
        return PathBuf::from(format!("{scheme}://{authority}{}", tail.display()));
    }
    normalize_plain(path)
}

fn normalize_plain(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_authority_when_normalized() {
        assert_eq!(normalize(Path::new("hdfs://nn:9000/a/b/../c")), PathBuf::from("hdfs://nn:9000/a/c"));
        assert_eq!(normalize(Path::new("hdfs://nn:9000")), PathBuf::from("hdfs://nn:9000/"));
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("../x")), PathBuf::from("../x"));
        let joined = Path::new("hdfs://nn:9000/ck/job/chk-1").join("../shared/f.kv");
        assert_eq!(normalize(&joined).to_str(), Some("hdfs://nn:9000/ck/job/shared/f.kv"));
    }

    #[test]
    fn unregistered_schemes_are_named() {
        let e = for_path(Path::new("nosuch://h/x")).unwrap_err().to_string();
        assert!(e.contains("nosuch://h/x") && e.contains("no file system is registered"), "{e}");
        assert!(register("file", Arc::new(LocalFileSystem)).is_err());
    }

    #[test]
    fn local_rename_without_replace_refuses_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let fs = LocalFileSystem;
        fs.write(&a, b"1").unwrap();
        fs.write(&b, b"2").unwrap();
        let e = fs.rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs.read(&b).unwrap(), b"2");
        std::fs::remove_file(&b).unwrap();
        fs.rename_no_replace(&a, &b).unwrap();
        assert_eq!(fs.read(&b).unwrap(), b"1");
        assert_eq!(fs.status(&a).unwrap(), None);
        let names: Vec<String> = fs.list(dir.path()).unwrap().iter().map(|e| e.name().to_string()).collect();
        assert_eq!(names, vec!["b".to_string()]);
    }
}
