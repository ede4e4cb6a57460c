//! The body's transfer encoding: 7bit, quoted-printable or base64, CRLF line breaks, lines of
//! at most 76 characters.
//!
//! This owns the bytes of each body part as they go on the wire, chosen as lettre would choose
//! them (the module doc says why it is done here), the part's Content-Transfer-Encoding line
//! that announces the choice, and a worker's memory of the lines it has encoded
//! ([`LineCache`]). It never writes other headers or the MIME structure, and never changes the
//! text: decoding gives back what was rendered, with every line break as CRLF (and, for a lone
//! text part, a final one).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The longest body line sent unencoded (7bit), as lettre does: RFC 5322 asks for at most 78.
const MAX_7BIT_LINE: usize = 76;

/// A body part's Content-Transfer-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    SevenBit,
    QuotedPrintable,
    Base64,
}

impl Encoding {
    /// Chooses like lettre does: 7bit for short-lined printable ASCII, quoted-printable for
    /// mostly-ASCII text, base64 when more than a third of the bytes would need escaping (CJK
    /// text, say).
    fn choose(scan: Scan, len: usize) -> Encoding {
        if scan.escaped == 0 && scan.longest_line <= MAX_7BIT_LINE {
            Encoding::SevenBit
        } else if scan.escaped > len / 3 {
            Encoding::Base64
        } else {
            Encoding::QuotedPrintable
        }
    }

    /// Appends the part's Content-Transfer-Encoding line (as lettre writes it) and the blank
    /// line that ends the part's headers.
    fn write_header(self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Content-Transfer-Encoding: ");
        out.extend_from_slice(match self {
            Encoding::SevenBit => b"7bit",
            Encoding::QuotedPrintable => b"quoted-printable",
            Encoding::Base64 => b"base64",
        });
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// What the choice of encoding depends on, learnt while encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    /// Bytes quoted-printable must escape wherever they are: non-ASCII bytes, DEL and control
    /// characters other than TAB, CR and LF.
    escaped: usize,
    /// The longest line, not counting line-break characters.
    longest_line: usize,
}

/// What one worker remembers between messages: the quoted-printable of the lines it has met
/// before. Nearly every line of a message is the templates' own text, the same for every
/// donor, so most of a body is copied from here instead of encoded again.
///
/// Lines are kept in the order met, each followed by its line break, and their encodings
/// likewise, so a run of lines kept one after the other is one stretch of both. A body line is
/// looked up by a hash of it; once found, as much of the body as goes on equal to what was
/// kept after that line is matched byte by byte and its encoding copied at once. A line is
/// kept from its second sighting on, so a line with one donor's name in it is rarely kept;
/// when the cache is full it starts again empty.
#[derive(Default)]
pub(super) struct LineCache {
    lines: HashMap<u64, Line, BuildHasherDefault<Unmixed>>,
    /// The kept lines in the order kept, as they are in `text` and `encoded`.
    kept: Vec<Kept>,
    /// The kept lines, each followed by `\n`.
    text: Vec<u8>,
    /// Their encodings, each followed by CRLF.
    encoded: Vec<u8>,
    /// Whether the line before was just added to `kept`: a short run of lines met again then
    /// is added once more, so that `kept` holds a template's lines in their order even where
    /// lines recur (a `</td>` kept at its first place would end every run at its second).
    adding: bool,
}

/// Runs of fewer kept lines than this are added again while adding (see `adding`); a longer
/// one means the lines that follow are kept already.
const SHORT_RUN: usize = 8;

/// What [`LineCache`] knows of a line.
enum Line {
    /// Met once.
    Seen,
    /// Kept: `kept[i]`.
    Kept(usize),
}

/// Where a kept line is.
#[derive(Clone, Copy)]
struct Kept {
    /// `text[at..at + len]`.
    at: usize,
    len: usize,
    /// `encoded[encoded_at..encoded_at + encoded_len]`.
    encoded_at: usize,
    encoded_len: usize,
    escaped: usize,
}

/// Bounds of one worker's cache (lines kept, and twice as many lines tracked): the fixture
/// templates' lines take ~100 KB.
const MAX_CACHED_LINES: usize = 4096;
const MAX_CACHED_BYTES: usize = 512 << 10;

/// The keys are already hashes (xxh3): used as they are.
#[derive(Default)]
struct Unmixed(u64);

impl Hasher for Unmixed {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// How many bytes `a` and `b` have in common at the start, sixteen at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n {
        let word = |s: &[u8]| {
            let mut w = [0u8; 16];
            w.copy_from_slice(&s[i..i + 16]);
            u128::from_le_bytes(w)
        };
        let diff = word(a) ^ word(b);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 16;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

impl LineCache {
    /// Appends the encoding of `input[pos..]`'s first line and of as many lines after it as
    /// were kept after it, each with its CRLF, when that first line is kept and ends in `\n`;
    /// returns where the input goes on, or `None` when the line is not kept.
    fn copy_kept(
        &mut self,
        input: &[u8],
        pos: usize,
        line: &[u8],
        key: u64,
        out: &mut Vec<u8>,
        scan: &mut Scan,
    ) -> Option<usize> {
        let &Line::Kept(first) = self.lines.get(&key)? else {
            return None;
        };
        let start = self.kept[first];
        // The line and its `\n`, then whatever follows equally.
        let same = common_prefix(&input[pos..], &self.text[start.at..]);
        if same < line.len() + 1 {
            return None;
        }
        let mut last = first;
        while let Some(next) = self.kept.get(last + 1)
            && next.at + next.len < start.at + same
        {
            last += 1;
        }
        for k in &self.kept[first..=last] {
            scan.escaped += k.escaped;
            scan.longest_line = scan.longest_line.max(k.len);
        }
        let end = self.kept[last];
        out.extend_from_slice(
            &self.encoded[start.encoded_at..end.encoded_at + end.encoded_len + 2],
        );
        if self.adding && last - first < SHORT_RUN {
            self.repeat(first, last);
        } else {
            self.adding = false;
        }
        Some(pos + (end.at + end.len + 1 - start.at))
    }

