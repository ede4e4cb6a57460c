//! Streaming CSV input that keeps each record's original bytes.
//!
//! Owns how donor exports are read: a UTF-8 BOM is skipped, CRLF and LF both end records,
//! quoted fields may hold the delimiter, doubled quotes and newlines, blank lines are ignored.
//! Fields are separated by commas unless the reader is given another [`Delimiter`] (an export
//! saved with semicolons, tabs or pipes). Each record comes with its unescaped fields
//! ([`Fields`], what validation and rules read) *and* its raw bytes, so the segmenter can copy a
//! row to its chunk without re-serialising it (re-serialising costs as much as parsing), and
//! with the physical line it starts on, so every report can name a line.
//!
//! Also owns how a row is written back as comma-separated CSV ([`push_field`],
//! [`RawRecord::push_comma_line`]): every file a run holds is comma-separated, whatever the
//! export's delimiter.
//!
//! It never decides whether a record is valid: field counts, UTF-8 and values are the caller's
//! business. It never loads the whole file: memory is one buffer plus the longest record.

use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::hex;

/// How much input is read per system call. Big enough that syscalls vanish from profiles.
const READ_SIZE: usize = 256 * 1024;

/// The longest donor row: a longer one is rejected, with its line (no donor needs more).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A record still growing past this is an unclosed quote swallowing the rest of the file:
/// stopping here beats buffering a gigabyte to report it.
const BUFFER_LIMIT: usize = 64 * MAX_RECORD_BYTES;

/// A record over [`MAX_RECORD_BYTES`] that spans more lines than this is an unclosed quote
/// too, not one long row.
const MAX_LONG_RECORD_LINES: u64 = 1000;

/// The byte between the fields of a donor export: a comma, or what a spreadsheet wrote
/// instead (Excel writes semicolons where the comma is the decimal mark: Germany, France,
/// Poland...). Only these four: a letter, digit or space would split ordinary values, and a
/// quote or line break is part of CSV's own syntax. In a manifest it is the character itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Delimiter(u8);

impl Delimiter {
    /// `,`: CSV proper, and what every file of a run holds.
    pub const COMMA: Delimiter = Delimiter(b',');
    /// `;`: Excel's "CSV" in locales whose decimal mark is a comma.
    pub const SEMICOLON: Delimiter = Delimiter(b';');
    /// A tab: "tab-separated values", as databases and Excel's "Text" export write.
    pub const TAB: Delimiter = Delimiter(b'\t');
    /// `|`: some CRMs' "flat file" export.
    pub const PIPE: Delimiter = Delimiter(b'|');

    /// The byte itself.
    pub fn byte(self) -> u8 {
        self.0
    }

    /// How to write it after `--delimiter` in a shell: `';'`, `tab`, ...
    pub fn flag_value(self) -> &'static str {
        match self.0 {
            b',' => "','",
            b';' => "';'",
            b'\t' => "tab",
            _ => "'|'",
        }
    }

    fn from_char(s: &str) -> Option<Delimiter> {
        [
            Delimiter::COMMA,
            Delimiter::SEMICOLON,
            Delimiter::TAB,
            Delimiter::PIPE,
        ]
        .into_iter()
        .find(|d| s.as_bytes() == [d.0])
    }
}

impl Default for Delimiter {
    fn default() -> Delimiter {
        Delimiter::COMMA
    }
}

/// Why a `--delimiter` value cannot separate fields (clap names the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}; use ';', '|', ',' or tab (also written '\\t')")]
pub struct DelimiterError {
    why: &'static str,
}

impl FromStr for Delimiter {
    type Err = DelimiterError;

    /// The character itself, or for a tab also `\t` or the word `tab` (a tab is hard to type
    /// on a command line).
    fn from_str(s: &str) -> Result<Delimiter, DelimiterError> {
        if let Some(d) = Delimiter::from_char(s) {
            return Ok(d);
        }
        if s == "\\t" || s.eq_ignore_ascii_case("tab") {
            return Ok(Delimiter::TAB);
        }
        let quoted = |q: char| s.len() > 2 && s.starts_with(q) && s.ends_with(q);
        let why = if s.is_empty() {
            "the value is empty"
        } else if s == "\"" || s == "'" {
            "a quote encloses fields, it cannot separate them"
        } else if quoted('\'') || quoted('"') {
            "the quotes around it are part of the value (the shell did not remove them): write the character alone"
        } else if s.contains(['\n', '\r']) {
            "a line break ends rows, it cannot separate fields"
        } else if s.chars().count() == 1 && !s.is_ascii() {
            "not an ASCII character (a separator is one byte)"
        } else if s.chars().count() > 1 {
            "a separator is one character"
        } else {
            "not a separator exports use"
        };
        Err(DelimiterError { why })
    }
}

impl TryFrom<String> for Delimiter {
    type Error = String;

    /// The manifest's form: the character itself, nothing else.
    fn try_from(s: String) -> Result<Delimiter, String> {
        Delimiter::from_char(&s).ok_or_else(|| {
            format!("{s:?} is not a delimiter (one of \",\", \";\", \"|\", \"\\t\")")
        })
    }
}

impl From<Delimiter> for String {
    fn from(d: Delimiter) -> String {
        char::from(d.0).to_string()
    }
}

