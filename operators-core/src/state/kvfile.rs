//! Sorted key-value files: the on-disk form of keyed state in checkpoints.
//!
//! A file holds entries sorted by key; each entry is a put or a delete (tombstone). A
//! subtask's keyed state at a checkpoint is a *chain* of such files — a base and the deltas
//! written at later checkpoints — and [`MergedChain`] reads a chain as one sorted stream in
//! which the newest entry for a key wins. Because every file is sorted, merging and
//! compacting stream with memory independent of the state size.
//!
//! Layout: `OPKV\x01`, then entries `key_len:u32le key tag:u8 [value_len:u32le value]`
//! (tag 1 = put, 0 = delete), then the footer `OPKVEND` + entry count (u64le) + CRC32 of
//! everything before the footer (u32le).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{FileWrite, for_path};

const MAGIC: &[u8; 5] = b"OPKV\x01";
const FOOTER_MAGIC: &[u8; 7] = b"OPKVEND";
const FOOTER_LEN: usize = 7 + 8 + 4;

/// One entry: a key and its value, or `None` for a deletion.
pub type KvEntry = (Vec<u8>, Option<Vec<u8>>);

/// Writes a sorted key-value file.
pub struct KvFileWriter {
    path: PathBuf,
    out: BufWriter<Box<dyn FileWrite>>,
    crc: crc32fast::Hasher,
    entries: u64,
    bytes: u64,
    last_key: Option<Vec<u8>>,
}

impl KvFileWriter {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = for_path(path)?.create(path).map_err(|e| Error::io(path, e))?;
        let mut w = Self {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 * 1024, file),
            crc: crc32fast::Hasher::new(),
            entries: 0,
            bytes: 0,
            last_key: None,
        };
        w.write_raw(MAGIC)?;
        Ok(w)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    /// Appends an entry; keys must arrive in strictly increasing order.
    pub fn append(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if let Some(last) = &self.last_key
            && last.as_slice() >= key
        {
            return Err(Error::Internal(format!("kv file {} written out of order", self.path.display())));
        }
        self.write_raw(&len_u32(key.len(), &self.path)?.to_le_bytes())?;
        self.write_raw(key)?;
        match value {
            Some(v) => {
                self.write_raw(&[1])?;
                self.write_raw(&len_u32(v.len(), &self.path)?.to_le_bytes())?;
                self.write_raw(v)?;
            }
            None => self.write_raw(&[0])?,
        }
        self.entries += 1;
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    /// Number of entries appended so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the footer, flushes and makes the file durable. Returns its size in bytes.
    pub fn finish(mut self) -> Result<u64> {
        let crc = self.crc.clone().finalize();
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(FOOTER_MAGIC);
        footer.extend_from_slice(&self.entries.to_le_bytes());
        footer.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&footer).map_err(|e| Error::io(&self.path, e))?;
        self.bytes += footer.len() as u64;
        let file = self.out.into_inner().map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.finish().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.bytes)
    }
}

fn len_u32(len: usize, path: &Path) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::State {
        operator: path.display().to_string(),
        message: format!("state entry of {len} bytes exceeds the 4 GiB limit"),
    })
}

/// Streams the entries of a key-value file, verifying its checksum at the end.
pub struct KvFileReader {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    remaining_body: u64,
    crc: crc32fast::Hasher,
    entries: u64,
    done: bool,
}

impl KvFileReader {
    /// Opens `path` and checks the header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = for_path(path)?.open(path).map_err(|e| Error::io(path, e))?;
        let len = file.len;
        if len < (MAGIC.len() + FOOTER_LEN) as u64 {
            return Err(corrupt(path, "file too short"));
        }
        let mut r = Self {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(256 * 1024, file.reader),
            remaining_body: len - FOOTER_LEN as u64,
            crc: crc32fast::Hasher::new(),
            entries: 0,
            done: false,
        };
        let mut magic = [0u8; 5];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(corrupt(path, "not a state file (bad magic)"));
        }
        Ok(r)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        if (buf.len() as u64) > self.remaining_body {
            return Err(corrupt(&self.path, "entry runs past the end of the file"));
        }
        self.input.read_exact(buf).map_err(|e| Error::io(&self.path, e))?;
        self.remaining_body -= buf.len() as u64;
        self.crc.update(buf);
        Ok(())
    }

    fn read_u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_vec(&mut self, len: u32) -> Result<Vec<u8>> {
        let len = len as usize;
        if len as u64 > self.remaining_body {
            return Err(corrupt(&self.path, "entry length runs past the end of the file"));
        }
        let mut v = vec![0u8; len];
        self.read_exact(&mut v)?;
        Ok(v)
    }

    fn verify_footer(&mut self) -> Result<()> {
        let mut footer = [0u8; FOOTER_LEN];
        self.input.read_exact(&mut footer).map_err(|e| Error::io(&self.path, e))?;
        if &footer[..7] != FOOTER_MAGIC {
            return Err(corrupt(&self.path, "bad footer"));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&footer[7..15]);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&footer[15..19]);
        if u64::from_le_bytes(count) != self.entries {
            return Err(corrupt(&self.path, "entry count does not match the footer"));
        }
        if u32::from_le_bytes(crc) != self.crc.clone().finalize() {
            return Err(corrupt(&self.path, "checksum mismatch"));
        }
        Ok(())
    }

    fn next_entry(&mut self) -> Result<Option<KvEntry>> {
        if self.done {
            return Ok(None);
        }
        if self.remaining_body == 0 {
            self.done = true;
            self.verify_footer()?;
            return Ok(None);
        }
        let klen = self.read_u32()?;
        let key = self.read_vec(klen)?;
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag)?;
        let value = match tag[0] {
            1 => {
                let vlen = self.read_u32()?;
                Some(self.read_vec(vlen)?)
            }
            0 => None,
            t => return Err(corrupt(&self.path, &format!("unknown entry tag {t}"))),
        };
        self.entries += 1;
        Ok(Some((key, value)))
    }
}