    /// Adds `kept[first..=last]` to the end of `kept` once more.
    fn repeat(&mut self, first: usize, last: usize) {
        let (start, end) = (self.kept[first], self.kept[last]);
        let text = start.at..end.at + end.len + 1;
        let encoded = start.encoded_at..end.encoded_at + end.encoded_len + 2;
        if self.kept.len() + (last - first) >= MAX_CACHED_LINES
            || self.text.len() + self.encoded.len() + text.len() + encoded.len() > MAX_CACHED_BYTES
        {
            self.adding = false;
            return;
        }
        let (text_shift, encoded_shift) = (
            self.text.len() - text.start,
            self.encoded.len() - encoded.start,
        );
        for i in first..=last {
            let k = self.kept[i];
            self.kept.push(Kept {
                at: k.at + text_shift,
                encoded_at: k.encoded_at + encoded_shift,
                ..k
            });
        }
        self.text.extend_from_within(text);
        self.encoded.extend_from_within(encoded);
    }

    /// Adds `line` and its encoding to the end of `kept`, starting again empty when full.
    fn add(&mut self, line: &[u8], encoded: &[u8], escaped: usize) -> usize {
        if self.kept.len() >= MAX_CACHED_LINES
            || self.text.len() + self.encoded.len() + line.len() + encoded.len() > MAX_CACHED_BYTES
        {
            self.lines.clear();
            self.kept.clear();
            self.text.clear();
            self.encoded.clear();
        }
        self.kept.push(Kept {
            at: self.text.len(),
            len: line.len(),
            encoded_at: self.encoded.len(),
            encoded_len: encoded.len(),
            escaped,
        });
        self.text.extend_from_slice(line);
        self.text.push(b'\n');
        self.encoded.extend_from_slice(encoded);
        self.encoded.extend_from_slice(b"\r\n");
        self.adding = true;
        self.kept.len() - 1
    }

