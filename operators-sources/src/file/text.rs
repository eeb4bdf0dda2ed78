//! Delimited text files: CSV, TSV and the toolkit's TXT (text with a chosen delimiter).
//!
//! Reading is a pipeline over bounded buffers:
//!
//! 1. raw bytes are read in ranges (4 MiB by default) and cut after the last complete
//!    line, so neither a multi-byte character nor a line is split;
//! 2. complete lines are checked (UTF-8) or transcoded (GBK, GB18030, UTF-16, Latin-1...
//!    via `encoding_rs`) into UTF-8; a line with bytes that are invalid in the charset is
//!    a bad record, reported with its line number and byte offset;
//! 3. arrow-csv decodes the UTF-8 text into text columns, which the toolkit's value rules
//!    ([`operators_core::schema::convert_strings`]) turn into the declared types, reporting
//!    every value that does not parse by row;
//! 4. when arrow-csv rejects a batch (a row with the wrong number of fields), that batch is
//!    read again record by record with the `csv` crate to find and set aside the bad
//!    records.
//!
//! Bad records fail the job (the default) or go to the dead-letter output, as
//! configured, with file, line and byte offset. The position checkpointed after a batch is
//! always the start of a record, so a restored job resumes exactly there.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, StringBuilder};
use arrow::csv::reader::{Decoder, ReaderBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use encoding_rs::Encoding;
use object_store::ObjectStoreExt as _;
use operators_core::operator::{BadRecordPolicy, DeadLetter};
use operators_core::schema::convert_strings;
use operators_core::{Error, Result};

use super::{FileFormat, FileMeta, FilePosition, FileReader, Location, SchemaGuard, decode_err};
use crate::error::SourceError;

/// Default of [`TextFormat::with_max_field_bytes`]: 16 MiB.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 16 << 20;

/// Options of delimited text files.
#[derive(Debug, Clone)]
pub struct TextFormat {
    field_delimiter: u8,
    line_delimiter: Option<u8>,
    quote: Option<u8>,
    header: bool,
    charset: &'static Encoding,
    schema: Option<SchemaRef>,
    batch_size: usize,
    bad_records: BadRecordPolicy,
    chunk_bytes: usize,
    max_line_bytes: usize,
    max_field_bytes: usize,
}

impl TextFormat {
    /// Comma-separated, `"` quoting, no header, UTF-8.
    pub fn csv() -> Self {
        Self {
            field_delimiter: b',',
            line_delimiter: None,
            quote: Some(b'"'),
            header: false,
            charset: encoding_rs::UTF_8,
            schema: None,
            batch_size: 8192,
            bad_records: BadRecordPolicy::Fail,
            chunk_bytes: 4 << 20,
            max_line_bytes: 64 << 20,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
        }
    }

    /// Tab-separated, no quoting.
    pub fn tsv() -> Self {
        Self { field_delimiter: b'\t', quote: None, ..Self::csv() }
    }

    /// The toolkit's TXT: comma-separated unless told otherwise, no quoting.
    pub fn txt() -> Self {
        Self { quote: None, ..Self::csv() }
    }

    /// Sets the field delimiter (see [`parse_delimiter`]).
    pub fn with_field_delimiter(mut self, delimiter: u8) -> Self {
        self.field_delimiter = delimiter;
        self
    }

    /// Sets the line delimiter; `None` means `\n`, with `\r\n` accepted too.
    pub fn with_line_delimiter(mut self, delimiter: Option<u8>) -> Self {
        self.line_delimiter = delimiter.filter(|d| *d != b'\n');
        self
    }

    /// Sets the quote character; `None` turns quoting off.
    pub fn with_quote(mut self, quote: Option<u8>) -> Self {
        self.quote = quote;
        self
    }

    /// Whether the first line holds the column names (`source.firstLine.schema`).
    pub fn with_header(mut self, header: bool) -> Self {
        self.header = header;
        self
    }

    /// Sets the charset (`source.charset`, see [`parse_charset`]).
    pub fn with_charset(mut self, charset: &'static Encoding) -> Self {
        self.charset = charset;
        self
    }

    /// Declares the columns and their types. Without it, every column is text, named
    /// by the header line or `_col0`, `_col1`, ...
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Rows per batch (default 8192); 0 is refused, naming `source.batch.size`.
    pub fn with_batch_size(mut self, rows: usize) -> crate::Result<Self> {
        self.batch_size = crate::error::at_least_one("source.batch.size", rows)?;
        Ok(self)
    }

    /// What to do with bad records (default: fail).
    pub fn with_bad_records(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }

    /// Bytes read from storage at a time (default 4 MiB).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(64);
        self
    }

    /// The most bytes a quoted field may span while its quote is open (default 16 MiB).
    ///
    /// A quote that is opened and never closed (a truncated export, a stray `"` in free
    /// text) would otherwise make the rest of the file one field. A field still open at
    /// the end of the file, or longer than this, is a bad record (see
    /// [`TextFormat::with_bad_records`]); this bound keeps one stray quote from pulling a
    /// large file into memory before the end of the file shows it.
    pub fn with_max_field_bytes(mut self, bytes: std::num::NonZeroUsize) -> Self {
        self.max_field_bytes = bytes.get();
        self
    }

    /// The declared schema, if any.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    fn terminator(&self) -> u8 {
        self.line_delimiter.unwrap_or(b'\n')
    }

    fn decoder(&self, text_schema: &SchemaRef) -> Decoder {
        let mut b = ReaderBuilder::new(text_schema.clone())
            .with_header(false)
            .with_delimiter(self.field_delimiter)
            .with_batch_size(self.batch_size)
            // arrow-csv always quotes; NUL never appears in text, so it turns quoting off.
            .with_quote(self.quote.unwrap_or(0));
        if let Some(t) = self.line_delimiter {
            b = b.with_terminator(t);
        }
        b.build_decoder()
    }

    fn record_reader<'a>(&self, text: &'a [u8]) -> csv::Reader<&'a [u8]> {
        let mut b = csv::ReaderBuilder::new();
        b.has_headers(false).flexible(true).delimiter(self.field_delimiter);
        match self.quote {
            Some(q) => b.quote(q),
            None => b.quoting(false),
        };
        match self.line_delimiter {
            Some(t) => b.terminator(csv::Terminator::Any(t)),
            None => b.terminator(csv::Terminator::CRLF),
        };
        b.from_reader(text)
    }

    /// Where a quoted field is left open at the end of `text` (which starts at a record):
    /// `(start of its record, offset of the opening quote)`, or `None` when every quoted
    /// field closes. The rules are csv_core's, which both readers use: a quote opens a
    /// field only at the field's start, a doubled quote inside is a literal quote, and a
    /// quote that closes a field may be followed by more unquoted text.
    fn open_quote(&self, text: &[u8]) -> Option<(usize, usize)> {
        #[derive(Clone, Copy)]
        enum State {
            FieldStart,
            Unquoted,
            Quoted,
            QuoteInQuoted,
        }
        let quote = self.quote?;
        // Most files hold no quote at all: nothing to scan then.
        memchr::memchr(quote, text)?;
        let ends_record = |b: u8| match self.line_delimiter {
            Some(t) => b == t,
            None => b == b'\n' || b == b'\r',
        };
        let (mut state, mut record_start, mut opened_at) = (State::FieldStart, 0, 0);
        for (i, &b) in text.iter().enumerate() {
            state = match state {
                State::Quoted if b == quote => State::QuoteInQuoted,
                State::Quoted => State::Quoted,
                State::QuoteInQuoted if b == quote => State::Quoted,
                State::FieldStart if b == quote => {
                    opened_at = i;
                    State::Quoted
                }
                _ if b == self.field_delimiter => State::FieldStart,
                _ if ends_record(b) => {
                    record_start = i + 1;
                    State::FieldStart
                }
                _ => State::Unquoted,
            };
        }
        matches!(state, State::Quoted).then_some((record_start, opened_at))
    }
}

