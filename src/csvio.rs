//! Streaming CSV input that keeps each record's original bytes.
//!
//! Owns how donor exports are read: a UTF-8 BOM is skipped, CRLF and LF both end records,
//! quoted fields may hold commas, doubled quotes and newlines, blank lines are ignored. Each
//! record comes with its unescaped fields (for validation and rules) *and* its raw bytes, so the
//! segmenter can copy a row to its chunk without re-serialising it (re-serialising costs as much
//! as parsing), and with the physical line it starts on, so every report can name a line.
//!
//! It never decides whether a record is valid: field counts, UTF-8 and values are the caller's
//! business. It never loads the whole file: memory is one buffer plus the longest record.

use std::io::{self, Read};

/// How much input is read per system call. Big enough that syscalls vanish from profiles.
const READ_SIZE: usize = 256 * 1024;

/// A record longer than this is almost always an unclosed quote swallowing the rest of the
/// file; stopping early beats buffering a gigabyte to report it.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// One CSV record as read.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The record's original bytes, without the line terminator.
    pub raw: &'a [u8],
    /// The unescaped field bytes, concatenated (see [`RawRecord::ends`]).
    pub data: &'a [u8],
    /// `ends[i]` is the end offset of field `i` in `data`.
    pub ends: &'a [usize],
    /// 1-based physical line the record starts on (the header is line 1).
    pub line: u64,
    /// Physical lines the record spans (more than 1 when a quoted field holds newlines).
    pub lines: u64,
}

/// Errors reading CSV input.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The underlying reader failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// A record grew past [`MAX_RECORD_BYTES`].
    #[error(
        "line {line}: a record longer than {} bytes starts here; this is almost always a quote (\") that is never closed, so check the quoting on that line",
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
    bytes_read: u64,
    tap: Option<Vec<u8>>,
    first: bool,
}

impl<R: Read> RawReader<R> {
    /// Reads CSV from `src`.
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
            tap: None,
            first: true,
        }
    }

    /// Keeps a copy of every byte read, to be collected with [`RawReader::take_tapped`], so
    /// another thread can hash the input instead of the parsing one.
    pub fn with_tap(mut self) -> Self {
        self.tap = Some(Vec::new());
        self
    }

    /// The bytes read since the last call (in order), swapped for `empty`'s allocation.
    pub fn take_tapped(&mut self, mut empty: Vec<u8>) -> Vec<u8> {
        empty.clear();
        match self.tap.as_mut() {
            Some(t) => std::mem::replace(t, empty),
            None => empty,
        }
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
        if self.len > MAX_RECORD_BYTES {
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
        if let Some(t) = self.tap.as_mut() {
            t.extend_from_slice(&self.buf[self.len..self.len + n]);
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
                R::Record => return Ok(Some(self.take_record(nout, nend))),
            }
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
        // the raw slice depending on where a read boundary fell; trim both ends. The ends are
        // a few bytes, so a plain loop counts their line breaks.
        let count = |s: &[u8]| s.iter().filter(|&&b| b == b'\n').count() as u64;
        let lead = raw
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let skipped = count(&raw[..lead]);
        raw = &raw[lead..];
        let trail = raw
            .iter()
            .rev()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let trailing = count(&raw[raw.len() - trail..]);
        raw = &raw[..raw.len() - trail];
        // Only a quoted field can hold a line break, so most records need no count at all.
        let inner = if memchr::memchr(b'"', raw).is_some() {
            memchr::memchr_iter(b'\n', raw).count() as u64
        } else {
            0
        };
        let line = self.line + skipped;
        self.line = line + inner + trailing;
        RawRecord {
            raw,
            data: &self.out[..nout],
            ends: &self.ends[..nend],
            line,
            lines: inner + 1,
        }
    }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Appends `field` to `out` as one CSV field, quoting it when it needs quotes.
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
            let mut fields = Vec::new();
            let mut s = 0;
            for &e in rec.ends {
                fields.push(String::from_utf8(rec.data[s..e].to_vec()).unwrap());
                s = e;
            }
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

    #[test]
    fn the_tap_sees_every_byte_in_order() {
        let mut rdr = RawReader::new(Trickle(TRICKY)).with_tap();
        let mut seen = Vec::new();
        while rdr.next_record().unwrap().is_some() {
            seen.extend(rdr.take_tapped(Vec::new()));
        }
        seen.extend(rdr.take_tapped(Vec::new()));
        assert_eq!(seen, TRICKY);
    }

    #[test]
    fn unclosed_quote_is_reported_with_its_line() {
        let mut data = b"a,b\n1,\"open\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + READ_SIZE * 2));
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
    fn push_field_quotes_only_when_needed() {
        let mut out = Vec::new();
        push_field(&mut out, b"plain");
        out.push(b',');
        push_field(&mut out, b"a,\"b\"");
        assert_eq!(out, b"plain,\"a,\"\"b\"\"\"");
    }
}