/// One CSV row's fields after CSV unescaping, borrowed from the parser's buffers: the field
/// text, either concatenated (as csv_core writes it) or a plain line with its delimiters, and
/// each field's end offset in it.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    data: &'a str,
    ends: &'a [usize],
    /// Bytes between a field's end and the next field's start.
    gap: usize,
}

impl<'a> Fields<'a> {
    /// Wraps the concatenated field text and the end offset of each field.
    pub fn new(data: &'a str, ends: &'a [usize]) -> Self {
        Fields { data, ends, gap: 0 }
    }

    /// Wraps text whose fields are separated by one byte (a plain CSV line, which needs no
    /// copy) and the end offset of each field.
    pub fn separated(data: &'a str, ends: &'a [usize]) -> Self {
        Fields { data, ends, gap: 1 }
    }

    /// Number of fields in the row.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the row has no fields at all.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The text of field `i`, untrimmed.
    ///
    /// # Panics
    ///
    /// Panics if `i >= len()` or if the offsets do not fall on character boundaries; both are
    /// programmer errors, never caused by file contents.
    #[inline]
    pub fn get(&self, i: usize) -> &'a str {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1] + self.gap
        };
        &self.data[start..self.ends[i]]
    }

    /// Field `i`, or `""` when the row is shorter than the header, so evaluation never panics.
    #[inline]
    pub(crate) fn get_or_empty(&self, i: usize) -> &'a str {
        if i < self.ends.len() { self.get(i) } else { "" }
    }
}

/// One CSV record as read.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The record's original bytes, without the line terminator.
    pub raw: &'a [u8],
    /// The field bytes, unescaped; see `ends` and `gap`.
    data: &'a [u8],
    /// `ends[i]` is the end offset of field `i` in `data`.
    ends: &'a [usize],
    /// Bytes between one field's end and the next one's start in `data`: 1 when `data` is the
    /// line itself (delimiters left in place, nothing copied), 0 when csv_core unescaped it.
    gap: usize,
    /// `data` as text, when it was already checked to be UTF-8 with the rest of its batch
    /// ([`RecordBatch::checked`]), so [`RawRecord::fields`] need not check it again.
    text: Option<&'a str>,
    /// 1-based physical line the record starts on (the header is line 1).
    pub line: u64,
    /// Physical lines the record spans (more than 1 when a quoted field holds newlines).
    pub lines: u64,
}

impl<'a> RawRecord<'a> {
    /// How many fields the record has.
    pub fn field_count(&self) -> usize {
        self.ends.len()
    }

    /// Copies the fields (not the raw bytes) out of the reader's buffers.
    pub fn to_owned_record(&self) -> OwnedRecord {
        OwnedRecord {
            data: self.data.to_vec(),
            ends: self.ends.to_vec(),
            gap: self.gap,
            line: self.line,
            lines: self.lines,
        }
    }

    /// Appends the record to `out` as one comma-separated line ending in `\n`, each field
    /// quoted only when it needs quotes: how a row of an export with another delimiter is
    /// written into a run. Bytes that are not UTF-8 are copied as they are.
    pub fn push_comma_line(&self, out: &mut Vec<u8>) {
        let field = |i: usize| {
            let start = if i == 0 {
                0
            } else {
                self.ends[i - 1] + self.gap
            };
            &self.data[start..self.ends[i]]
        };
        if let [end] = self.ends
            && *end == 0
        {
            // A lone empty field would be a blank line, which readers skip.
            out.extend_from_slice(b"\"\"\n");
            return;
        }
        // Most rows are a plain line (no quote, CR or LF): without a comma in it either, no
        // field needs quotes, and swapping the delimiters in a copy of the line is the rewrite.
        if self.gap == 1 && memchr::memchr(b',', self.data).is_none() {
            let at = out.len();
            out.extend_from_slice(self.data);
            for &end in &self.ends[..self.ends.len() - 1] {
                out[at + end] = b',';
            }
            out.push(b'\n');
            return;
        }
        for i in 0..self.ends.len() {
            if i > 0 {
                out.push(b',');
            }
            push_field(out, field(i));
        }
        out.push(b'\n');
    }

    /// The record's fields as text; fails when they are not UTF-8.
    pub fn fields(&self) -> Result<Fields<'a>, std::str::Utf8Error> {
        let data = match self.text {
            Some(text) => text,
            None => std::str::from_utf8(self.data)?,
        };
        Ok(if self.gap == 0 {
            Fields::new(data, self.ends)
        } else {
            Fields::separated(data, self.ends)
        })
    }
}

/// A record's fields copied out of the reader's buffers, to be read again later (a retry
/// renders a donor's message again).
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    data: Vec<u8>,
    ends: Vec<usize>,
    gap: usize,
    line: u64,
    lines: u64,
}

impl OwnedRecord {
    /// The record again, without its raw bytes.
    pub fn record(&self) -> RawRecord<'_> {
        RawRecord {
            raw: &[],
            data: &self.data,
            ends: &self.ends,
            gap: self.gap,
            text: None,
            line: self.line,
            lines: self.lines,
        }
    }
}

/// Records copied out of the reader in input order, so they can be classified on other
/// threads and then routed by their raw bytes. Buffers are kept across [`RecordBatch::clear`],
/// so a reused batch allocates nothing.
#[derive(Debug, Default)]
pub struct RecordBatch {
    /// Each record's raw bytes followed by `\n`.
    raw: Vec<u8>,
    /// Unescaped fields of the records csv_core read; plain lines are read from `raw`.
    unescaped: Vec<u8>,
    ends: Vec<usize>,
    recs: Vec<BatchedRecord>,
}