/// Parses a delimiter given as a character, an escape (`\t`, `\u0001`, `\x01`), a decimal
/// ASCII code (`44`, `9`: any all-digit value is a code) or a hex code (`0x01`), as the
/// toolkit allowed.
pub fn parse_delimiter(key: &str, value: &str) -> std::result::Result<u8, SourceError> {
    let bad = |why: &str| SourceError::config(key, format!("`{value}` {why}"));
    // All digits is an ASCII code, even a single digit: a digit is never a useful
    // delimiter, and the toolkit's users passed codes such as `9` for a tab.
    let code: u32 = if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
        value.parse().map_err(|_| bad("is not an ASCII code"))?
    } else if value.chars().count() == 1 {
        value.chars().next().map_or(0, u32::from)
    } else if let Some(hex) = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).map_err(|_| bad("is not a hex code"))?
    } else if let Some(esc) = value.strip_prefix('\\') {
        match esc {
            "t" => 9,
            "n" => 10,
            "r" => 13,
            "\\" => 92,
            "0" => 0,
            _ => {
                let hex = esc
                    .strip_prefix('u')
                    .or_else(|| esc.strip_prefix('x'))
                    .ok_or_else(|| bad("is not a known escape (\\t, \\n, \\r, \\uXXXX, \\xXX)"))?;
                u32::from_str_radix(hex, 16).map_err(|_| bad("is not a valid escape"))?
            }
        }
    } else {
        return Err(bad("is not a delimiter: give one character, an escape, or an ASCII code"));
    };
    match u8::try_from(code) {
        Ok(b) if b.is_ascii() => Ok(b),
        _ => Err(bad("is not an ASCII character (delimiters must be ASCII)")),
    }
}

/// Parses a charset label (`UTF-8`, `GBK`, `GB18030`, `UTF-16`, `UTF-16BE`, `ISO-8859-1`...).
pub fn parse_charset(key: &str, value: &str) -> std::result::Result<&'static Encoding, SourceError> {
    Encoding::for_label(value.trim().as_bytes())
        .ok_or_else(|| SourceError::config(key, format!("unknown charset `{value}`")))
}

#[async_trait]
impl FileFormat for TextFormat {
    fn name(&self) -> &'static str {
        "text"
    }

    async fn open(
        &self,
        location: &Location,
        file: &FileMeta,
        position: Option<FilePosition>,
        schema: &mut SchemaGuard,
    ) -> Result<Box<dyn FileReader>> {
        let mut reader = TextReader::new(self.clone(), location.clone(), file.clone(), position)?;
        reader.establish_schema(schema).await?;
        Ok(Box::new(reader))
    }
}