    /// Appends the encoding of `line` (no line break in it), keeping it if this is its second
    /// sighting and `terminated` (it ends in `\n`).
    fn encode(
        &mut self,
        line: &[u8],
        key: u64,
        terminated: bool,
        out: &mut Vec<u8>,
        scan: &mut Scan,
    ) {
        let start = out.len();
        let escaped = quoted_printable(line, out).escaped;
        scan.escaped += escaped;
        scan.longest_line = scan.longest_line.max(line.len());
        if !terminated {
            self.adding = false;
            return;
        }
        if !matches!(self.lines.get(&key), Some(Line::Seen)) {
            // Lines met once are mostly one donor's: forgotten when they pile up.
            if self.lines.len() >= 2 * MAX_CACHED_LINES {
                self.lines.retain(|_, l| matches!(l, Line::Kept(_)));
            }
            // Met for the first time, or another line with the same hash: that one stays.
            self.lines.entry(key).or_insert(Line::Seen);
            self.adding = false;
            return;
        }
        let i = self.add(line, &out[start..], escaped);
        self.lines.insert(key, Line::Kept(i));
    }
}

/// Quoted-printable of `input` line by line, through `cache`: the same bytes as
/// [`quoted_printable`] of the whole, as each line is encoded from column 0 whatever came
/// before it.
fn quoted_printable_lines(input: &[u8], cache: &mut LineCache, out: &mut Vec<u8>) -> Scan {
    // A CR is a line break of its own, or half of one: such text goes the plain way.
    if memchr::memchr(b'\r', input).is_some() {
        return quoted_printable(input, out);
    }
    let mut scan = Scan {
        escaped: 0,
        longest_line: 0,
    };
    let mut pos = 0;
    while pos < input.len() {
        let end = memchr::memchr(b'\n', &input[pos..]).map_or(input.len(), |k| pos + k);
        let line = &input[pos..end];
        let terminated = end < input.len();
        let key = xxhash_rust::xxh3::xxh3_64(line);
        if terminated && let Some(next) = cache.copy_kept(input, pos, line, key, out, &mut scan) {
            pos = next;
            continue;
        }
        cache.encode(line, key, terminated, out, &mut scan);
        if terminated {
            out.extend_from_slice(b"\r\n");
        }
        pos = end + 1;
    }
    scan
}

/// Room to reserve for the encoded part of `len` bytes of mostly ASCII text, so it is
/// written without growing the message: escapes, soft breaks and CRs before LFs.
pub(super) fn room(len: usize) -> usize {
    len + len / 4 + 128
}

/// Appends a body part's Content-Transfer-Encoding line, the blank line and `s` in that
/// encoding. Line breaks (CRLF, LF or a lone CR) become CRLF; with `final_newline` the part
/// ends with one.
///
/// Quoted-printable is written first, learning on the way what the choice depends on: it is
/// the choice for nearly every message (any £, é or long line), so the text is read once. For
/// the rest (short-lined ASCII, or mostly non-ASCII) it is then rewritten as 7bit or base64.
///
/// Why not lettre's `Body::new`: it converts line endings by inserting one CR at a time
/// (a memmove of the rest of the body per line), scans the text twice more, and its
/// quoted-printable encoder goes byte by byte through a `String`; together that was ~45 of
/// the ~55 µs a 13 KB message cost. Encoding choice and output format are the same.
pub(super) fn write_part(s: &str, final_newline: bool, cache: &mut LineCache, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let add_newline = final_newline && !matches!(bytes.last(), Some(b'\n' | b'\r'));
    let start = out.len();
    Encoding::QuotedPrintable.write_header(out);
    let scan = quoted_printable_lines(bytes, cache, out);
    let encoding = Encoding::choose(scan, bytes.len());
    if encoding != Encoding::QuotedPrintable {
        out.truncate(start);
        encoding.write_header(out);
    }
    match encoding {
        Encoding::SevenBit => {
            out.extend_from_slice(&crlf(bytes));
            if add_newline {
                out.extend_from_slice(b"\r\n");
            }
        }
        Encoding::Base64 => {
            let mut text = crlf(bytes).into_owned();
            if add_newline {
                text.extend_from_slice(b"\r\n");
            }
            base64_lines(&text, out);
            // A lone text part is the whole message body: end it with a line break.
            if final_newline {
                out.extend_from_slice(b"\r\n");
            }
        }
        Encoding::QuotedPrintable => {
            if add_newline {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// The text with every line break as CRLF; borrowed when it already is.
fn crlf(bytes: &[u8]) -> Cow<'_, [u8]> {
    let already = memchr::memchr2_iter(b'\n', b'\r', bytes).all(|i| match bytes[i] {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && bytes[i - 1] == b'\r',
    });
    if already {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Appends base64 in lines of 76 characters separated by CRLF (RFC 2045 §6.8), no final CRLF.
fn base64_lines(data: &[u8], out: &mut Vec<u8>) {
    use base64::Engine as _;
    const IN_PER_LINE: usize = 57; // 57 bytes -> 76 characters
    let start = out.len();
    let lines = data.len().div_ceil(IN_PER_LINE);
    out.resize(start + lines * 78, 0);
    let mut len = start;
    for (n, chunk) in data.chunks(IN_PER_LINE).enumerate() {
        if n > 0 {
            out[len..len + 2].copy_from_slice(b"\r\n");
            len += 2;
        }
        len += base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut out[len..])
            .expect("76 characters fit in the 78 reserved per line");
    }
    out.truncate(len);
}

/// Appends the run of bytes from `from` that quoted-printable copies as they are (printable
/// ASCII but `=`, spaces and TABs), ending at the latest at `limit`; returns where it ended.
///
/// Sixteen bytes at a time, each block appended whole and the excess cut off again (every body
/// byte passes through here; one at a time it was half of a message's whole cost, and a
/// `memcpy` per run most of the rest).
fn copy_literal(input: &[u8], from: usize, limit: usize, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let mut i = from;
    while i < limit {
        let Some(block) = input
            .get(i..i + 16)
            .and_then(|b| <&[u8; 16]>::try_from(b).ok())
        else {
            // Fewer than sixteen bytes left in the input.
            while i < limit && matches!(input[i], b' '..=b'<' | b'>'..=b'~' | b'\t') {
                out.push(input[i]);
                i += 1;
            }
            break;
        };
        out.extend_from_slice(block);
        let word = u128::from_le_bytes(*block);
        let (low, high) = (stops(word as u64), stops((word >> 64) as u64));
        if low | high == 0 {
            i += 16;
            continue;
        }
        let at = if low != 0 {
            low.trailing_zeros() / 8
        } else {
            8 + high.trailing_zeros() / 8
        };
        i += at as usize;
        // TAB stands for itself too, but is rare enough to be left out of `stops`.
        if i < limit && input[i] == b'\t' {
            i += 1;
            out.truncate(start + (i - from));
            continue;
        }
        break;
    }
    let end = i.min(limit);
    out.truncate(start + (end - from));
    end
}

/// The high bit of every byte of `x` (eight bytes, little-endian) that ends a literal run
/// (control characters, `=`, DEL and non-ASCII), and perhaps of bytes after the first of
/// them: each test sets a byte's high bit, exactly for the first byte that fails it, as a
/// borrow or carry only reaches bytes after one that failed.
fn stops(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    let not_ascii_or_del = (x.wrapping_add(ONES) | x) & HIGH;
    let eq = x ^ (ONES * u64::from(b'='));
    let equals = eq.wrapping_sub(ONES) & !eq & HIGH;
    control | not_ascii_or_del | equals
}

/// Appends quoted-printable (RFC 2045 §6.7) of UTF-8 text: every line break becomes a hard
/// CRLF, lines are at most 76 characters (soft breaks are `=` CRLF), and `=`, non-ASCII,
/// control characters and whitespace before a line end are escaped.
fn quoted_printable(input: &[u8], out: &mut Vec<u8>) -> Scan {
    /// Content characters per line; the 76th is kept for a soft break's `=`.
    const WIDTH: usize = 75;
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let n = input.len();
    let mut scan = Scan {
        escaped: 0,
        longest_line: 0,
    };
    let mut line_start = 0;
    let mut col = 0;
    let mut i = 0;
    while i < n {
        let b = input[i];
        if b == b'\r' || b == b'\n' {
            scan.longest_line = scan.longest_line.max(i - line_start);
            if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            out.extend_from_slice(b"\r\n");
            col = 0;
            i += 1;
            line_start = i;
            continue;
        }
        if col >= WIDTH {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        // The run of characters that stand for themselves, up to the end of the line.
        let limit = n.min(i + (WIDTH - col));
        let mut j = copy_literal(input, i, limit, out);
        // Whitespace right before a line end must be escaped (transports strip it); escaping
        // the last one is enough, as `=20` then follows the others.
        if (j == n || matches!(input[j], b'\r' | b'\n'))
            && j > i
            && matches!(input[j - 1], b' ' | b'\t')
        {
            j -= 1;
            out.pop();
        }
        if j > i {
            col += j - i;
            i = j;
            continue;
        }
        if col + 3 > WIDTH {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        // `=` and whitespace before a line end are escaped here but not everywhere.
        scan.escaped += usize::from(b >= 0x7f || (b < 0x20 && b != b'\t'));
        col += 3;
        i += 1;
    }
    scan.longest_line = scan.longest_line.max(n - line_start);
    scan
}

#[cfg(test)]
mod tests {
    use mail_parser::MessageParser;

    use super::*;
    use crate::message::Scratch;
    use crate::message::fixtures::{
        assert_wire_format, composer, header_block, long_html, outgoing,
    };

    /// A fixed-seed xorshift generator: the same "random" cases on every run.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn transfer_encodings_suit_the_content() {
        let c = composer();
        let enc = |text: &str| {
            let bytes = c
                .compose(&outgoing(text, None), &mut Scratch::default())
                .unwrap();
            assert_wire_format(&bytes);
            let head = header_block(&bytes).to_owned();
            let msg = MessageParser::default().parse(&bytes).unwrap();
            // A text-only body always ends with a line break.
            let mut want = text.replace('\n', "\r\n");
            if !want.ends_with("\r\n") {
                want.push_str("\r\n");
            }
            assert_eq!(msg.body_text(0).unwrap(), want);
            head.lines()
                .find_map(|l| l.strip_prefix("Content-Transfer-Encoding: "))
                .unwrap()
                .to_owned()
        };
        assert_eq!(enc("Plain ASCII.\n"), "7bit");
        assert_eq!(enc("Zoë gave £5.\n"), "quoted-printable");
        assert_eq!(enc(&"x".repeat(5000)), "quoted-printable");
        assert_eq!(enc(&"田中さん、ありがとう。".repeat(50)), "base64");
        // A stray CR becomes a line break instead of a bare CR on the wire.
        let bytes = c
            .compose(&outgoing("a\rb\r\nc\n", None), &mut Scratch::default())
            .unwrap();
        assert_wire_format(&bytes);
        let msg = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(msg.body_text(0).unwrap(), "a\r\nb\r\nc\r\n");
    }

    #[test]
    fn long_lines_are_encoded_not_sent_raw() {
        let long_html = format!("<p>{}</p>", "Zoë £ ".repeat(800) + &"y".repeat(5000));
        let long_ascii_html = format!("<p>{}</p>\n", "z".repeat(5000));
        let long_text = format!("{}\n", "word ".repeat(1200));
        for html in [&long_html, &long_ascii_html] {
            let bytes = composer()
                .compose(&outgoing(&long_text, Some(html)), &mut Scratch::default())
                .unwrap();
            assert_wire_format(&bytes);
            let msg = MessageParser::default().parse(&bytes).unwrap();
            assert_eq!(msg.body_html(0).unwrap(), html.replace('\n', "\r\n"));
            assert_eq!(msg.body_text(0).unwrap(), long_text.replace('\n', "\r\n"));
        }
    }

    /// What a body decodes to: line breaks as CRLF, and (text-only) a final one.
    fn wire_text(text: &str, final_newline: bool) -> String {
        let mut want = text
            .replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace('\n', "\r\n");
        if final_newline && !want.ends_with("\r\n") {
            want.push_str("\r\n");
        }
        want
    }

    /// The quoted-printable encoder as it was before it read sixteen bytes at a time: the
    /// bytes must not have changed.
    fn one_byte_at_a_time(input: &[u8]) -> Vec<u8> {
        const WIDTH: usize = 75;
        let literal = |b: u8| matches!(b, b'!'..=b'<' | b'>'..=b'~' | b' ' | b'\t');
        let mut out = Vec::new();
        let n = input.len();
        let (mut col, mut i) = (0, 0);
        while i < n {
            let b = input[i];
            if b == b'\r' || b == b'\n' {
                if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                out.extend_from_slice(b"\r\n");
                col = 0;
                i += 1;
                continue;
            }
            if col >= WIDTH {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            let limit = n.min(i + (WIDTH - col));
            let mut j = i;
            while j < limit && literal(input[j]) {
                j += 1;
            }
            if (j == n || matches!(input[j], b'\r' | b'\n'))
                && j > i
                && matches!(input[j - 1], b' ' | b'\t')
            {
                j -= 1;
            }
            if j > i {
                out.extend_from_slice(&input[i..j]);
                col += j - i;
                i = j;
                continue;
            }
            if col + 3 > WIDTH {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            out.extend_from_slice(format!("={b:02X}").as_bytes());
            col += 3;
            i += 1;
        }
        out
    }

    #[test]
    fn body_encoder_round_trips_awkward_text() {
        // Deterministic pseudo-random texts from pieces that stress quoted-printable: `=`,
        // whitespace before line ends, every kind of line break, multi-byte characters across
        // the 76-column limit, control characters and very long lines.
        let pieces = [
            "a", "word ", "=", "==", " ", "\t", "\n", "\r\n", "\r", "é", "田", "✓", "\0", "\u{7f}",
            ".", "From ", "=3D", "  \n", "\t\r\n", "x", "<p>", "£1,250",
        ];
        let c = composer();
        let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
        for round in 0..250 {
            let len = (next() % 300) as usize + if round % 10 == 0 { 2000 } else { 0 };
            let mut text = String::new();
            while text.len() < len {
                let p = pieces[(next() % pieces.len() as u64) as usize];
                // Long runs too, so 7bit-eligible ASCII and over-long lines both occur.
                let times = if next().is_multiple_of(8) {
                    (next() % 100) as usize
                } else {
                    1
                };
                text.push_str(&p.repeat(times));
            }
            let mut qp = Vec::new();
            quoted_printable(text.as_bytes(), &mut qp);
            assert_eq!(
                qp,
                one_byte_at_a_time(text.as_bytes()),
                "round {round}: {text:?}"
            );
            for html in [None, Some(text.as_str())] {
                let m = outgoing(&text, html);
                let bytes = c.compose(&m, &mut Scratch::default()).unwrap();
                assert_wire_format(&bytes);
                let msg = MessageParser::default().parse(&bytes).unwrap();
                assert_eq!(
                    msg.body_text(0).unwrap(),
                    wire_text(&text, html.is_none()),
                    "round {round}: {text:?}"
                );
                if let Some(h) = html {
                    assert_eq!(msg.body_html(0).unwrap(), wire_text(h, false), "{h:?}");
                }
                // Encoded lines keep to 76 characters, and no quoted-printable line ends in
                // whitespace (7bit may: there it is content).
                let body = &bytes[header_block(&bytes).len()..];
                let qp_only = !String::from_utf8_lossy(&bytes).contains("Encoding: 7bit");
                for line in body.split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    assert!(
                        line.len() <= 76,
                        "round {round}: {:?}",
                        String::from_utf8_lossy(line)
                    );
                    assert!(
                        !qp_only || !(line.ends_with(b" ") || line.ends_with(b"\t")),
                        "round {round}: {:?}",
                        String::from_utf8_lossy(line)
                    );
                }
            }
        }
    }

    #[test]
    fn body_encoder_details() {
        use Encoding::*;
        // The part's encoding and body, without the Content-Transfer-Encoding line.
        let part = |s: &str, final_newline: bool| {
            let mut out = Vec::new();
            write_part(s, final_newline, &mut LineCache::default(), &mut out);
            let text = String::from_utf8(out).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let encoding = match head.strip_prefix("Content-Transfer-Encoding: ").unwrap() {
                "7bit" => SevenBit,
                "quoted-printable" => QuotedPrintable,
                "base64" => Base64,
                other => panic!("{other}"),
            };
            (encoding, body.to_owned())
        };
        let enc = |s: &str| part(s, false);
        let qp = |s: &str| {
            let mut out = Vec::new();
            quoted_printable(s.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        // The choice.
        assert_eq!(enc("a=b \n"), (SevenBit, "a=b \r\n".into()));
        assert_eq!(enc("ok\rnext"), (SevenBit, "ok\r\nnext".into()));
        assert_eq!(
            enc("café = ok\n"),
            (QuotedPrintable, "caf=C3=A9 =3D ok\r\n".into())
        );
        assert_eq!(
            enc("a NUL\0 here"),
            (QuotedPrintable, "a NUL=00 here".into())
        );
        assert_eq!(enc(&"x".repeat(77)).0, QuotedPrintable);
        assert_eq!(enc(&"x".repeat(76)).0, SevenBit);
        assert_eq!(enc("田中"), (Base64, "55Sw5Lit".into()));
        let (e, s) = enc(&"田".repeat(40));
        assert_eq!(e, Base64);
        assert_eq!(s.lines().next().unwrap().len(), 76);
        // Text-only bodies end with a line break.
        assert_eq!(part("hi", true).1, "hi\r\n");
        assert_eq!(part("hi\n", true).1, "hi\r\n");
        assert_eq!(part("田中", true).1, "55Sw5LitDQo=\r\n");
        assert_eq!(part("zoë is here", true).1, "zo=C3=AB is here\r\n");
        // Quoted-printable details.
        assert_eq!(qp("end \nnext\t"), "end=20\r\nnext=09");
        assert_eq!(qp("a \t b\r\n"), "a \t b\r\n");
        assert_eq!(qp("two  \r\n"), "two =20\r\n");
        assert_eq!(qp("x=y\u{7f}"), "x=3Dy=7F");
        // A soft break never splits an escape, and lines hold at most 75 characters + `=`.
        assert_eq!(
            qp(&format!("{}é", "x".repeat(73))),
            format!("{}=\r\n=C3=A9", "x".repeat(73))
        );
        assert_eq!(
            qp(&"x".repeat(160)),
            format!("{0}=\r\n{0}=\r\n{1}", "x".repeat(75), "x".repeat(10))
        );
        // Whitespace pushed to the end of an encoded line by a soft break is fine: `=` follows.
        assert_eq!(
            qp(&format!("{} y", "x".repeat(74))),
            format!("{} =\r\ny", "x".repeat(74))
        );
    }

    #[test]
    fn remembered_lines_encode_as_the_whole_text_does() {
        // Line by line, first seen, then kept, then copied: always the bytes of the whole
        // text encoded at once, with the same escape count and longest line.
        let texts = [
            "Dear Zoë,\n\nthank you for £1,250 = a lot.  \n<td style=\"padding:0\">x</td>\n",
            "no final line break, and a line longer than seventy-six characters, which gets a soft break",
            "\n\n\n",
            "",
            "trailing space \nand tab\t\n=\n",
            "with a CR\r\nline\n",
        ];
        let mut cache = LineCache::default();
        for round in 0..3 {
            for text in texts {
                let mut whole = Vec::new();
                let expected = quoted_printable(text.as_bytes(), &mut whole);
                let mut lines = Vec::new();
                let scan = quoted_printable_lines(text.as_bytes(), &mut cache, &mut lines);
                assert_eq!(lines, whole, "round {round}: {text:?}");
                assert_eq!(scan, expected, "round {round}: {text:?}");
            }
        }
        // A full cache starts again rather than growing.
        let mut cache = LineCache::default();
        let mut out = Vec::new();
        for i in 0..2 * MAX_CACHED_LINES {
            for _ in 0..2 {
                out.clear();
                let line = format!("line number {i}, kept on its second sighting");
                quoted_printable_lines(line.as_bytes(), &mut cache, &mut out);
                assert_eq!(out, line.as_bytes());
            }
            assert!(cache.kept.len() <= MAX_CACHED_LINES);
            assert!(cache.text.len() + cache.encoded.len() <= MAX_CACHED_BYTES);
        }
        // Lines met once (one donor's) are forgotten too, the kept ones stay.
        let mut cache = LineCache::default();
        for _ in 0..2 {
            quoted_printable_lines(b"the template's own line\n", &mut cache, &mut out);
        }
        for i in 0..3 * MAX_CACHED_LINES {
            quoted_printable_lines(
                format!("Dear donor {i},\n").as_bytes(),
                &mut cache,
                &mut out,
            );
            assert!(cache.lines.len() <= 2 * MAX_CACHED_LINES);
        }
        assert_eq!(cache.kept.len(), 1);
        assert!(matches!(
            cache
                .lines
                .get(&xxhash_rust::xxh3::xxh3_64(b"the template's own line")),
            Some(Line::Kept(0))
        ));
    }

    #[test]
    fn runs_of_remembered_lines_match_only_as_far_as_they_go() {
        // Texts made of lines from a small pool, so runs of kept lines recur, break off, go
        // on elsewhere, and end at the end of the text with or without a line break.
        let pool = [
            "<td style=\"padding:0\">",
            "Dear Zoë,",
            "",
            "a line longer than seventy-six characters, which gets a soft break somewhere in it",
            "trailing space ",
            "</td>",
            "£500",
        ];
        let mut next = xorshift(0x1234_5678_9abc_def1_u64);
        let mut cache = LineCache::default();
        for round in 0..500 {
            let lines = (next() % 12) as usize;
            let mut text: String = (0..lines)
                .map(|_| pool[(next() % pool.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join("\n");
            if next().is_multiple_of(2) {
                text.push('\n');
            }
            let mut whole = Vec::new();
            let expected = quoted_printable(text.as_bytes(), &mut whole);
            let mut by_lines = b"head".to_vec();
            let scan = quoted_printable_lines(text.as_bytes(), &mut cache, &mut by_lines);
            assert_eq!(&by_lines[4..], &whole[..], "round {round}: {text:?}");
            assert_eq!(scan, expected, "round {round}: {text:?}");
        }
        assert!(!cache.kept.is_empty());
    }

    #[test]
    fn literal_runs_end_where_a_byte_by_byte_scan_ends() {
        // Every byte value, at every position of a 16-byte block and across blocks.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        for round in 0..4000 {
            let len = (next() % 70) as usize;
            let mut input: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => (next() % 256) as u8,
                    1 => b"= \t\r\n\x7f\x80\xff\x1f~!"[(next() % 11) as usize],
                    _ => b'a' + (next() % 26) as u8,
                })
                .collect();
            if round % 7 == 0 {
                input.extend(std::iter::repeat_n(b'x', (next() % 40) as usize));
            }
            let from = (next() as usize) % (input.len() + 1);
            let limit = from + (next() as usize) % (input.len() - from + 1);
            let expected = from
                + input[from..limit]
                    .iter()
                    .take_while(|&&b| matches!(b, b' '..=b'<' | b'>'..=b'~' | b'\t'))
                    .count();
            let mut out = b"head".to_vec();
            let end = copy_literal(&input, from, limit, &mut out);
            assert_eq!(end, expected, "{input:?} from {from} to {limit}");
            assert_eq!(&out[4..], &input[from..end], "{input:?}");
        }
    }

    /// `cargo test --release --lib -- --ignored message_encode_speed --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn message_encode_speed() {
        let html = long_html();
        let n = 20_000u32;
        let mut out = Vec::with_capacity(2 * html.len());
        let mut cache = LineCache::default();
        let start = std::time::Instant::now();
        for _ in 0..n {
            out.clear();
            write_part(std::hint::black_box(&html), false, &mut cache, &mut out);
            std::hint::black_box(&out);
        }
        let per = start.elapsed() / n;
        println!(
            "encode_speed: {:.1} µs per 10 KB HTML body",
            per.as_secs_f64() * 1e6
        );
    }
}