impl Iterator for KvFileReader {
    type Item = Result<KvEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn corrupt(path: &Path, reason: &str) -> Error {
    Error::CorruptState { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Reads a chain of sorted files (oldest first) as one sorted stream where, for each key,
/// only the newest entry appears.
pub struct MergedChain {
    readers: Vec<KvFileReader>,
    heads: Vec<Option<KvEntry>>,
    failed: bool,
}

impl MergedChain {
    /// Opens every file of the chain, oldest first.
    pub fn open(chain: &[PathBuf]) -> Result<Self> {
        let mut readers = Vec::with_capacity(chain.len());
        for p in chain {
            readers.push(KvFileReader::open(p)?);
        }
        let mut heads = Vec::with_capacity(readers.len());
        for r in readers.iter_mut() {
            heads.push(r.next().transpose()?);
        }
        Ok(Self { readers, heads, failed: false })
    }

    fn step(&mut self) -> Result<Option<KvEntry>> {
        // The smallest key among the heads; on ties the newest file (highest index) wins.
        let mut best: Option<(usize, &Vec<u8>)> = None;
        for (i, head) in self.heads.iter().enumerate() {
            if let Some((k, _)) = head {
                match best {
                    Some((_, bk)) if k > bk => {}
                    _ => best = Some((i, k)),
                }
            }
        }
        let best = best.map(|(i, _)| i);
        let Some(winner) = best else {
            return Ok(None);
        };
        let Some(entry) = self.heads[winner].take() else {
            return Ok(None);
        };
        // Advance every reader whose head has the same key (older versions are dropped).
        for i in 0..self.heads.len() {
            let same = if i == winner { true } else { matches!(&self.heads[i], Some((k, _)) if *k == entry.0) };
            if same {
                self.heads[i] = self.readers[i].next().transpose()?;
            }
        }
        Ok(Some(entry))
    }
}

impl Iterator for MergedChain {
    type Item = Result<KvEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes `entries` (any order) to a new sorted file at `path`. Returns the size in bytes.
pub fn write_sorted(path: &Path, mut entries: Vec<KvEntry>) -> Result<u64> {
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut w = KvFileWriter::create(path)?;
    for (k, v) in &entries {
        w.append(k, v.as_deref())?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path) -> Vec<KvEntry> {
        KvFileReader::open(path).unwrap().map(|e| e.unwrap()).collect()
    }

    #[test]
    fn round_trip_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.kv");
        write_sorted(
            &p,
            vec![(b"b".to_vec(), Some(b"2".to_vec())), (b"a".to_vec(), Some(b"1".to_vec())), (b"c".to_vec(), None)],
        )
        .unwrap();
        assert_eq!(
            collect(&p),
            vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), Some(b"2".to_vec())), (b"c".to_vec(), None)]
        );
        // Flip one byte of the body: the checksum must catch it.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[MAGIC.len() + 5] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
        let err = KvFileReader::open(&p).unwrap().find_map(|e| e.err()).expect("corruption detected");
        assert!(matches!(err, Error::CorruptState { .. }), "{err}");
    }

    #[test]
    fn truncated_file_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.kv");
        write_sorted(&p, vec![(b"key".to_vec(), Some(vec![7; 100]))]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for cut in 0..bytes.len() {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let outcome: Result<Vec<_>> = KvFileReader::open(&p).and_then(|r| r.collect());
            assert!(outcome.is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn merge_prefers_newest_and_keeps_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.kv");
        let d1 = dir.path().join("d1.kv");
        let d2 = dir.path().join("d2.kv");
        write_sorted(
            &base,
            vec![
                (b"a".to_vec(), Some(b"a0".to_vec())),
                (b"b".to_vec(), Some(b"b0".to_vec())),
                (b"c".to_vec(), Some(b"c0".to_vec())),
            ],
        )
        .unwrap();
        write_sorted(&d1, vec![(b"b".to_vec(), None), (b"d".to_vec(), Some(b"d1".to_vec()))]).unwrap();
        write_sorted(&d2, vec![(b"b".to_vec(), Some(b"b2".to_vec())), (b"c".to_vec(), None)]).unwrap();
        let merged: Vec<KvEntry> = MergedChain::open(&[base, d1, d2]).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(
            merged,
            vec![
                (b"a".to_vec(), Some(b"a0".to_vec())),
                (b"b".to_vec(), Some(b"b2".to_vec())),
                (b"c".to_vec(), None),
                (b"d".to_vec(), Some(b"d1".to_vec())),
            ]
        );
    }
}