/// A stretch of the UTF-8 text that maps to the file at a known place.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Absolute text offset where the segment starts.
    text_start: u64,
    /// File offset of that byte.
    orig_start: u64,
    /// Line number of that byte.
    line: u64,
    /// Text bytes map one to one onto file bytes (UTF-8 input).
    identity: bool,
}

/// The UTF-8 text not yet emitted. Emitting a batch consumes a prefix; the bytes after
/// it are moved to the front only once the consumed part outweighs them, so the cost of
/// consuming stays linear in the text (a `drain` per batch moved the whole remaining
/// read-ahead every time: a tenth of a CSV job's CPU).
#[derive(Default)]
struct TextBuf {
    buf: Vec<u8>,
    start: usize,
}

impl TextBuf {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= 64 << 10 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

impl std::ops::Deref for TextBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

struct TextReader {
    format: TextFormat,
    location: Location,
    file: FileMeta,
    encoding: &'static Encoding,
    /// Width of a code unit: 2 for UTF-16, else 1.
    unit: usize,
    /// Next file offset to read.
    read_pos: u64,
    /// Bytes read but not yet cut into complete lines, starting at `raw_start`.
    raw: Vec<u8>,
    raw_start: u64,
    /// Line number at `raw_start`; while `lines_pending`, the lines of the text after
    /// the last segment's start are still to be added (see [`TextReader::raw_line`]).
    raw_line: u64,
    lines_pending: bool,
    /// UTF-8 text of complete lines not yet emitted; `text[0]` is at `text_base`.
    text: TextBuf,
    text_base: u64,
    segments: VecDeque<Segment>,
    /// Bad lines found while transcoding, released once the position passes them.
    held_dead: VecDeque<(u64, DeadLetter)>,
    header_pending: bool,
    text_schema: Option<SchemaRef>,
    /// What the fast decoder produces: the declared type where arrow-csv parses it as
    /// this source would (integers, floats, text), text elsewhere (timestamps, dates and
    /// booleans in the toolkit's forms). A batch arrow-csv refuses is read again record
    /// by record as text, with this source's own rules and errors per row.
    decode_schema: Option<SchemaRef>,
    out_schema: Option<SchemaRef>,
    decoder: Option<Decoder>,
    fed: usize,
    /// Bytes the fast decoder took in since it last completed a record (an estimate from
    /// below): past the format's `max_field_bytes`, only a quoted field left open can be
    /// growing, and the record-by-record reader finds it.
    open_bytes: usize,
    eof_signalled: bool,
    /// The file on the local file system, when it is local; opened at the first read.
    local_path: Option<std::path::PathBuf>,
    local_file: Option<Arc<std::fs::File>>,
    #[cfg(unix)]
    read_ahead: Option<ReadAhead>,
}

/// An I/O error of a local file in the object store's terms, so that both paths report
/// (and classify for retries) alike.
#[cfg(unix)]
fn local_err(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        object_store::Error::NotFound { path: path.display().to_string(), source: Box::new(e) }
    } else {
        object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) }
    }
}

/// A read of a local file's `pos..end` appended to `raw`, for a blocking thread (the
/// buffer travels there and back, so no chunk is allocated or copied).
#[cfg(unix)]
fn pread(file: &std::fs::File, mut raw: Vec<u8>, pos: u64, end: u64) -> (Vec<u8>, std::io::Result<()>) {
    use std::os::unix::fs::FileExt;
    let at = raw.len();
    raw.resize(at + (end - pos) as usize, 0);
    let read = file.read_exact_at(&mut raw[at..], pos);
    if read.is_err() {
        raw.truncate(at);
    }
    (raw, read)
}

/// A chunk being read while the previous one is decoded.
#[cfg(unix)]
struct ReadAhead {
    /// File offset the read ends at.
    end: u64,
    handle: tokio::task::JoinHandle<(Vec<u8>, std::io::Result<()>)>,
}

impl TextReader {
    fn new(format: TextFormat, location: Location, file: FileMeta, position: Option<FilePosition>) -> Result<Self> {
        let (read_pos, line, encoding, header_done) = match position {
            Some(FilePosition::Text { offset, line, encoding, header_done }) => {
                let enc = Encoding::for_label(encoding.as_bytes()).unwrap_or(format.charset);
                (offset, line, enc, header_done)
            }
            Some(FilePosition::Rows { .. }) => {
                return Err(Error::State {
                    operator: "text source".into(),
                    message: format!("`{}` has a row position, not a text position", file.display),
                });
            }
            None => (0, 1, format.charset, false),
        };
        let unit = if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE { 2 } else { 1 };
        let local_path = location.local_file(&file.name);
        Ok(Self {
            header_pending: format.header && !header_done,
            format,
            location,
            file,
            encoding,
            unit,
            read_pos,
            raw: Vec::new(),
            raw_start: read_pos,
            raw_line: line,
            lines_pending: false,
            text: TextBuf::default(),
            text_base: 0,
            segments: VecDeque::new(),
            held_dead: VecDeque::new(),
            text_schema: None,
            decode_schema: None,
            out_schema: None,
            decoder: None,
            fed: 0,
            open_bytes: 0,
            eof_signalled: false,
            local_path,
            local_file: None,
            #[cfg(unix)]
            read_ahead: None,
        })
    }

