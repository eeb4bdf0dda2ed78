//! The one rule for directory settings: checkpoint, savepoint and state directories,
//! and the directories of file sources and sinks.
//!
//! A value is a local path or a `file://` URL ([`local_dir`]); where the store may be
//! remote (checkpoints, savepoints, file sinks, the job server's state), also a URL of a
//! scheme registered with [`crate::fs::register`] ([`store_dir`]). Any other
//! `<scheme>://` (`s3://`, `gs://`, `hdfs://` while no HDFS is registered, ...) is refused,
//! naming the setting, the value and what is supported. Handed to the file system as it
//! is, `hdfs:///tmp/x` is the *relative* path `./hdfs:/tmp/x`: a job that believes its
//! checkpoints are on HDFS would keep them on a local disk, without a word.
//!
//! ```
//! use std::path::PathBuf;
//! use operators_core::path::local_dir;
//! assert_eq!(local_dir("checkpoint.dir", "file:///data/ck").unwrap(), PathBuf::from("/data/ck"));
//! assert_eq!(local_dir("checkpoint.dir", "ck").unwrap(), PathBuf::from("ck"));
//! let e = local_dir("checkpoint.dir", "hdfs:///data/ck").unwrap_err().to_string();
//! assert!(e.contains("checkpoint.dir") && e.contains("hdfs:///data/ck") && e.contains("file://"));
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a directory setting accepts, as messages name it.
pub const SUPPORTED: &str = "a local path or a file:// URL";

/// The scheme of a value written as a URL (`hdfs` for `hdfs:///x` and for `hdfs:/x`), or
/// `None` for a plain path.
///
/// A scheme is a letter followed by letters, digits, `+`, `-` or `.` (RFC 3986), and is
/// followed by `:/`. One letter is not a scheme, so that a drive letter (`C:/x`) stays a
/// path.
pub fn url_scheme(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && scheme.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && rest.starts_with('/')).then_some(scheme)
}

/// Resolves the directory setting `param` given as text: a local path (returned as it
/// is, surrounding white space removed) or a `file://` URL (`file:///p`,
/// `file://localhost/p` or `file:/p`, percent escapes decoded; returned as the path it
/// names). Any other scheme, a `file://` URL of another host and an empty value are
/// refused with [`Error::Config`] naming `param` and the value.
pub fn local_dir(param: &str, value: &str) -> Result<PathBuf> {
    resolve(param, value.trim())
}

/// [`local_dir`] for a value already held as a path (not trimmed). A path that is not
/// Unicode cannot be a URL and is returned as it is.
pub fn local_path(param: &str, path: &Path) -> Result<PathBuf> {
    match path.to_str() {
        Some(s) => resolve(param, s),
        None => Ok(path.to_path_buf()),
    }
}

/// Checks a path a setting holds as the file system will use it: refuses any URL,
/// `file://` included, because the file system would read it as a relative path.
/// Resolve a `file://` URL with [`local_dir`] before it is stored; the message of a
/// refused one names the path to give instead.
pub fn check_local(param: &str, path: &Path) -> Result<()> {
    let resolved = local_path(param, path)?;
    if resolved == path {
        return Ok(());
    }
    Err(Error::config(
        param,
        format!(
            "`{}` is a file:// URL, which the file system would read as a relative path; give the path it \
             names, `{}`",
            path.display(),
            resolved.display()
        ),
    ))
}

fn resolve(param: &str, value: &str) -> Result<PathBuf> {
    resolve_in(param, value, false)
}