#[derive(Debug, Clone, Copy)]
struct BatchedRecord {
    /// End of the record's raw bytes (its `\n` excluded) in `raw`.
    raw_end: usize,
    /// Start and end of its field text in `unescaped`, or `None` when that is its raw bytes.
    unescaped_at: Option<(usize, usize)>,
    /// End of its field ends in `ends`.
    ends_end: usize,
    line: u64,
    lines: u64,
}

impl RecordBatch {
    /// Appends a copy of `rec`.
    pub fn push(&mut self, rec: &RawRecord<'_>) {
        let raw_start = self.raw.len();
        self.raw.extend_from_slice(rec.raw);
        let raw_end = self.raw.len();
        self.raw.push(b'\n');
        let unescaped_at = if rec.gap == 1 {
            None
        } else {
            let at = self.unescaped.len();
            self.unescaped.extend_from_slice(rec.data);
            Some((at, self.unescaped.len()))
        };
        debug_assert!(rec.gap == 0 || rec.data.len() == raw_end - raw_start);
        self.ends.extend_from_slice(rec.ends);
        self.recs.push(BatchedRecord {
            raw_end,
            unescaped_at,
            ends_end: self.ends.len(),
            line: rec.line,
            lines: rec.lines,
        });
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Record `i`, as the reader returned it.
    pub fn get(&self, i: usize) -> RawRecord<'_> {
        let r = self.recs[i];
        let ends_start = match i {
            0 => 0,
            _ => self.recs[i - 1].ends_end,
        };
        let line = self.terminated(i);
        let raw = &line[..line.len() - 1];
        let (data, gap) = match r.unescaped_at {
            None => (raw, 1),
            Some((start, end)) => (&self.unescaped[start..end], 0),
        };
        RawRecord {
            raw,
            data,
            ends: &self.ends[ends_start..r.ends_end],
            gap,
            text: None,
            line: r.line,
            lines: r.lines,
        }
    }

    /// The physical line record `i` starts on.
    pub fn line(&self, i: usize) -> u64 {
        self.recs[i].line
    }

    /// Record `i`'s raw bytes followed by `\n`, ready to be written out as a line.
    pub fn terminated(&self, i: usize) -> &[u8] {
        &self.raw[self.raw_start(i)..=self.recs[i].raw_end]
    }

    /// Records `range` with their bytes checked as UTF-8 in one pass over the batch's buffers
    /// instead of one per record: a record is a stretch of checked text between line breaks
    /// (ASCII, so never inside a character), and slicing it out proves it is text too. A
    /// stretch that is not all UTF-8 leaves each of its records to [`RawRecord::fields`],
    /// which then says where the bad byte is.
    pub fn checked(&self, range: std::ops::Range<usize>) -> CheckedRecords<'_> {
        let recs = &self.recs[range.clone()];
        let raw_start = self.raw_start(range.start);
        let raw_end = recs.last().map_or(raw_start, |r| r.raw_end);
        let unescaped_start = recs
            .iter()
            .find_map(|r| r.unescaped_at)
            .map_or(0, |(start, _)| start);
        let unescaped_end = recs
            .iter()
            .rev()
            .find_map(|r| r.unescaped_at)
            .map_or(0, |(_, end)| end);
        CheckedRecords {
            batch: self,
            raw: checked_text(&self.raw[raw_start..raw_end], raw_start),
            unescaped: checked_text(
                &self.unescaped[unescaped_start..unescaped_end],
                unescaped_start,
            ),
        }
    }

    /// Where record `i`'s raw bytes start in `raw` (the end of the batch for `i == len()`).
    fn raw_start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.recs[i - 1].raw_end + 1,
        }
    }

    /// Clears the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.raw.clear();
        self.unescaped.clear();
        self.ends.clear();
        self.recs.clear();
    }
}

/// Records of a [`RecordBatch`] whose text was checked as UTF-8 in bulk
/// ([`RecordBatch::checked`]).
pub struct CheckedRecords<'a> {
    batch: &'a RecordBatch,
    /// The checked stretch of the batch's raw bytes and where it starts, if it is all UTF-8.
    raw: Option<(usize, &'a str)>,
    /// The same for the unescaped fields of the records csv_core read.
    unescaped: Option<(usize, &'a str)>,
}

impl<'a> CheckedRecords<'a> {
    /// Record `i` of the batch (one of the checked ones), as [`RecordBatch::get`] returns it
    /// but with its text already checked when its stretch was all UTF-8.
    pub fn get(&self, i: usize) -> RawRecord<'a> {
        let mut rec = self.batch.get(i);
        let r = self.batch.recs[i];
        rec.text = match r.unescaped_at {
            None => self
                .raw
                .and_then(|(at, text)| text.get(self.batch.raw_start(i) - at..r.raw_end - at)),
            Some((start, end)) => self
                .unescaped
                .and_then(|(at, text)| text.get(start - at..end - at)),
        };
        rec
    }
}

/// `bytes` as text, if they are UTF-8, with where they start. A vectorised check pays on a
/// batch's worth of text; on one row at a time it barely did.
fn checked_text(bytes: &[u8], at: usize) -> Option<(usize, &str)> {
    simdutf8::basic::from_utf8(bytes)
        .ok()
        .map(|text| (at, text))
}