    fn input_done(&self) -> bool {
        self.read_pos >= self.file.size && self.raw.is_empty()
    }

    /// The code unit that ends a line in the raw bytes.
    fn raw_terminator(&self) -> [u8; 2] {
        let t = self.format.terminator();
        if self.encoding == encoding_rs::UTF_16BE { [0, t] } else { [t, 0] }
    }

    /// Reads the next range of the file and moves complete lines into the text buffer.
    /// Returns false when the whole file has been read.
    async fn read_more(&mut self) -> Result<bool> {
        if self.read_pos >= self.file.size {
            if !self.raw.is_empty() {
                // The last line has no terminator.
                let last = std::mem::take(&mut self.raw);
                self.ingest(&last)?;
                return Ok(true);
            }
            return Ok(false);
        }
        let end = (self.read_pos + self.format.chunk_bytes as u64).min(self.file.size);
        #[cfg(unix)]
        let end = self.read_ahead.as_ref().map_or(end, |ahead| ahead.end);
        let appended_at = self.raw.len();
        self.fetch(end).await?;
        if self.read_pos == 0 {
            // A byte-order mark decides the charset and is not data.
            if let Some((enc, len)) = Encoding::for_bom(&self.raw[appended_at..]) {
                self.encoding = enc;
                self.unit = if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE { 2 } else { 1 };
                self.raw_start = len as u64;
                self.raw.drain(appended_at..appended_at + len);
            }
        }
        self.read_pos = end;
        // Cut after the last complete line.
        let cut = self.last_line_end(&self.raw);
        match cut {
            Some(cut) => {
                // Ingest in place; only the partial last line moves to the front.
                let mut raw = std::mem::take(&mut self.raw);
                let ingested = self.ingest(&raw[..cut]);
                raw.drain(..cut);
                self.raw = raw;
                ingested?;
                #[cfg(unix)]
                self.start_read_ahead();
            }
            None if self.raw.len() > self.format.max_line_bytes => {
                return Err(Error::bad_record(
                    format!("{}:{} (byte {})", self.file.display, self.raw_line(), self.raw_start),
                    format!(
                        "a line longer than {} MiB; is the line delimiter (source.line.delimiter) right?",
                        self.format.max_line_bytes >> 20
                    ),
                ));
            }
            None => {}
        }
        Ok(true)
    }

    /// Appends the file's bytes `read_pos..end` to `raw`: the read started ahead when
    /// there is one, else a read now.
    async fn fetch(&mut self, end: u64) -> Result<()> {
        let storage_err = |source| Error::from(SourceError::Storage { path: self.file.display.clone(), source });
        #[cfg(unix)]
        if let Some(path) = &self.local_path {
            // `read_more` reads up to the read-ahead's end when there is one.
            let (raw, read) = match self.read_ahead.take() {
                Some(ahead) => ahead.handle.await,
                None => {
                    let file = match &self.local_file {
                        Some(f) => f.clone(),
                        None => {
                            let f = Arc::new(std::fs::File::open(path).map_err(|e| storage_err(local_err(path, e)))?);
                            self.local_file = Some(f.clone());
                            f
                        }
                    };
                    let (raw, pos) = (std::mem::take(&mut self.raw), self.read_pos);
                    tokio::task::spawn_blocking(move || pread(&file, raw, pos, end)).await
                }
            }
            .map_err(|e| Error::Internal(format!("reading `{}`: {e}", self.file.display)))?;
            self.raw = raw;
            return read.map_err(|e| storage_err(local_err(path, e)));
        }
        let bytes = self.location.store.get_range(&self.file.path, self.read_pos..end).await.map_err(storage_err)?;
        self.raw.extend_from_slice(&bytes);
        Ok(())
    }

    /// Starts reading the next chunk of a local file into `raw` (which then holds only
    /// the partial last line) while the text read so far is decoded: without it the
    /// decoder waited for every chunk's read.
    #[cfg(unix)]
    fn start_read_ahead(&mut self) {
        let Some(file) = self.local_file.clone() else { return };
        if self.read_ahead.is_some() || self.read_pos >= self.file.size {
            return;
        }
        let end = (self.read_pos + self.format.chunk_bytes as u64).min(self.file.size);
        let (raw, pos) = (std::mem::take(&mut self.raw), self.read_pos);
        let handle = tokio::task::spawn_blocking(move || pread(&file, raw, pos, end));
        self.read_ahead = Some(ReadAhead { end, handle });
    }

    /// End (exclusive) of the last complete line in `raw`.
    fn last_line_end(&self, raw: &[u8]) -> Option<usize> {
        let term = self.raw_terminator();
        if self.unit == 1 {
            memchr::memrchr(term[0], raw).map(|i| i + 1)
        } else {
            let mut i = raw.len() / 2;
            while i > 0 {
                i -= 1;
                if raw[2 * i] == term[0] && raw[2 * i + 1] == term[1] {
                    return Some(2 * i + 2);
                }
            }
            None
        }
    }