/// Resolves the directory setting `param` of a store that may be remote (checkpoint,
/// savepoint and job-server state directories, file sinks): as [`local_dir`], and also a
/// URL of a scheme registered with [`crate::fs::register`] (`hdfs://namenode:port/dir`,
/// or `hdfs:///dir` on the default file system once `operators-hdfs` is registered),
/// returned as the store qualifies it. Unregistered schemes are refused naming `param`,
/// the value and what is accepted.
///
/// ```
/// use std::path::PathBuf;
/// use operators_core::path::store_dir;
/// assert_eq!(store_dir("checkpoint.dir", "file:///data/ck").unwrap(), PathBuf::from("/data/ck"));
/// let e = store_dir("checkpoint.dir", "nosuch://h/ck").unwrap_err().to_string();
/// assert!(e.contains("checkpoint.dir") && e.contains("nosuch://"));
/// ```
pub fn store_dir(param: &str, value: &str) -> Result<PathBuf> {
    resolve_in(param, value.trim(), true)
}

/// [`store_dir`] for a value already held as a path (not trimmed). A URL that is already
/// qualified comes back unchanged.
pub fn store_path(param: &str, path: &Path) -> Result<PathBuf> {
    match path.to_str() {
        Some(s) => resolve_in(param, s, true),
        None => Ok(path.to_path_buf()),
    }
}

/// [`check_local`] for a setting that may name a registered store: refuses a `file://`
/// URL (the file system would read it as a relative path) and a URL of a scheme nobody
/// registered.
pub fn check_store(param: &str, path: &Path) -> Result<()> {
    if crate::fs::scheme_of(path).is_some_and(|s| !s.eq_ignore_ascii_case("file")) {
        return store_path(param, path).map(drop);
    }
    check_local(param, path)
}

/// What a setting of a store that may be remote accepts, with the schemes registered now.
fn supported_stores() -> String {
    let schemes = crate::fs::registered_schemes();
    if schemes.is_empty() {
        return SUPPORTED.to_string();
    }
    let urls: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
    format!("a local path, a file:// URL or a {} URL", urls.join(", "))
}

fn resolve_in(param: &str, value: &str, remote: bool) -> Result<PathBuf> {
    let supported = if remote { supported_stores() } else { SUPPORTED.to_string() };
    if value.is_empty() {
        return Err(Error::config(param, format!("must not be empty; use {supported}")));
    }
    let Some(scheme) = url_scheme(value) else {
        return Ok(PathBuf::from(value));
    };
    // The scheme is ASCII, so this index is a character boundary.
    let rest = &value[scheme.len() + 1..];
    if scheme.eq_ignore_ascii_case("file") {
        return file_url_path(param, value, rest);
    }
    if remote && let Some(fs) = crate::fs::registered(scheme) {
        return fs.qualify(value).map_err(|reason| Error::config(param, format!("`{value}`: {reason}")));
    }
    let shown = if rest.starts_with("//") { format!("{scheme}://") } else { format!("{scheme}:") };
    let hdfs = ["hdfs", "webhdfs", "swebhdfs", "viewfs"].iter().any(|h| scheme.eq_ignore_ascii_case(h));
    let hint = match (hdfs, remote) {
        (true, true) => " (hdfs:// is served once the operators-hdfs file system is registered)",
        (true, false) => " (this setting is a directory on this machine)",
        _ => "",
    };
    Err(Error::config(param, format!("`{value}`: the {shown} scheme is not supported here; use {supported}{hint}")))
}

/// The path of `file:` URL `value`, whose part after `file:` is `rest`.
fn file_url_path(param: &str, value: &str, rest: &str) -> Result<PathBuf> {
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => {
            let slash = authority_and_path.find('/').unwrap_or(authority_and_path.len());
            let (host, path) = authority_and_path.split_at(slash);
            if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
                return Err(Error::config(
                    param,
                    format!(
                        "`{value}` names the host `{host}`; a file:// URL here is a directory on this machine \
                         (file:///path or file://localhost/path)"
                    ),
                ));
            }
            path
        }
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(Error::config(param, format!("`{value}` is not an absolute file:// URL (file:///path)")));
    }
    let decoded = percent_decode(path)
        .ok_or_else(|| Error::config(param, format!("`{value}`: its percent escapes do not decode to UTF-8 text")))?;
    Ok(PathBuf::from(decoded))
}