/// Errors reading CSV input.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The underlying reader failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// A record grew past [`MAX_RECORD_BYTES`] over many lines, or past the buffer's limit.
    #[error(
        "line {line}: a record longer than {} bytes starts here and runs on over many lines; this is almost always a quote (\") that is never closed, so check the quoting on that line",
        MAX_RECORD_BYTES
    )]
    RecordTooLong {
        /// Line the record starts on.
        line: u64,
    },
}

/// A streaming CSV reader over any byte source that keeps raw record bytes.
pub struct RawReader<R> {
    src: R,
    core: csv_core::Reader,
    buf: Vec<u8>,
    /// Start of the current record in `buf`.
    start: usize,
    /// How far `core` has consumed `buf`.
    pos: usize,
    /// Valid bytes in `buf`.
    len: usize,
    eof: bool,
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Physical line at `start`.
    line: u64,
    /// The last byte consumed was a CR: an LF right after it ends no further line (CRLF is
    /// one line break; a CR alone, as old Mac exports write, is one too).
    after_cr: bool,
    bytes_read: u64,
    /// SHA-256 of every byte read, when asked for.
    sha256: Option<Sha256>,
    first: bool,
    /// Whether lines without quotes or stray carriage returns skip csv_core (always, except
    /// in tests that compare both paths).
    plain: bool,
    /// The field delimiter, which `core` was built with too.
    delimiter: u8,
}

impl<R: Read> RawReader<R> {
    /// Reads comma-separated CSV from `src`.
    pub fn new(src: R) -> Self {
        RawReader {
            src,
            core: csv_core::Reader::new(),
            buf: vec![0; READ_SIZE * 2],
            start: 0,
            pos: 0,
            len: 0,
            eof: false,
            out: vec![0; 4096],
            ends: vec![0; 64],
            line: 1,
            bytes_read: 0,
            sha256: None,
            first: true,
            plain: true,
            after_cr: false,
            delimiter: b',',
        }
    }

    /// Separates fields by `d` instead of commas, for the plain-line path and csv_core alike.
    pub fn with_delimiter(mut self, d: Delimiter) -> Self {
        self.delimiter = d.byte();
        self.core = csv_core::ReaderBuilder::new().delimiter(d.byte()).build();
        self
    }

    /// Hashes every byte read (BOM and blank lines included) with SHA-256, for
    /// [`RawReader::sha256`]: hashing each buffer as it is read spares a second pass or a copy.
    pub fn with_sha256(mut self) -> Self {
        self.sha256 = Some(Sha256::new());
        self
    }

    /// The lowercase hex SHA-256 of the bytes read so far (the whole input once
    /// [`RawReader::next_record`] has returned `None`), if asked for with
    /// [`RawReader::with_sha256`].
    pub fn sha256(&self) -> Option<String> {
        self.sha256.as_ref().map(|h| hex(&h.clone().finalize()))
    }