    /// Splits complete raw lines (at `raw_start`) into lines.
    fn raw_lines<'a>(&self, raw: &'a [u8]) -> Vec<&'a [u8]> {
        let term = self.raw_terminator();
        let mut lines = Vec::new();
        if self.unit == 1 {
            let mut start = 0;
            for i in memchr::memchr_iter(term[0], raw) {
                lines.push(&raw[start..=i]);
                start = i + 1;
            }
            if start < raw.len() {
                lines.push(&raw[start..]);
            }
        } else {
            let mut start = 0;
            let mut i = 0;
            while i + 1 < raw.len() {
                if raw[i] == term[0] && raw[i + 1] == term[1] {
                    lines.push(&raw[start..i + 2]);
                    start = i + 2;
                }
                i += 2;
            }
            if start < raw.len() {
                lines.push(&raw[start..]);
            }
        }
        lines
    }

    fn text_end(&self) -> u64 {
        self.text_base + self.text.len() as u64
    }

    /// The line number at `raw_start`. UTF-8 chunks that continue the last segment are
    /// appended without counting their lines (the count is only needed for positions and
    /// messages, and `advance` counts the emitted text anyway): that count is made here,
    /// when asked for.
    fn raw_line(&self) -> u64 {
        match self.segments.back() {
            Some(seg) if self.lines_pending => {
                // `advance` keeps the first segment starting at the text's base, so the
                // last one never starts before it.
                let from = (seg.text_start.saturating_sub(self.text_base) as usize).min(self.text.len());
                seg.line + memchr::memchr_iter(self.format.terminator(), &self.text[from..]).count() as u64
            }
            _ => self.raw_line,
        }
    }

    /// Appends complete raw lines to the text, setting bad ones aside.
    fn ingest(&mut self, raw: &[u8]) -> Result<()> {
        let orig = self.raw_start;
        if self.encoding == encoding_rs::UTF_8 && simdutf8::basic::from_utf8(raw).is_ok() {
            // The common case: valid UTF-8 goes through as it is, and a chunk that follows
            // the last one without a gap extends its segment (its lines are not counted).
            let text_end = self.text_end();
            let continues =
                self.segments.back().is_some_and(|s| s.identity && s.orig_start + (text_end - s.text_start) == orig);
            if !continues {
                let line = self.raw_line();
                self.segments.push_back(Segment { text_start: text_end, orig_start: orig, line, identity: true });
            }
            self.raw_start += raw.len() as u64;
            self.text.extend_from_slice(raw);
            self.lines_pending = true;
            return Ok(());
        }
        let line = self.raw_line();
        self.raw_line = line;
        self.lines_pending = false;
        self.raw_start += raw.len() as u64;
        let mut offset = orig;
        let mut line_no = line;
        let mut contiguous = false;
        for l in self.raw_lines(raw) {
            let decoded = if self.encoding == encoding_rs::UTF_8 {
                std::str::from_utf8(l).ok().map(std::borrow::Cow::Borrowed)
            } else {
                self.encoding.decode_without_bom_handling_and_without_replacement(l)
            };
            match decoded {
                Some(text) => {
                    let identity = self.encoding == encoding_rs::UTF_8;
                    if !(identity && contiguous) {
                        self.segments.push_back(Segment {
                            text_start: self.text_end(),
                            orig_start: offset,
                            line: line_no,
                            identity,
                        });
                    }
                    contiguous = true;
                    self.text.extend_from_slice(text.as_bytes());
                }
                None => {
                    contiguous = false;
                    let letter = DeadLetter {
                        origin: self.file.display.clone(),
                        line: Some(line_no),
                        offset: Some(offset),
                        reason: format!("bytes that are not valid {}", self.encoding.name()),
                        record: self.encoding.decode_without_bom_handling(l).0.trim_end().to_string(),
                    };
                    if self.format.bad_records == BadRecordPolicy::Fail {
                        return Err(letter.into_error());
                    }
                    self.held_dead.push_back((self.text_end(), letter));
                }
            }
            offset += l.len() as u64;
            line_no += 1;
        }
        self.raw_line = line_no;
        Ok(())
    }

    /// File offset and line of the absolute text offset `pos`.
    fn locate(&self, pos: u64) -> (u64, u64) {
        let seg = self.segments.iter().rev().find(|s| s.text_start <= pos).or_else(|| self.segments.front()).copied();
        let Some(seg) = seg else {
            return (self.raw_start, self.raw_line);
        };
        let from = (seg.text_start.max(self.text_base) - self.text_base) as usize;
        let to = ((pos.max(self.text_base) - self.text_base) as usize).min(self.text.len());
        let lines = if to > from {
            memchr::memchr_iter(self.format.terminator(), &self.text[from..to]).count() as u64
        } else {
            0
        };
        let offset = if seg.identity { seg.orig_start + (pos - seg.text_start) } else { seg.orig_start };
        (offset, seg.line + lines)
    }

    /// Drops emitted text up to `consumed` bytes and releases dead letters it passed.
    fn advance(&mut self, consumed: usize, dead: &mut Vec<DeadLetter>) {
        let new_base = self.text_base + consumed as u64;
        // Keep segment bookkeeping valid for the bytes that remain.
        let (orig, line) = self.locate(new_base);
        while self.segments.len() > 1 && self.segments[1].text_start <= new_base {
            self.segments.pop_front();
        }
        if let Some(first) = self.segments.front_mut()
            && first.text_start < new_base
        {
            first.text_start = new_base;
            first.orig_start = orig;
            first.line = line;
        }
        self.text.consume(consumed);
        self.text_base = new_base;
        self.fed = self.fed.saturating_sub(consumed);
        while self.held_dead.front().is_some_and(|(p, _)| *p <= new_base) {
            if let Some((_, d)) = self.held_dead.pop_front() {
                dead.push(d);
            }
        }
    }

    /// The first record of the remaining text, once complete: `(fields, bytes)`.
    async fn first_record(&mut self) -> Result<Option<(Vec<String>, usize)>> {
        loop {
            let mut rdr = self.format.record_reader(&self.text);
            let mut rec = csv::StringRecord::new();
            let got = rdr.read_record(&mut rec).map_err(|e| decode_err(&self.file.display, e))?;
            let end = rdr.position().byte() as usize;
            let complete = got && (end < self.text.len() || self.text.ends_with(&[self.format.terminator()]));
            if complete || (got && self.input_done()) {
                return Ok(Some((rec.iter().map(str::to_string).collect(), end)));
            }
            if !got && self.input_done() {
                return Ok(None);
            }
            if !self.read_more().await? && !got {
                return Ok(None);
            }
        }
    }

    async fn establish_schema(&mut self, guard: &mut SchemaGuard) -> Result<()> {
        let mut header: Option<Vec<String>> = None;
        if self.header_pending {
            match self.first_record().await? {
                Some((fields, bytes)) => {
                    let mut sink = Vec::new();
                    self.advance(bytes, &mut sink);
                    self.held_dead.extend(sink.into_iter().map(|d| (self.text_base, d)));
                    header = Some(fields);
                }
                None => {
                    // An empty file: nothing to read.
                }
            }
            self.header_pending = false;
        }
        let out: SchemaRef = match (&self.format.schema, header) {
            (Some(declared), _) => declared.clone(),
            (None, Some(names)) => {
                let mut fields = Vec::with_capacity(names.len());
                for (i, n) in names.iter().enumerate() {
                    let name = if n.trim().is_empty() { format!("_col{i}") } else { n.trim().to_string() };
                    if fields.iter().any(|f: &Field| f.name() == &name) {
                        return Err(SourceError::config(
                            "source.firstLine.schema",
                            format!("the header of `{}` names column `{name}` twice", self.file.display),
                        )
                        .into());
                    }
                    fields.push(Field::new(name, DataType::Utf8, true));
                }
                Arc::new(Schema::new(fields))
            }
            (None, None) if self.format.header => match guard.first_names() {
                // Resuming after the header: the names are those of the first file.
                Some(names) => Arc::new(Schema::new(
                    names.into_iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>(),
                )),
                None => return Ok(()),
            },
            (None, None) => match self.first_record().await? {
                Some((fields, _)) => Arc::new(Schema::new(
                    (0..fields.len()).map(|i| Field::new(format!("_col{i}"), DataType::Utf8, true)).collect::<Vec<_>>(),
                )),
                None => match guard.first_names() {
                    Some(names) => Arc::new(Schema::new(
                        names.into_iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>(),
                    )),
                    None => return Ok(()),
                },
            },
        };
        if !(self.text.is_empty() && self.input_done()) || self.format.schema.is_some() {
            guard.check(&self.file.display, &out)?;
        }
        let text_schema = Arc::new(Schema::new(
            out.fields().iter().map(|f| Field::new(f.name(), DataType::Utf8, true)).collect::<Vec<_>>(),
        ));
        let decode_schema = Arc::new(Schema::new(
            out.fields()
                .iter()
                .map(|f| {
                    let direct = matches!(
                        f.data_type(),
                        DataType::Utf8
                            | DataType::Int16
                            | DataType::Int32
                            | DataType::Int64
                            | DataType::Float32
                            | DataType::Float64
                    );
                    Field::new(f.name(), if direct { f.data_type().clone() } else { DataType::Utf8 }, true)
                })
                .collect::<Vec<_>>(),
        ));
        self.decoder = Some(self.format.decoder(&decode_schema));
        self.text_schema = Some(text_schema);
        self.decode_schema = Some(decode_schema);
        self.out_schema = Some(out);
        Ok(())
    }

    /// Start offsets (in `text`) of the records in `text[..len]`.
    fn record_starts(&self, len: usize) -> Vec<usize> {
        let mut rdr = self.format.record_reader(&self.text[..len]);
        let mut rec = csv::ByteRecord::new();
        let mut starts = Vec::new();
        loop {
            let start = rdr.position().byte() as usize;
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => starts.push(start),
                _ => break,
            }
        }
        starts
    }

    fn letter(&self, start: usize, end: usize, reason: String) -> DeadLetter {
        self.letter_at(start, start, end, reason)
    }

    /// A dead letter of `text[start..end]` located at `text[at]`.
    fn letter_at(&self, at: usize, start: usize, end: usize, reason: String) -> DeadLetter {
        let (offset, line) = self.locate(self.text_base + at as u64);
        let end = end.min(self.text.len());
        DeadLetter {
            origin: self.file.display.clone(),
            line: Some(line),
            offset: Some(offset),
            reason,
            record: String::from_utf8_lossy(&self.text[start.min(end)..end]).trim_end().to_string(),
        }
    }

    /// Converts a batch of text columns to the declared types; rows with values that do
    /// not parse are set aside. `consumed` bytes of text hold exactly these rows.
    fn finish(
        &mut self,
        strings: RecordBatch,
        consumed: usize,
        starts: Option<Vec<usize>>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<RecordBatch> {
        let Some(out) = self.out_schema.clone() else {
            return Err(Error::Internal("text reader without a schema".into()));
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(out.fields().len());
        let mut bad: BTreeMap<usize, String> = BTreeMap::new();
        for (i, field) in out.fields().iter().enumerate() {
            let column = strings.column(i);
            if column.data_type() == field.data_type() {
                // Decoded to its type already (the fast decoder).
                columns.push(column.clone());
                continue;
            }
            let converted = convert_strings(column.as_string::<i32>(), field.data_type());
            for (row, why) in converted.errors {
                bad.entry(row).or_insert_with(|| format!("column `{}`: {why}", field.name()));
            }
            columns.push(converted.array);
        }
        let batch = RecordBatch::try_new(out, columns).map_err(|e| decode_err(&self.file.display, e))?;
        let batch = if bad.is_empty() {
            batch
        } else {
            let starts = starts.unwrap_or_else(|| self.record_starts(consumed));
            let mut keep = vec![true; batch.num_rows()];
            for (row, why) in bad {
                let start = starts.get(row).copied().unwrap_or(0);
                let end = starts.get(row + 1).copied().unwrap_or(consumed);
                let letter = self.letter(start, end, why);
                if self.format.bad_records == BadRecordPolicy::Fail {
                    return Err(letter.into_error());
                }
                keep[row] = false;
                dead.push(letter);
            }
            arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep))
                .map_err(|e| decode_err(&self.file.display, e))?
        };
        self.advance(consumed, dead);
        Ok(batch)
    }

    fn strings_batch(&self, schema: &SchemaRef, builders: &mut [StringBuilder], rows: usize) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| decode_err(&self.file.display, e))
    }

    /// Reads up to one batch record by record, setting aside records with the wrong
    /// number of fields. Returns `None` when more text is needed first.
    fn record_by_record(&mut self, dead: &mut Vec<DeadLetter>) -> Result<Option<RecordBatch>> {
        let Some(text_schema) = self.text_schema.clone() else {
            return Ok(None);
        };
        let width = text_schema.fields().len();
        let mut builders: Vec<StringBuilder> = (0..width).map(|_| StringBuilder::new()).collect();
        let mut starts = Vec::new();
        let mut consumed = 0usize;
        // Bad records as (located at, start, end, why).
        let mut set_aside = Vec::new();
        let mut fail_at: Option<(usize, usize, usize, String)> = None;
        {
            let mut rdr = self.format.record_reader(&self.text);
            let mut rec = csv::ByteRecord::new();
            while starts.len() + set_aside.len() < self.format.batch_size {
                let start = rdr.position().byte() as usize;
                match rdr.read_byte_record(&mut rec) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Err(decode_err(&self.file.display, e)),
                }
                let end = rdr.position().byte() as usize;
                let terminated = end < self.text.len() || self.text.ends_with(&[self.format.terminator()]);
                if !terminated && !self.input_done() {
                    break;
                }
                let open = if end == self.text.len() { self.format.open_quote(&self.text[start..end]) } else { None };
                if let Some((_, quote)) = open {
                    let too_long = end - start > self.format.max_field_bytes;
                    if !too_long && !self.input_done() {
                        // The field may close in text not read yet.
                        break;
                    }
                    // The record is cut after the line where its quote opened; reading
                    // resumes at the next line, which is parsed afresh.
                    let quote = start + quote;
                    let line_end =
                        memchr::memchr(self.format.terminator(), &self.text[quote..end]).map_or(end, |i| quote + i + 1);
                    let why = if too_long {
                        format!(
                            "a quoted field opened here is still open after {} bytes (source.field.max.bytes)",
                            self.format.max_field_bytes
                        )
                    } else {
                        "a quoted field opened here is never closed: the file ends inside it".to_string()
                    };
                    if self.format.bad_records == BadRecordPolicy::Fail {
                        fail_at = Some((quote, start, line_end, why));
                    } else {
                        consumed = line_end;
                        set_aside.push((quote, start, line_end, why));
                    }
                    break;
                }
                if rec.len() != width {
                    let why = format!("expected {width} fields, found {}", rec.len());
                    if self.format.bad_records == BadRecordPolicy::Fail {
                        // Records before this one may hold an earlier bad value: convert
                        // them first so the error names the first bad record.
                        fail_at = Some((start, start, end, why));
                        break;
                    }
                    consumed = end;
                    set_aside.push((start, start, end, why));
                    continue;
                }
                consumed = end;
                starts.push(start);
                for (b, field) in builders.iter_mut().zip(rec.iter()) {
                    if field.is_empty() {
                        b.append_null();
                    } else {
                        // The text is valid UTF-8 and fields split it at ASCII bytes.
                        b.append_value(String::from_utf8_lossy(field));
                    }
                }
            }
        }
        if let Some((at, start, end, why)) = fail_at {
            let letter = self.letter_at(at, start, end, why);
            if !starts.is_empty() {
                let strings = self.strings_batch(&text_schema, &mut builders, starts.len())?;
                self.finish(strings, consumed, Some(starts), dead)?;
            }
            return Err(letter.into_error());
        }
        if consumed == 0 {
            return Ok(None);
        }
        let first_new = dead.len();
        for (at, start, end, why) in set_aside {
            let letter = self.letter_at(at, start, end, why);
            if self.format.bad_records == BadRecordPolicy::Fail {
                return Err(letter.into_error());
            }
            dead.push(letter);
        }
        let strings = self.strings_batch(&text_schema, &mut builders, starts.len())?;
        // A fresh decoder continues after the records handled here.
        let fast = self.decode_schema.clone().unwrap_or(text_schema);
        self.decoder = Some(self.format.decoder(&fast));
        self.fed = 0;
        self.open_bytes = 0;
        self.eof_signalled = false;
        let batch = self.finish(strings, consumed, Some(starts), dead)?;
        // Keep dead letters in file order, whichever check found them.
        dead[first_new..].sort_by_key(|d| (d.line, d.offset));
        Ok(Some(batch))
    }
}