/// Decodes `%HH` escapes; a `%` not followed by two hex digits stays as it is. `None`
/// when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(value: &str) -> String {
        let e = local_dir("stream.checkpoint.dir", value).unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "stream.checkpoint.dir"), "{e}");
        e.to_string()
    }

    #[test]
    fn plain_paths_are_kept_as_they_are() {
        assert_eq!(local_dir("k", "/data/ck").unwrap(), PathBuf::from("/data/ck"));
        assert_eq!(local_dir("k", "checkpoints").unwrap(), PathBuf::from("checkpoints"));
        assert_eq!(local_dir("k", "  ./a/b \n").unwrap(), PathBuf::from("./a/b"));
        // Not schemes: a drive letter, a colon in a file name, `://` after a slash.
        assert_eq!(local_dir("k", "C:/x").unwrap(), PathBuf::from("C:/x"));
        assert_eq!(local_dir("k", "a:b").unwrap(), PathBuf::from("a:b"));
        assert_eq!(local_dir("k", "./a://b").unwrap(), PathBuf::from("./a://b"));
        assert_eq!(local_dir("k", "1x:/b").unwrap(), PathBuf::from("1x:/b"));
    }

    #[test]
    fn file_urls_name_local_paths() {
        for url in ["file:///data/ck", "file://localhost/data/ck", "file:/data/ck", "FILE:///data/ck"] {
            assert_eq!(local_dir("k", url).unwrap(), PathBuf::from("/data/ck"), "{url}");
        }
        assert_eq!(local_dir("k", "file:///a%20b/100%25/%zz/%+f").unwrap(), PathBuf::from("/a b/100%/%zz/%+f"));
        assert_eq!(local_dir("k", "file:///").unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn other_schemes_are_refused_naming_the_setting_the_value_and_what_works() {
        let e = refused("hdfs:///tmp/csp/flink/checkpoints");
        assert!(e.contains("`hdfs:///tmp/csp/flink/checkpoints`"), "{e}");
        assert!(e.contains("hdfs://") && e.contains("local path") && e.contains("file://"), "{e}");
        assert!(e.contains("directory on this machine"), "{e}");
        for value in ["s3://bucket/ck", "gs://bucket/ck", "s3a://b/x", "viewfs://c/x", "HDFS://nn:8020/x", "hdfs:/x"] {
            let e = refused(value);
            assert!(e.contains(value) && e.contains(SUPPORTED), "{e}");
        }
        assert!(refused("hdfs:/x").contains("the hdfs: scheme"));
        assert!(!refused("s3://b/x").contains("machine"));
    }

    #[test]
    fn bad_file_urls_and_empty_values_are_refused() {
        assert!(refused("file://nn/data").contains("names the host `nn`"));
        assert!(refused("file://relative").contains("names the host `relative`"));
        assert!(refused("file:///%ff").contains("UTF-8"));
        assert!(refused("  ").contains("must not be empty"));
    }

    #[test]
    fn url_schemes_are_recognised() {
        assert_eq!(url_scheme("hdfs:///x"), Some("hdfs"));
        assert_eq!(url_scheme("s3+x.y-z://b"), Some("s3+x.y-z"));
        assert_eq!(url_scheme("/abs/hdfs://x"), None);
        assert_eq!(url_scheme("x:/y"), None);
        assert_eq!(url_scheme("name:no-slash"), None);
    }

    #[test]
    fn held_paths_must_not_be_urls() {
        assert!(check_local("checkpoint.dir", Path::new("/data/ck")).is_ok());
        assert!(check_local("checkpoint.dir", Path::new("ck")).is_ok());
        let e = check_local("checkpoint.dir", Path::new("file:///data/ck")).unwrap_err().to_string();
        assert!(e.contains("checkpoint.dir") && e.contains("`/data/ck`"), "{e}");
        let e = check_local("checkpoint.dir", Path::new("hdfs:///data/ck")).unwrap_err().to_string();
        assert!(e.contains("hdfs://"), "{e}");
        assert_eq!(local_path("k", Path::new("file:/x")).unwrap(), PathBuf::from("/x"));
    }
}