    /// Bytes consumed from the source so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Moves the unfinished record to the front of the buffer and reads more.
    fn refill(&mut self) -> Result<(), CsvError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.len, 0);
            self.len -= self.start;
            self.pos -= self.start;
            self.start = 0;
        }
        if self.len > BUFFER_LIMIT {
            return Err(CsvError::RecordTooLong { line: self.line });
        }
        if self.buf.len() - self.len < READ_SIZE {
            self.buf.resize(self.len + READ_SIZE, 0);
        }
        let n = loop {
            match self.src.read(&mut self.buf[self.len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(h) = self.sha256.as_mut() {
            h.update(&self.buf[self.len..self.len + n]);
        }
        self.len += n;
        self.bytes_read += n as u64;
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// The next record, or `None` at the end of input.
    pub fn next_record(&mut self) -> Result<Option<RawRecord<'_>>, CsvError> {
        if self.first {
            self.skip_bom()?;
        }
        // A line right after a lone CR may start with that CR's LF: csv_core decides.
        if self.plain
            && !self.after_cr
            && let Some(nend) = self.plain_line()?
        {
            let raw = &self.buf[self.start..self.pos];
            let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = self.line;
            self.line += u64::from(self.buf[self.pos - 1] == b'\n');
            self.after_cr = false;
            self.start = self.pos;
            return Ok(Some(RawRecord {
                raw,
                data: raw,
                ends: &self.ends[..nend],
                gap: 1,
                text: None,
                line,
                lines: 1,
            }));
        }
        let mut nout = 0;
        let mut nend = 0;
        loop {
            if self.pos == self.len && !self.eof {
                self.refill()?;
            }
            let input = &self.buf[self.pos..self.len];
            let (res, nin, o, e) =
                self.core
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nend..]);
            self.pos += nin;
            nout += o;
            nend += e;
            use csv_core::ReadRecordResult as R;
            match res {
                R::InputEmpty => continue,
                R::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                R::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                R::End => return Ok(None),
                R::Record => {
                    let rec = self.take_record(nout, nend);
                    if rec.raw.len() > MAX_RECORD_BYTES && rec.lines > MAX_LONG_RECORD_LINES {
                        return Err(CsvError::RecordTooLong { line: rec.line });
                    }
                    return Ok(Some(rec));
                }
            }
        }
    }

    /// Splits the next line on the delimiter without csv_core when nothing in it needs csv_core:
    /// no quote and no carriage return except one just before the newline. Most rows of a
    /// real export are like that, and scanning eight bytes at a time for the four bytes that
    /// matter costs a fraction of csv_core's byte-at-a-time state machine. Blank lines are
    /// skipped here as csv_core would skip them. Returns the field count, with the delimiter
    /// offsets in `ends` and `pos` just past the line, or `None` (having consumed nothing but
    /// blank lines) when the line must go through csv_core, which is also how the end of input
    /// is left to csv_core to report.
    fn plain_line(&mut self) -> Result<Option<usize>, CsvError> {
        loop {
            let (end, next, fields) = match scan_plain(
                &self.buf[self.pos..self.len],
                &mut self.ends,
                self.delimiter,
            ) {
                Scan::Line { end, next, fields } => (end, next, fields),
                Scan::NeedsCore => return Ok(None),
                Scan::Unfinished { fields } if self.eof => {
                    let rest = self.len - self.pos;
                    if rest == 0 || self.buf[self.len - 1] == b'\r' {
                        return Ok(None);
                    }
                    (rest, rest, fields)
                }
                Scan::Unfinished { .. } => {
                    self.refill()?;
                    continue;
                }
            };
            if end == 0 {
                self.pos += next;
                self.start = self.pos;
                self.line += u64::from(next > end);
                continue;
            }
            self.pos += next;
            return Ok(Some(fields));
        }
    }

    /// csv_core only strips a BOM that arrives in one piece, so look for it ourselves.
    fn skip_bom(&mut self) -> Result<(), CsvError> {
        self.first = false;
        while self.len < 3 && !self.eof {
            self.refill()?;
        }
        if self.buf[..self.len].starts_with(b"\xef\xbb\xbf") {
            self.start = 3;
            self.pos = 3;
        }
        Ok(())
    }

    fn take_record(&mut self, nout: usize, nend: usize) -> RawRecord<'_> {
        let mut raw = &self.buf[self.start..self.pos];
        self.start = self.pos;
        // Blank lines before a record and the terminator's halves land at either end of
        // the raw slice depending on where a read boundary fell; trim both ends.
        let mut after_cr = self.after_cr;
        let lead = raw
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let skipped = line_breaks(&raw[..lead], &mut after_cr);
        raw = &raw[lead..];
        let trail = raw
            .iter()
            .rev()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let (body, ending) = raw.split_at(raw.len() - trail);
        // Only a quoted field can hold a line break, so most records need no count at all.
        let inner = if memchr::memchr(b'"', body).is_some() {
            line_breaks(body, &mut after_cr)
        } else {
            after_cr &= body.is_empty();
            0
        };
        let trailing = line_breaks(ending, &mut after_cr);
        self.after_cr = after_cr;
        raw = body;
        let line = self.line + skipped;
        self.line = line + inner + trailing;
        RawRecord {
            raw,
            data: &self.out[..nout],
            ends: &self.ends[..nend],
            gap: 0,
            text: None,
            line,
            lines: inner + 1,
        }
    }
}

/// Line breaks in `s`: an LF, a CRLF (one), and a CR alone, as old Mac exports end lines.
/// `after_cr` says whether the byte before `s` was a CR, and is left saying whether `s`'s last
/// byte is one.
fn line_breaks(s: &[u8], after_cr: &mut bool) -> u64 {
    let mut n = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', s) {
        let cr_before = if i == 0 { *after_cr } else { s[i - 1] == b'\r' };
        n += u64::from(s[i] == b'\r' || !cr_before);
    }
    if let Some(&last) = s.last() {
        *after_cr = last == b'\r';
    }
    n
}

/// What [`scan_plain`] found at the start of some bytes.
enum Scan {
    /// A line without quotes or stray carriage returns: its text is `..end` (no terminator),
    /// it has `fields` fields and the next line starts at `next`.
    Line {
        end: usize,
        next: usize,
        fields: usize,
    },
    /// The line has a quote or a carriage return that is not part of its terminator.
    NeedsCore,
    /// No line end yet; more input decides. At the end of input the rest is the line, with
    /// `fields` fields.
    Unfinished { fields: usize },
}

/// Eight copies of a byte.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// The high bit of each byte of `w` that is zero, and no other bit. Unlike the shorter
/// `(w - 0x01..) & !w & 0x80..` this has no false positives, since no carry crosses bytes.
fn zero_bytes(w: u64) -> u64 {
    const LOW7: u64 = splat(0x7f);
    !(((w & LOW7).wrapping_add(LOW7)) | w | LOW7)
}