#[async_trait]
impl FileReader for TextReader {
    async fn next_batch(&mut self, dead: &mut Vec<DeadLetter>) -> Result<Option<RecordBatch>> {
        if self.decoder.is_none() {
            // An empty file, or a header-only one: release what was set aside and end.
            while self.read_more().await? {}
            let n = self.text.len();
            self.advance(n, dead);
            self.held_dead.drain(..).for_each(|(_, d)| dead.push(d));
            return Ok(None);
        }
        loop {
            let input_done = self.input_done();
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(None);
            };
            let mut failed = false;
            if self.fed < self.text.len() {
                let room = decoder.capacity();
                match decoder.decode(&self.text[self.fed..]) {
                    Ok(n) => {
                        self.fed += n;
                        self.open_bytes = if decoder.capacity() == room { self.open_bytes + n } else { 0 };
                        failed = self.open_bytes > self.format.max_field_bytes;
                    }
                    Err(_) => failed = true,
                }
            }
            if !failed {
                let full = decoder.capacity() == 0;
                let at_end = self.fed == self.text.len() && input_done;
                if at_end && !full && !self.eof_signalled {
                    if self.format.open_quote(&self.text).is_some() {
                        // The decoder would end the open field at the end of the file,
                        // taking every line after the quote into it.
                        failed = true;
                    } else {
                        // Ends a last record that has no line terminator.
                        self.eof_signalled = true;
                        if decoder.decode(&[]).is_err() {
                            failed = true;
                        }
                    }
                }
                if !failed && (full || at_end) {
                    match decoder.flush() {
                        Ok(Some(strings)) => {
                            let consumed = self.fed;
                            return self.finish(strings, consumed, None, dead).map(Some);
                        }
                        Ok(None) if at_end => {
                            let n = self.text.len();
                            self.advance(n, dead);
                            self.held_dead.drain(..).for_each(|(_, d)| dead.push(d));
                            return Ok(None);
                        }
                        Ok(None) => {}
                        Err(_) => failed = true,
                    }
                }
            }
            if failed {
                match self.record_by_record(dead)? {
                    Some(batch) => return Ok(Some(batch)),
                    None => {
                        if !self.read_more().await? && self.text.is_empty() {
                            return Ok(None);
                        }
                        // Start over on a fresh decoder once more text is in.
                        if let Some(schema) = self.decode_schema.clone() {
                            self.decoder = Some(self.format.decoder(&schema));
                            self.fed = 0;
                            self.open_bytes = 0;
                        }
                        continue;
                    }
                }
            }
            if self.fed == self.text.len() && !self.read_more().await? {
                // Everything read; the next turn flushes what is left.
                continue;
            }
        }
    }

    fn position(&self) -> FilePosition {
        let (offset, line) = self.locate(self.text_base);
        let (offset, line) = if self.segments.is_empty() { (self.raw_start, self.raw_line()) } else { (offset, line) };
        FilePosition::Text {
            offset,
            line,
            encoding: self.encoding.name().to_string(),
            header_done: !self.header_pending,
        }
    }

    fn bytes_done(&self) -> u64 {
        match self.position() {
            FilePosition::Text { offset, .. } => offset,
            FilePosition::Rows { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_in_every_form() {
        for (v, b) in [
            (",", b','),
            ("\t", b'\t'),
            ("\\t", b'\t'),
            ("44", b','),
            ("9", b'\t'),
            ("0x01", 1),
            ("\\u0001", 1),
            ("\\x1f", 0x1f),
            ("|", b'|'),
            ("1", 1),
            ("001", 1),
        ] {
            assert_eq!(parse_delimiter("source.field.delimiter", v).unwrap(), b, "{v}");
        }
        for bad in ["", "ab", "300", "，", "\\q"] {
            let e = parse_delimiter("source.field.delimiter", bad).unwrap_err().to_string();
            assert!(e.contains("source.field.delimiter"), "{bad}: {e}");
        }
    }

    #[test]
    fn charsets_by_label() {
        assert_eq!(parse_charset("source.charset", "gbk").unwrap(), encoding_rs::GBK);
        assert_eq!(parse_charset("source.charset", "UTF-16").unwrap(), encoding_rs::UTF_16LE);
        assert_eq!(parse_charset("source.charset", "ISO-8859-1").unwrap(), encoding_rs::WINDOWS_1252);
        assert!(parse_charset("source.charset", "klingon").unwrap_err().to_string().contains("klingon"));
    }
}