/// Scans one line for `delimiter` (its offsets go to `ends`, followed by the line's end, so
/// `ends` holds every field's end) eight bytes at a time. Grows `ends` as needed.
fn scan_plain(bytes: &[u8], ends: &mut Vec<usize>, delimiter: u8) -> Scan {
    let delimiters = splat(delimiter);
    let mut n = 0;
    let mut base = 0;
    while base < bytes.len() {
        let w = match bytes.get(base..base + 8).map(<[u8; 8]>::try_from) {
            Some(Ok(word)) => u64::from_le_bytes(word),
            // Zero padding past the input is none of the bytes looked for.
            _ => {
                let mut word = [0u8; 8];
                word[..bytes.len() - base].copy_from_slice(&bytes[base..]);
                u64::from_le_bytes(word)
            }
        };
        // A word holds at most eight delimiters, and the line's end may follow.
        if ends.len() < n + 9 {
            ends.resize((n + 9) * 2, 0);
        }
        let mut found = zero_bytes(w ^ delimiters);
        // LF, CR and '"' are the only bytes looked for below 0x23 besides the delimiter (found
        // above, even a tab), and text rarely has any byte that low but a space, so a cheap
        // test for "some byte below 0x23" (no false negatives) skips the exact search in most
        // words.
        let low = w.wrapping_sub(splat(0x23)) & !w & splat(0x80);
        let special = if low == 0 {
            0
        } else {
            zero_bytes(w ^ splat(b'\n'))
                | zero_bytes(w ^ splat(b'"'))
                | zero_bytes(w ^ splat(b'\r'))
        };
        let stop = (special != 0).then(|| special.trailing_zeros() as usize / 8);
        if let Some(first) = stop {
            // Only delimiters before the line's end belong to it.
            found &= (1u64 << (first * 8)).wrapping_sub(1);
        }
        while found != 0 {
            ends[n] = base + found.trailing_zeros() as usize / 8;
            n += 1;
            found &= found - 1;
        }
        if let Some(first) = stop {
            let at = base + first;
            let next = match (bytes[at], bytes.get(at + 1)) {
                (b'\n', _) => at + 1,
                (b'\r', Some(b'\n')) => at + 2,
                // The line continues or ends with a lone carriage return at the end of
                // input; `plain_line` leaves the latter to csv_core.
                (b'\r', None) => return Scan::Unfinished { fields: 0 },
                _ => return Scan::NeedsCore,
            };
            ends[n] = at;
            return Scan::Line {
                end: at,
                next,
                fields: n + 1,
            };
        }
        base += 8;
    }
    if ends.len() <= n {
        ends.resize(n + 1, 0);
    }
    ends[n] = bytes.len();
    Scan::Unfinished { fields: n + 1 }
}

/// Appends `field` to `out` as one field of comma-separated CSV, quoting it when it needs
/// quotes.
pub fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let needs = field
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for &b in field {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per read, so every record crosses a buffer boundary.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    fn collect<R: Read>(r: R) -> Vec<(u64, u64, String, Vec<String>)> {
        let mut rdr = RawReader::new(r);
        let mut v = Vec::new();
        while let Some(rec) = rdr.next_record().unwrap() {
            let f = rec.fields().unwrap();
            let fields = (0..f.len()).map(|i| f.get(i).to_owned()).collect();
            v.push((
                rec.line,
                rec.lines,
                String::from_utf8(rec.raw.to_vec()).unwrap(),
                fields,
            ));
        }
        v
    }

    const TRICKY: &[u8] = b"\xef\xbb\xbfid,name,note\r\n1,\"Smith, Jo\",plain\r\n\r\n2,Zo\xc3\xab,\"said \"\"hi\"\"\r\nthere\"\r\n3,x,last";

    #[test]
    fn bom_crlf_quotes_newlines_blank_lines() {
        for recs in [collect(TRICKY), collect(Trickle(TRICKY))] {
            assert_eq!(recs.len(), 4);
            assert_eq!(recs[0].2, "id,name,note");
            assert_eq!(recs[0].3, ["id", "name", "note"]);
            assert_eq!(recs[1].0, 2);
            assert_eq!(recs[1].3, ["1", "Smith, Jo", "plain"]);
            assert_eq!(recs[1].2, "1,\"Smith, Jo\",plain");
            // The blank line 3 is skipped; the record starts on line 4 and spans two lines.
            assert_eq!((recs[2].0, recs[2].1), (4, 2));
            assert_eq!(recs[2].3, ["2", "Zoë", "said \"hi\"\r\nthere"]);
            assert_eq!(recs[2].2, "2,Zo\u{eb},\"said \"\"hi\"\"\r\nthere\"");
            assert_eq!((recs[3].0, recs[3].1), (6, 1));
            assert_eq!(recs[3].3, ["3", "x", "last"]);
        }
    }

    /// Hands out reads of varying small sizes, so records and CRLFs split everywhere.
    struct Ragged<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Ragged<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.step = self.step * 7 % 31 + 1;
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn collect_with<R: Read>(r: R, plain: bool) -> Vec<(u64, u64, Vec<u8>, Vec<String>)> {
        collect_delimited(r, plain, Delimiter::COMMA)
    }

    fn collect_delimited<R: Read>(
        r: R,
        plain: bool,
        d: Delimiter,
    ) -> Vec<(u64, u64, Vec<u8>, Vec<String>)> {
        let mut rdr = RawReader::new(r).with_delimiter(d);
        rdr.plain = plain;
        let mut v = Vec::new();
        while let Some(rec) = rdr.next_record().unwrap() {
            let f = rec.fields().unwrap();
            let fields = (0..f.len()).map(|i| f.get(i).to_owned()).collect();
            v.push((rec.line, rec.lines, rec.raw.to_vec(), fields));
        }
        v
    }

    /// The plain-line shortcut must be invisible: on random input full of quotes, stray
    /// carriage returns, blank lines and empty fields it gives exactly what csv_core gives,
    /// wherever the reads happen to split the input, whatever the delimiter.
    #[test]
    fn plain_lines_read_exactly_as_csv_core_reads_them() {
        for d in [
            Delimiter::COMMA,
            Delimiter::SEMICOLON,
            Delimiter::TAB,
            Delimiter::PIPE,
        ] {
            plain_lines_match_csv_core(d);
        }
    }

    fn plain_lines_match_csv_core(d: Delimiter) {
        let delimiter = [d.byte()];
        let alphabet: &[&[u8]] = &[
            b"a",
            b"bc",
            b"\xc3\xab",
            &delimiter,
            &delimiter,
            &delimiter,
            // Another delimiter's byte is only text.
            b",;",
            b"\"",
            b"\"\"",
            b"\n",
            b"\r\n",
            b"\r",
            b" ",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for case in 0..2000 {
            let mut data = Vec::new();
            if case % 5 == 0 {
                data.extend_from_slice(b"\xef\xbb\xbf");
            }
            for _ in 0..next(60) {
                // Mostly plain text, so whole plain lines occur between the awkward bytes.
                let piece = if next(3) == 0 {
                    alphabet[next(alphabet.len())]
                } else {
                    alphabet[next(4)]
                };
                data.extend_from_slice(piece);
            }
            let slow = collect_delimited(&data[..], false, d);
            let fast = collect_delimited(&data[..], true, d);
            assert_eq!(fast, slow, "{} input {data:?}", d.flag_value());
            let ragged = Ragged {
                data: &data,
                step: case,
            };
            let ragged = collect_delimited(ragged, true, d);
            assert_eq!(ragged, slow, "{} ragged input {data:?}", d.flag_value());
        }
    }

    /// A row of a semicolon export, quoted fields and all, written with commas reads back
    /// with the same fields, whichever path read it.
    #[test]
    fn a_row_rewritten_with_commas_keeps_its_fields() {
        let data = b"email;name;note\r\na@example.org;\"Smith; Jo, Dr\";plain\nb@example.org;Zo\xc3\xab, B;\"say \"\"hi\"\"\nthere\"\nc@example.org;;\n\"\"\n";
        for plain in [true, false] {
            let read = collect_delimited(&data[..], plain, Delimiter::SEMICOLON);
            let mut rdr = RawReader::new(&data[..]).with_delimiter(Delimiter::SEMICOLON);
            rdr.plain = plain;
            let mut commas = Vec::new();
            while let Some(rec) = rdr.next_record().unwrap() {
                rec.push_comma_line(&mut commas);
            }
            let again: Vec<Vec<String>> = collect_with(&commas[..], false)
                .into_iter()
                .map(|r| r.3)
                .collect();
            let fields: Vec<Vec<String>> = read.into_iter().map(|r| r.3).collect();
            assert_eq!(again, fields, "{}", String::from_utf8_lossy(&commas));
            assert_eq!(fields[1], ["a@example.org", "Smith; Jo, Dr", "plain"]);
            assert_eq!(fields[4], [""]);
            assert!(
                commas.starts_with(b"email,name,note\na@example.org,\"Smith; Jo, Dr\",plain\n"),
                "{}",
                String::from_utf8_lossy(&commas)
            );
        }
    }

    #[test]
    fn delimiters_are_parsed_with_a_reason_for_each_refusal() {
        for (flag, d) in [
            (";", Delimiter::SEMICOLON),
            (",", Delimiter::COMMA),
            ("|", Delimiter::PIPE),
            ("\t", Delimiter::TAB),
            ("\\t", Delimiter::TAB),
            ("tab", Delimiter::TAB),
            ("TAB", Delimiter::TAB),
        ] {
            assert_eq!(flag.parse::<Delimiter>(), Ok(d), "{flag:?}");
        }
        for (flag, why) in [
            ("", "the value is empty"),
            ("\"", "quote encloses fields"),
            ("';'", "the shell did not remove them"),
            ("\n", "line break"),
            ("§", "not an ASCII character"),
            (";;", "one character"),
            ("x", "not a separator exports use"),
            (" ", "not a separator exports use"),
        ] {
            let e = flag.parse::<Delimiter>().unwrap_err().to_string();
            assert!(e.contains(why), "{flag:?}: {e}");
            assert!(
                e.ends_with("use ';', '|', ',' or tab (also written '\\t')"),
                "{e}"
            );
        }
    }

    /// The manifest holds the character itself, and nothing else reads back.
    #[test]
    fn a_delimiter_is_stored_as_its_character() {
        assert_eq!(serde_json::to_string(&Delimiter::TAB).unwrap(), r#""\t""#);
        let d: Delimiter = serde_json::from_str(r#"";""#).unwrap();
        assert_eq!(d, Delimiter::SEMICOLON);
        assert!(serde_json::from_str::<Delimiter>(r#""tab""#).is_err());
    }

    /// A batch hands back exactly the records pushed into it, plain and csv_core-read alike.
    #[test]
    fn a_batch_returns_the_records_it_was_given() {
        let mut batch = RecordBatch::default();
        // The second round checks a cleared batch is as good as a new one.
        for round in 0..2 {
            batch.clear();
            let mut expected = Vec::new();
            let mut rdr = RawReader::new(TRICKY);
            while let Some(rec) = rdr.next_record().unwrap() {
                batch.push(&rec);
                let f = rec.fields().unwrap();
                expected.push((
                    rec.line,
                    rec.lines,
                    rec.raw.to_vec(),
                    (0..f.len())
                        .map(|i| f.get(i).to_owned())
                        .collect::<Vec<_>>(),
                ));
            }
            assert_eq!(batch.len(), expected.len(), "round {round}");
            for (i, e) in expected.iter().enumerate() {
                let rec = batch.get(i);
                let f = rec.fields().unwrap();
                let fields: Vec<String> = (0..f.len()).map(|i| f.get(i).to_owned()).collect();
                assert_eq!(&(rec.line, rec.lines, rec.raw.to_vec(), fields), e);
            }
        }
    }

    #[test]
    fn records_checked_in_bulk_read_as_records_checked_one_by_one() {
        // Plain and quoted rows, each kind once valid and once not UTF-8.
        let input: &[u8] =
            b"a,b\n1,Zo\xc3\xab\n2,\"x, \xc3\xa9\"\n3,bad\xff\n4,\"bad, \xff\"\n5,\"ok\"\n6,last";
        let mut batch = RecordBatch::default();
        let mut rdr = RawReader::new(input);
        while let Some(rec) = rdr.next_record().unwrap() {
            batch.push(&rec);
        }
        let read = |rec: RawRecord<'_>| {
            rec.fields()
                .map(|f| {
                    (0..f.len())
                        .map(|i| f.get(i).to_owned())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.valid_up_to())
        };
        for start in 0..=batch.len() {
            for end in start..=batch.len() {
                let checked = batch.checked(start..end);
                for i in start..end {
                    assert_eq!(
                        read(checked.get(i)),
                        read(batch.get(i)),
                        "record {i} of {start}..{end}"
                    );
                }
            }
        }
        assert!(read(batch.get(3)).is_err() && read(batch.get(4)).is_err());
    }

    #[test]
    fn the_hash_covers_every_byte_in_order() {
        let mut rdr = RawReader::new(Trickle(TRICKY)).with_sha256();
        while rdr.next_record().unwrap().is_some() {}
        assert_eq!(rdr.sha256(), Some(crate::digest::sha256_hex(TRICKY)));
        assert_eq!(RawReader::new(TRICKY).sha256(), None);
    }

    /// A well-formed record over the row limit is handed over (the caller rejects it); only
    /// one that runs on over many lines is taken for an unclosed quote.
    #[test]
    fn a_long_record_on_one_line_is_read_whole() {
        let mut data = b"a,b\n1,\"".to_vec();
        data.extend(std::iter::repeat_n(b'y', 2 * MAX_RECORD_BYTES));
        data.extend_from_slice(b"\"\n2,3\n");
        let mut rdr = RawReader::new(&data[..]);
        assert!(rdr.next_record().unwrap().is_some());
        let long = rdr.next_record().unwrap().unwrap();
        assert_eq!((long.line, long.lines), (2, 1));
        assert!(long.raw.len() > 2 * MAX_RECORD_BYTES);
        let next = rdr.next_record().unwrap().unwrap();
        assert_eq!(next.line, 3);
    }

    /// Line numbers count a CR alone (old Mac exports) as a line break, CRLF as one, LF as one.
    #[test]
    fn a_cr_alone_ends_a_line_for_line_numbers() {
        for (data, lines) in [
            (&b"a,b\r1,2\r3,4\r"[..], &[1, 2, 3][..]),
            (b"a,b\r\n1,2\r3,4\n5,6\r\n", &[1, 2, 3, 4]),
            (b"a,b\r\r1,2\r\n\r\n3,4", &[1, 3, 5]),
            (b"a,b\r\"x\ry\",2\r3,4\r", &[1, 2, 4]),
        ] {
            for plain in [true, false] {
                let got: Vec<u64> = collect_with(data, plain).iter().map(|r| r.0).collect();
                assert_eq!(got, lines, "{data:?} plain={plain}");
            }
            let ragged = Ragged { data, step: 1 };
            let got: Vec<u64> = collect_with(ragged, true).iter().map(|r| r.0).collect();
            assert_eq!(got, lines, "{data:?} read a byte at a time");
        }
    }

    #[test]
    fn unclosed_quote_is_reported_with_its_line() {
        let mut data = b"a,b\n1,\"open\n".to_vec();
        let line = [b'x'; 1023];
        while data.len() < MAX_RECORD_BYTES + READ_SIZE * 2 {
            data.extend_from_slice(&line);
            data.push(b'\n');
        }
        let mut rdr = RawReader::new(&data[..]);
        assert!(rdr.next_record().unwrap().is_some());
        match rdr.next_record() {
            Err(CsvError::RecordTooLong { line }) => assert_eq!(line, 2),
            other => panic!(
                "expected RecordTooLong, got {:?}",
                other.map(|r| r.is_some())
            ),
        }
    }

    #[test]
    fn fields_follow_csv_core_layout() {
        let (mut data, mut ends) = (String::new(), Vec::new());
        for cell in ["a", "", "école", "d"] {
            data.push_str(cell);
            ends.push(data.len());
        }
        let f = Fields::new(&data, &ends);
        assert_eq!(f.len(), 4);
        assert!(!f.is_empty());
        assert_eq!(
            [f.get(0), f.get(1), f.get(2), f.get(3)],
            ["a", "", "école", "d"]
        );
        assert_eq!(f.get_or_empty(9), "");
        assert!(Fields::new("", &[]).is_empty());
    }

    #[test]
    fn push_field_quotes_only_when_needed() {
        let mut out = Vec::new();
        push_field(&mut out, b"plain");
        out.push(b',');
        push_field(&mut out, b"a,\"b\"");
        assert_eq!(out, b"plain,\"a,\"\"b\"\"\"");
    }
}
