//! Donor email addresses: syntax validation, normalisation and the recipient key.
//!
//! This module owns three things:
//!
//! * [`Address::parse`]: is a cell *syntactically* a deliverable mailbox? It implements RFC 5321
//!   `Mailbox` / RFC 5322 `addr-spec` (without comments or folding whitespace) plus RFC 6531
//!   (SMTPUTF8) non-ASCII characters, and says why in plain words when not ([`EmailError`]).
//! * [`RecipientKey`]: the case-insensitive identity of an address, used to dedupe rows, match
//!   suppression lists and key the send ledger. It is persisted in run directories, so its
//!   definition is frozen (see [`RecipientKey`]).
//! * [`KeySet`]: a compact set of keys.
//!
//! It never does network or DNS look-ups (a valid address may still bounce), never rewrites what
//! the donor typed beyond trimming surrounding whitespace, and never applies provider-specific
//! rules (Gmail dots, `+tag` stripping): two addresses that differ in anything but letter case
//! are different recipients.
//!
//! Speed matters: [`Address::parse`] runs once per row on files of ten million rows, so it is a
//! single pass over the bytes driven by a lookup table, with a slower path only for non-ASCII
//! characters and for building error messages.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 limit on the part before the `@`, in octets.
const MAX_LOCAL: usize = 64;
/// RFC 1035 limit on a domain name in presentation form, in octets.
const MAX_DOMAIN: usize = 253;
/// RFC 1035 limit on one label of a domain, in octets.
const MAX_LABEL: usize = 63;
/// RFC 5321 path limit (256) minus the angle brackets.
const MAX_TOTAL: usize = 254;
/// How much of an offending cell is copied into an error: enough to recognise the row, but a
/// stray megabyte-long cell must not end up in every rejects file line.
const MAX_SHOWN: usize = 320;

/// Byte is RFC 5322 `atext` (ASCII letters, digits and ``!#$%&'*+-/=?^_`{|}~``).
const ATEXT: u8 = 1;
/// Byte is an ASCII letter or digit (the "LD" of an LDH domain label).
const LD: u8 = 2;
/// Byte is an ASCII digit (to spot all-numeric top-level domains).
const DIGIT: u8 = 4;
/// Byte is RFC 5321 `qtextSMTP` (printable ASCII and space, except `"` and `\`).
const QTEXT: u8 = 8;

/// Character classes of every byte value; non-ASCII bytes have no class and take the slow path.
static CLASS: [u8; 256] = build_class_table();

const fn build_class_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        let mut class = 0;
        if b.is_ascii_alphanumeric() {
            class |= ATEXT | LD;
        }
        if b.is_ascii_digit() {
            class |= DIGIT;
        }
        if matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        ) {
            class |= ATEXT;
        }
        if b >= 32 && b <= 126 && b != b'"' && b != b'\\' {
            class |= QTEXT;
        }
        table[i] = class;
        i += 1;
    }
    table
}

/// Which side of the `@` a problem is on, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The local part, before the `@`.
    Local,
    /// The domain, after the `@`.
    Domain,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Local => "the part before the @",
            Part::Domain => "the domain",
        })
    }
}

/// Why an address is not deliverable syntax.
///
/// `Display` gives a short reason for a rejects file, e.g.
/// `"bob@@example.org": more than one @ outside quotes`. The address is shown in Rust `Debug`
/// form (quoted, control characters escaped) so an invisible character is visible, and is cut
/// short if the cell is huge. Positions (`at`) count characters from 1 in the trimmed address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// The cell is empty or only whitespace.
    #[error("email is empty")]
    Empty,
    /// There is no `@` outside quotes.
    #[error("{addr:?}: no @ sign")]
    NoAt {
        /// The offending address.
        addr: String,
    },
    /// There is more than one `@` outside quotes.
    #[error("{addr:?}: more than one @ outside quotes")]
    MultipleAt {
        /// The offending address.
        addr: String,
    },
    /// The cell holds a link (`mailto:bob@example.org`) rather than an address.
    #[error("{addr:?}: starts with \"mailto:\"; the column must hold only the address")]
    MailtoPrefix {
        /// The offending address.
        addr: String,
    },
    /// The cell looks like `Bob <bob@example.org>` or `<bob@example.org>`.
    #[error("{addr:?}: looks like a display name; the column must hold only the address")]
    DisplayName {
        /// The offending address.
        addr: String,
    },
    /// The cell looks like a list (`a@x.org, b@y.org`).
    #[error("{addr:?}: looks like more than one address; put one address per row")]
    MultipleAddresses {
        /// The offending address.
        addr: String,
    },
    /// A space, tab or other blank character outside quotes.
    #[error("{addr:?}: contains {} at character {at}", describe(.ch))]
    Whitespace {
        /// The offending address.
        addr: String,
        /// The blank character.
        ch: char,
        /// 1-based character position.
        at: usize,
    },
    /// An invisible control or formatting character (line break, NUL, zero-width space, ...).
    #[error("{addr:?}: contains {} at character {at}", describe(.ch))]
    ControlChar {
        /// The offending address.
        addr: String,
        /// The control character.
        ch: char,
        /// 1-based character position.
        at: usize,
    },
    /// A visible character that the syntax does not allow in that place.
    #[error("{addr:?}: {} at character {at} is not allowed in {part}", describe(.ch))]
    InvalidChar {
        /// The offending address.
        addr: String,
        /// The character.
        ch: char,
        /// 1-based character position.
        at: usize,
        /// Which side of the `@` it is on.
        part: Part,
    },
    /// Nothing before the `@` (or only an empty quoted string `""`).
    #[error("{addr:?}: nothing before the @")]
    LocalEmpty {
        /// The offending address.
        addr: String,
    },
    /// The part before the `@` is longer than 64 octets.
    #[error("{addr:?}: the part before the @ is {len} bytes long; the limit is 64")]
    LocalTooLong {
        /// The offending address.
        addr: String,
        /// Its length in octets.
        len: usize,
    },
    /// The part before the `@` starts with a dot.
    #[error("{addr:?}: the part before the @ starts with a dot")]
    LocalLeadingDot {
        /// The offending address.
        addr: String,
    },
    /// The part before the `@` ends with a dot.
    #[error("{addr:?}: the part before the @ ends with a dot")]
    LocalTrailingDot {
        /// The offending address.
        addr: String,
    },
    /// Two dots in a row before the `@`.
    #[error("{addr:?}: two dots in a row before the @")]
    LocalConsecutiveDots {
        /// The offending address.
        addr: String,
    },
    /// A `"` opens a quoted name that is never closed.
    #[error("{addr:?}: a quote (\") is opened but never closed")]
    UnterminatedQuote {
        /// The offending address.
        addr: String,
    },
    /// Something between a closing quote and the `@` (`"bob"smith@x.org`).
    #[error(
        "{addr:?}: text after the closing quote; a quoted name must be the whole part before the @"
    )]
    TextAfterQuote {
        /// The offending address.
        addr: String,
    },
    /// Nothing after the `@`.
    #[error("{addr:?}: nothing after the @")]
    DomainEmpty {
        /// The offending address.
        addr: String,
    },
    /// The domain is longer than 253 octets.
    #[error("{addr:?}: the domain is {len} bytes long; the limit is 253")]
    DomainTooLong {
        /// The offending address.
        addr: String,
        /// Its length in octets.
        len: usize,
    },
    /// The domain has a single label, like `bob@gmail`: almost always a typo for donor mail.
    #[error("{addr:?}: the domain has no dot; is the ending (like \".com\") missing?")]
    DomainNoDot {
        /// The offending address.
        addr: String,
    },
    /// The domain ends with a dot (`bob@example.org.`).
    #[error("{addr:?}: the domain ends with a dot")]
    DomainTrailingDot {
        /// The offending address.
        addr: String,
    },
    /// A domain label is empty: the domain starts with a dot or has two dots in a row.
    #[error("{addr:?}: the domain starts with a dot or has two dots in a row")]
    LabelEmpty {
        /// The offending address.
        addr: String,
    },
    /// A domain label is longer than 63 octets.
    #[error("{addr:?}: a part of the domain is {len} bytes long; the limit is 63")]
    LabelTooLong {
        /// The offending address.
        addr: String,
        /// The label's length in octets.
        len: usize,
    },
    /// A domain label starts or ends with a hyphen.
    #[error("{addr:?}: a part of the domain starts or ends with a hyphen")]
    LabelHyphen {
        /// The offending address.
        addr: String,
    },
    /// The last domain label is all digits (`bob@192.0.2.1`).
    #[error(
        "{addr:?}: the domain ends in a number; an IP address must be written in brackets, like [192.0.2.1]"
    )]
    NumericTld {
        /// The offending address.
        addr: String,
    },
    /// A bracketed domain is not an IPv4 address or `IPv6:` address.
    #[error("{addr:?}: the bracketed domain is not a valid IP address")]
    BadAddressLiteral {
        /// The offending address.
        addr: String,
    },
    /// The whole address is longer than 254 octets.
    #[error("{addr:?}: the address is {len} bytes long; the limit is 254")]
    TooLong {
        /// The offending address.
        addr: String,
        /// Its length in octets.
        len: usize,
    },
}

/// Names a character for a person reading a rejects file at 3 a.m.: visible characters are
/// quoted, invisible ones get a name or their code point, because "contains ' '" is unreadable.
fn describe(ch: &char) -> String {
    match *ch {
        ' ' => "a space".to_owned(),
        '\t' => "a tab".to_owned(),
        '\n' => "a line break (U+000A)".to_owned(),
        '\r' => "a carriage return (U+000D)".to_owned(),
        '\u{a0}' => "a no-break space (U+00A0)".to_owned(),
        c if c.is_whitespace() => format!("an invisible space (U+{:04X})", u32::from(c)),
        c if is_invisible(c) => format!("an invisible character (U+{:04X})", u32::from(c)),
        c => format!("{c:?}"),
    }
}

/// Control characters and the zero-width characters that survive copy-paste from web pages and
/// spreadsheets. ZWJ/ZWNJ are deliberately absent: some scripts need them inside words.
fn is_invisible(c: char) -> bool {
    c.is_control() || matches!(c, '\u{ad}' | '\u{200b}' | '\u{2060}' | '\u{feff}')
}

/// Full-width look-alikes of `@` and `.` typed with East Asian input methods. IDNA would quietly
/// map some of them to ASCII, but then the address we store would not be the one we send to.
fn is_lookalike(c: char) -> bool {
    matches!(c, '\u{ff20}' | '\u{3002}' | '\u{ff0e}' | '\u{ff61}')
}

/// The offending address as stored in an error, cut at a character boundary if huge.
fn shown(s: &str) -> String {
    if s.len() <= MAX_SHOWN {
        return s.to_owned();
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// 1-based character position of byte offset `i` (errors only, so counting is fine).
fn char_pos(s: &str, i: usize) -> usize {
    s[..i].chars().count() + 1
}

/// The character starting at byte `i`, which the scanners only call on a char boundary.
fn char_at(s: &str, i: usize) -> char {
    s[i..].chars().next().unwrap_or('\u{fffd}')
}

/// Error for a character that may not appear at byte `i`, classified so that blanks and
/// invisible characters get their own, more useful, message.
fn bad_char(s: &str, i: usize, part: Part) -> EmailError {
    let ch = char_at(s, i);
    let addr = shown(s);
    let at = char_pos(s, i);
    // Line breaks are whitespace too, but a stray newline is a broken cell, not a typo.
    if ch == ' ' || ch == '\t' || (ch.is_whitespace() && !ch.is_control()) {
        EmailError::Whitespace { addr, ch, at }
    } else if is_invisible(ch) {
        EmailError::ControlChar { addr, ch, at }
    } else {
        EmailError::InvalidChar { addr, ch, at, part }
    }
}

/// Checks the non-ASCII character at byte `i` (RFC 6531 allows any UTF-8 outside ASCII, but
/// blanks, controls and look-alikes are never what the donor meant) and returns its length.
fn non_ascii(s: &str, i: usize, part: Part) -> Result<usize, EmailError> {
    let ch = char_at(s, i);
    if ch.is_whitespace() || is_invisible(ch) || is_lookalike(ch) {
        return Err(bad_char(s, i, part));
    }
    Ok(ch.len_utf8())
}

/// A syntactically valid address: trimmed of ASCII whitespace, otherwise exactly as the donor
/// typed it (letter case included).
///
/// Accepted syntax:
/// * local part: an RFC 5322 dot-atom (`atext` runs separated by single dots) or a quoted
///   string (`"john smith"`, with `\` quoted-pairs);
/// * domain: two or more LDH labels (letters, digits, inner hyphens; at most 63 octets each),
///   a top-level label that is not all digits, or an address literal `[192.0.2.1]` /
///   `[IPv6:2001:db8::1]`;
/// * non-ASCII characters in the local part and domain labels (RFC 6531 SMTPUTF8, IDN U-labels).
///   Such addresses are valid, but sending to one needs an outgoing server that announces
///   SMTPUTF8; the 63-octet label limit is applied to the UTF-8 form, not the Punycode one.
///
/// Comments, folding whitespace, display names and general address literals are rejected: they
/// are legal in message headers but never belong in a column of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a>(&'a str);

impl<'a> Address<'a> {
    /// Validates `raw` (one cell), trimming surrounding ASCII whitespace first.
    ///
    /// # Errors
    /// The first syntax problem found, as an [`EmailError`] naming the address.
    pub fn parse(raw: &'a str) -> Result<Address<'a>, EmailError> {
        let s = raw.trim_ascii();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        let bytes = s.as_bytes();
        // Whole-cell mistakes first, so the reason names the real problem rather than the first
        // odd character the scanner trips over (the ':' of "mailto:", the space of a name).
        if bytes.len() >= 7 && bytes[..7].eq_ignore_ascii_case(b"mailto:") {
            return Err(EmailError::MailtoPrefix { addr: shown(s) });
        }
        if bytes[bytes.len() - 1] == b'>' && memchr::memchr(b'<', bytes).is_some() {
            return Err(EmailError::DisplayName { addr: shown(s) });
        }
        if memchr::memchr(b'@', bytes).is_none() {
            // A full-width '＠' reads as an @ to a person; say which character is wrong.
            if let Some(i) = s.find('\u{ff20}') {
                return Err(bad_char(s, i, Part::Local));
            }
            return Err(EmailError::NoAt { addr: shown(s) });
        }

        let at = if bytes[0] == b'"' {
            scan_quoted_local(s)?
        } else {
            scan_dot_atom_local(s)?
        };
        if at > MAX_LOCAL {
            return Err(EmailError::LocalTooLong {
                addr: shown(s),
                len: at,
            });
        }
        scan_domain(s, at + 1)?;
        let domain_len = s.len() - at - 1;
        if domain_len > MAX_DOMAIN {
            return Err(EmailError::DomainTooLong {
                addr: shown(s),
                len: domain_len,
            });
        }
        if s.len() > MAX_TOTAL {
            return Err(EmailError::TooLong {
                addr: shown(s),
                len: s.len(),
            });
        }
        Ok(Address(s))
    }

    /// The trimmed address as typed.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// The part before the last `@` outside quotes, including any quotes (`"john smith"`).
    pub fn local(&self) -> &'a str {
        &self.0[..self.at()]
    }

    /// The part after the last `@` outside quotes, as typed (brackets kept for literals).
    pub fn domain(&self) -> &'a str {
        &self.0[self.at() + 1..]
    }

    /// The address as SMTP without SMTPUTF8 can carry it, when only its domain is not ASCII:
    /// the domain in its ASCII (Punycode) form, as in DNS (`bob@bücher.example` →
    /// `bob@xn--bcher-kva.example`). `None` when the address is ASCII already, or when its
    /// local part is not (that needs SMTPUTF8), or the domain has no ASCII form.
    pub fn ascii_domain_form(&self) -> Option<String> {
        let (local, domain) = (self.local(), self.domain());
        if self.0.is_ascii() || !local.is_ascii() {
            return None;
        }
        let ascii = idna::domain_to_ascii(domain).ok()?;
        Some(format!("{local}@{ascii}"))
    }

    /// The dedupe / ledger key: case-insensitive identity of the address.
    #[must_use]
    pub fn key(&self) -> RecipientKey {
        hash_lowercase(self.0)
    }

    /// Byte index of the separating `@`. A valid domain never contains `@` (address literals are
    /// limited to IP addresses), so the last `@` in the string is the one outside quotes.
    fn at(&self) -> usize {
        memchr::memrchr(b'@', self.0.as_bytes()).unwrap_or(0)
    }
}

impl fmt::Display for Address<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Scans an unquoted (dot-atom) local part; returns the byte index of the `@` ending it.
fn scan_dot_atom_local(s: &str) -> Result<usize, EmailError> {
    let bytes = s.as_bytes();
    let mut prev_dot = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if CLASS[usize::from(b)] & ATEXT != 0 {
            prev_dot = false;
            i += 1;
            continue;
        }
        match b {
            b'.' => {
                if i == 0 {
                    return Err(EmailError::LocalLeadingDot { addr: shown(s) });
                }
                if prev_dot {
                    return Err(EmailError::LocalConsecutiveDots { addr: shown(s) });
                }
                prev_dot = true;
                i += 1;
            }
            b'@' => {
                if i == 0 {
                    return Err(EmailError::LocalEmpty { addr: shown(s) });
                }
                if prev_dot {
                    return Err(EmailError::LocalTrailingDot { addr: shown(s) });
                }
                return Ok(i);
            }
            0x80.. => {
                i += non_ascii(s, i, Part::Local)?;
                prev_dot = false;
            }
            _ => return Err(bad_char(s, i, Part::Local)),
        }
    }
    // Unreachable in practice: `parse` checked there is an '@', and every other byte either
    // advances or returns.
    Err(EmailError::NoAt { addr: shown(s) })
}

/// Scans a quoted-string local part starting at byte 0; returns the byte index of the `@`.
fn scan_quoted_local(s: &str) -> Result<usize, EmailError> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        if CLASS[usize::from(b)] & QTEXT != 0 {
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                return match bytes.get(i + 1) {
                    // `""@x.org` is legal RFC 5321 but no real mailbox is called that, and
                    // many servers refuse it: treat it as a missing name.
                    Some(b'@') if i == 1 => Err(EmailError::LocalEmpty { addr: shown(s) }),
                    Some(b'@') => Ok(i + 1),
                    None => Err(EmailError::NoAt { addr: shown(s) }),
                    Some(_) => Err(EmailError::TextAfterQuote { addr: shown(s) }),
                };
            }
            b'\\' => match bytes.get(i + 1) {
                // RFC 5321 quoted-pairSMTP: a backslash escapes any printable ASCII or space.
                Some(32..=126) => i += 2,
                Some(_) => return Err(bad_char(s, i + 1, Part::Local)),
                None => return Err(EmailError::UnterminatedQuote { addr: shown(s) }),
            },
            0x80.. => i += non_ascii(s, i, Part::Local)?,
            _ => return Err(bad_char(s, i, Part::Local)),
        }
    }
    Err(EmailError::UnterminatedQuote { addr: shown(s) })
}

/// Scans the domain, which starts at byte `start` of `s` (just after the `@`).
fn scan_domain(s: &str, start: usize) -> Result<(), EmailError> {
    let bytes = s.as_bytes();
    let end = bytes.len();
    if start == end {
        return Err(EmailError::DomainEmpty { addr: shown(s) });
    }
    if bytes[start] == b'[' {
        return check_address_literal(s, start);
    }
    let mut label_start = start;
    let mut labels = 0usize;
    let mut all_digits = true;
    let mut i = start;
    while i < end {
        let b = bytes[i];
        let class = CLASS[usize::from(b)];
        if class & LD != 0 {
            all_digits &= class & DIGIT != 0;
            i += 1;
            continue;
        }
        match b {
            b'-' => {
                if i == label_start {
                    return Err(EmailError::LabelHyphen { addr: shown(s) });
                }
                all_digits = false;
                i += 1;
            }
            b'.' => {
                end_label(s, label_start, i)?;
                labels += 1;
                label_start = i + 1;
                all_digits = true;
                i += 1;
            }
            b'@' => return Err(EmailError::MultipleAt { addr: shown(s) }),
            b',' | b';' if memchr::memchr(b'@', &bytes[i..]).is_some() => {
                return Err(EmailError::MultipleAddresses { addr: shown(s) });
            }
            0x80.. => {
                i += non_ascii(s, i, Part::Domain)?;
                all_digits = false;
            }
            _ => {
                // A space before another '@' is a list ("a@x.org b@y.org"), not a typo.
                if b == b' ' && memchr::memchr(b'@', &bytes[i..]).is_some() {
                    return Err(EmailError::MultipleAddresses { addr: shown(s) });
                }
                return Err(bad_char(s, i, Part::Domain));
            }
        }
    }
    if label_start == end {
        return Err(EmailError::DomainTrailingDot { addr: shown(s) });
    }
    end_label(s, label_start, end)?;
    if labels == 0 {
        return Err(EmailError::DomainNoDot { addr: shown(s) });
    }
    if all_digits {
        return Err(EmailError::NumericTld { addr: shown(s) });
    }
    Ok(())
}

/// Checks the label `s[from..to]` once its end is known.
fn end_label(s: &str, from: usize, to: usize) -> Result<(), EmailError> {
    let len = to - from;
    if len == 0 {
        return Err(EmailError::LabelEmpty { addr: shown(s) });
    }
    if len > MAX_LABEL {
        return Err(EmailError::LabelTooLong {
            addr: shown(s),
            len,
        });
    }
    if s.as_bytes()[to - 1] == b'-' {
        return Err(EmailError::LabelHyphen { addr: shown(s) });
    }
    Ok(())
}

/// Checks `[IPv4]` or `[IPv6:...]` starting at byte `start`. RFC 5321 also allows
/// `[tag:anything]` general literals; no donor has one, so they are rejected, which also keeps
/// `@` out of every valid domain.
fn check_address_literal(s: &str, start: usize) -> Result<(), EmailError> {
    let bad = || EmailError::BadAddressLiteral { addr: shown(s) };
    let inner = s[start + 1..].strip_suffix(']').ok_or_else(bad)?;
    let ok = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    };
    if ok { Ok(()) } else { Err(bad()) }
}

/// The case-insensitive identity of an address (or, via [`domain_key`], of a domain).
///
/// Defined as the XXH3-128 hash (seed 0) of the UTF-8 bytes of the lowercased text: ASCII
/// letters folded with `to_ascii_lowercase`, anything else with Rust's `str::to_lowercase`
/// (Unicode default lowercase mapping). Keys are written to run directories (ledgers, dedupe
/// state) and compared across runs and tool versions, so this definition must never change;
/// the unit test `key_is_stable` pins one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecipientKey(u128);

impl RecipientKey {
    /// The raw 128-bit value.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The key of a raw 128-bit value, as read back from a run directory.
    pub(crate) fn from_u128(v: u128) -> RecipientKey {
        RecipientKey(v)
    }

    /// The key as 32 lowercase hex digits, the form stored in run directories.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses the form [`RecipientKey::to_hex`] writes: exactly 32 lowercase hex digits.
    ///
    /// Anything else (uppercase, a sign, another length) is `None`, so a stored key has one
    /// spelling only.
    pub fn from_hex(s: &str) -> Option<RecipientKey> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(RecipientKey)
    }
}

impl fmt::Display for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Room for any valid address (at most 254 bytes) so the common case never allocates.
const KEY_BUF: usize = 256;

/// Hashes the lowercase form of `s`, on the stack for ASCII text that fits.
fn hash_lowercase(s: &str) -> RecipientKey {
    let bytes = s.as_bytes();
    // Most addresses are typed in lowercase ASCII already: hash them as they are. One pass
    // without early exit, so it vectorises.
    let folds = bytes
        .iter()
        .fold(false, |f, &b| f | (b >= 0x80) | b.is_ascii_uppercase());
    if !folds {
        return RecipientKey(xxhash_rust::xxh3::xxh3_128(bytes));
    }
    if bytes.len() <= KEY_BUF && bytes.is_ascii() {
        let mut buf = [0u8; KEY_BUF];
        let out = &mut buf[..bytes.len()];
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = b.to_ascii_lowercase();
        }
        return RecipientKey(xxhash_rust::xxh3::xxh3_128(out));
    }
    // Rare path. `to_lowercase` maps ASCII exactly like `to_ascii_lowercase`, so both paths
    // agree on mixed text.
    RecipientKey(xxhash_rust::xxh3::xxh3_128(s.to_lowercase().as_bytes()))
}

/// Normalised form (lowercased, trimmed) as an owned string, for reports and suppression files.
///
/// `RecipientKey` of an address is exactly the hash of this string.
#[must_use]
pub fn normalise(addr: &Address<'_>) -> String {
    let s = addr.as_str();
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Key of a domain for `@domain` suppression: the domain lowercased and hashed like an address.
///
/// Use as `domain_key(addr.domain())`. Surrounding ASCII whitespace and one leading `@` are
/// ignored, so a suppression-file line `@Example.ORG` gives the same key as `example.org`.
/// Domain keys cannot collide structurally with address keys: an address always has an `@`.
#[must_use]
pub fn domain_key(domain: &str) -> RecipientKey {
    let d = domain.trim_ascii();
    hash_lowercase(d.strip_prefix('@').unwrap_or(d))
}

/// A set of [`RecipientKey`]s: a flat open-addressing table of 16-byte keys with linear
/// probing. The key is already a uniform hash, so its low bits pick the slot.
///
/// 16 bytes per slot at most 7/8 full, rounded up to a power of two: ten million donors take
/// 2^24 slots, 268 MB (27 B a donor). Written by hand rather than with std's `HashSet` for
/// [`KeySet::insert_batch`]: touching every slot of a batch before inserting lets the CPU
/// fetch them from memory in parallel, where one insert after another waits for each miss in
/// turn (the table is far larger than any cache).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// `0` marks an empty slot; the key `0` itself lives in `has_zero`.
    slots: Vec<u128>,
    len: usize,
    has_zero: bool,
}

impl KeySet {
    /// An empty set with room for `n` keys before it reallocates.
    pub fn with_capacity(n: usize) -> Self {
        let mut slots = vec![0; Self::slots_for(n)];
        // Write every page now. Left to the inserts, each page's first touch is a read (the
        // probe), which maps the shared zero page, and then a write, which copies it and
        // flushes that mapping from every core's TLB: for a 10M-row table that was 65,000
        // cross-core interrupts, ~4% of segment's CPU. `black_box` keeps the compiler from
        // dropping stores of zeros into memory it knows is zeroed.
        for slot in slots.iter_mut().step_by(4096 / size_of::<u128>()) {
            *slot = std::hint::black_box(0);
        }
        KeySet {
            slots,
            len: 0,
            has_zero: false,
        }
    }

    fn slots_for(n: usize) -> usize {
        (n.saturating_mul(8) / 7 + 1).next_power_of_two().max(16)
    }

    fn slot(&self, k: u128) -> usize {
        // The low 64 bits of an XXH3-128 hash are as well mixed as the whole.
        (k as u64 as usize) & (self.slots.len() - 1)
    }

    /// Makes room for `more` keys, doubling the table as needed.
    fn reserve(&mut self, more: usize) {
        let need = self.len + more + 1;
        if !self.slots.is_empty() && need * 8 <= self.slots.len() * 7 {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![0; Self::slots_for(need)]);
        self.len = 0;
        for k in old.into_iter().filter(|&k| k != 0) {
            self.put(k);
        }
    }

    /// Inserts into a table with room; `true` if new.
    fn put(&mut self, k: u128) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(k);
        loop {
            let s = self.slots[i];
            if s == 0 {
                self.slots[i] = k;
                self.len += 1;
                return true;
            }
            if s == k {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `k`; returns `true` if it was not already present.
    pub fn insert(&mut self, k: RecipientKey) -> bool {
        if k.0 == 0 {
            return !std::mem::replace(&mut self.has_zero, true);
        }
        self.reserve(1);
        self.put(k.0)
    }

    /// Inserts `keys` in order, pushing to `new` whether each was not already present (a key
    /// repeated within the batch is new only the first time). Same result as calling
    /// [`KeySet::insert`] for each, faster on large tables.
    pub fn insert_batch(&mut self, keys: &[RecipientKey], new: &mut Vec<bool>) {
        self.reserve(keys.len());
        // Independent loads of every home slot: their cache misses overlap, so the inserts
        // below find the slots already in cache.
        let mut touched = 0u128;
        for k in keys {
            touched ^= self.slots[self.slot(k.0)];
        }
        std::hint::black_box(touched);
        for &k in keys {
            let fresh = if k.0 == 0 {
                !std::mem::replace(&mut self.has_zero, true)
            } else {
                self.put(k.0)
            };
            new.push(fresh);
        }
    }

    /// Whether `k` is present.
    pub fn contains(&self, k: RecipientKey) -> bool {
        if k.0 == 0 {
            return self.has_zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(k.0);
        loop {
            match self.slots[i] {
                0 => return false,
                s if s == k.0 => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len + usize::from(self.has_zero)
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(e: &EmailError) -> &'static str {
        match e {
            EmailError::Empty => "Empty",
            EmailError::NoAt { .. } => "NoAt",
            EmailError::MultipleAt { .. } => "MultipleAt",
            EmailError::MailtoPrefix { .. } => "MailtoPrefix",
            EmailError::DisplayName { .. } => "DisplayName",
            EmailError::MultipleAddresses { .. } => "MultipleAddresses",
            EmailError::Whitespace { .. } => "Whitespace",
            EmailError::ControlChar { .. } => "ControlChar",
            EmailError::InvalidChar { .. } => "InvalidChar",
            EmailError::LocalEmpty { .. } => "LocalEmpty",
            EmailError::LocalTooLong { .. } => "LocalTooLong",
            EmailError::LocalLeadingDot { .. } => "LocalLeadingDot",
            EmailError::LocalTrailingDot { .. } => "LocalTrailingDot",
            EmailError::LocalConsecutiveDots { .. } => "LocalConsecutiveDots",
            EmailError::UnterminatedQuote { .. } => "UnterminatedQuote",
            EmailError::TextAfterQuote { .. } => "TextAfterQuote",
            EmailError::DomainEmpty { .. } => "DomainEmpty",
            EmailError::DomainTooLong { .. } => "DomainTooLong",
            EmailError::DomainNoDot { .. } => "DomainNoDot",
            EmailError::DomainTrailingDot { .. } => "DomainTrailingDot",
            EmailError::LabelEmpty { .. } => "LabelEmpty",
            EmailError::LabelTooLong { .. } => "LabelTooLong",
            EmailError::LabelHyphen { .. } => "LabelHyphen",
            EmailError::NumericTld { .. } => "NumericTld",
            EmailError::BadAddressLiteral { .. } => "BadAddressLiteral",
            EmailError::TooLong { .. } => "TooLong",
        }
    }

    fn key(s: &str) -> RecipientKey {
        Address::parse(s).expect(s).key()
    }

    #[test]
    fn accepts_valid_addresses() {
        let local64 = format!("{}@example.org", "a".repeat(64));
        let label63 = format!("bob@{}.org", "b".repeat(63));
        // 64 + 1 + 189 = 254 octets: the longest allowed.
        let longest = format!(
            "{}@{}.{}.{}.org",
            "a".repeat(64),
            "b".repeat(61),
            "c".repeat(61),
            "d".repeat(61)
        );
        assert_eq!(longest.len(), 254);
        let cases: Vec<(&str, &str, &str)> = vec![
            // (input, local, domain)
            ("simple@example.org", "simple", "example.org"),
            ("very.common@example.com", "very.common", "example.com"),
            ("x@example.com", "x", "example.com"),
            ("a@b.co", "a", "b.co"),
            (
                "user.name+tag+sorting@example.com",
                "user.name+tag+sorting",
                "example.com",
            ),
            (
                "other.email-with-hyphen@example.com",
                "other.email-with-hyphen",
                "example.com",
            ),
            (
                "fully-qualified@example.co.uk",
                "fully-qualified",
                "example.co.uk",
            ),
            (
                "example-indeed@strange-example.com",
                "example-indeed",
                "strange-example.com",
            ),
            ("admin@mailserver1.example", "admin", "mailserver1.example"),
            (
                "bob@sub-domain.example-site.org",
                "bob",
                "sub-domain.example-site.org",
            ),
            ("bob@123.example", "bob", "123.example"),
            ("bob@example.a1", "bob", "example.a1"),
            ("1234567890@example.com", "1234567890", "example.com"),
            (
                "mailhost!username@example.org",
                "mailhost!username",
                "example.org",
            ),
            (
                "user%example.com@example.org",
                "user%example.com",
                "example.org",
            ),
            ("user-@example.org", "user-", "example.org"),
            ("_under_score_@example.org", "_under_score_", "example.org"),
            ("o'brien@example.ie", "o'brien", "example.ie"),
            (
                "!#$%&'*+-/=?^_`{|}~@example.org",
                "!#$%&'*+-/=?^_`{|}~",
                "example.org",
            ),
            ("BOB@EXAMPLE.ORG", "BOB", "EXAMPLE.ORG"),
            (
                "\"john smith\"@example.org",
                "\"john smith\"",
                "example.org",
            ),
            ("\"john..doe\"@example.org", "\"john..doe\"", "example.org"),
            ("\"a@b\"@example.org", "\"a@b\"", "example.org"),
            (
                "\"esc\\\"quote\"@example.org",
                "\"esc\\\"quote\"",
                "example.org",
            ),
            (
                "\"back\\\\slash\"@example.org",
                "\"back\\\\slash\"",
                "example.org",
            ),
            ("\".leading\"@example.org", "\".leading\"", "example.org"),
            ("\"grüße\"@example.de", "\"grüße\"", "example.de"),
            ("bob@[192.0.2.1]", "bob", "[192.0.2.1]"),
            ("bob@[IPv6:2001:db8::1]", "bob", "[IPv6:2001:db8::1]"),
            (
                "bob@[ipv6:::ffff:192.0.2.1]",
                "bob",
                "[ipv6:::ffff:192.0.2.1]",
            ),
            ("josé@example.es", "josé", "example.es"),
            ("Zoë.Smith@example.co.uk", "Zoë.Smith", "example.co.uk"),
            ("田中@example.jp", "田中", "example.jp"),
            ("用户@例子.广告", "用户", "例子.广告"),
            ("почта@пример.рф", "почта", "пример.рф"),
            ("bob@münchen.de", "bob", "münchen.de"),
            ("bob@xn--mnchen-3ya.de", "bob", "xn--mnchen-3ya.de"),
            ("  bob@example.org  ", "bob", "example.org"),
            ("\tbob@example.org\r\n", "bob", "example.org"),
            (&local64, &local64[..64], "example.org"),
            (&label63, "bob", &label63[4..]),
            (&longest, &longest[..64], &longest[65..]),
        ];
        for (input, local, domain) in cases {
            let a = Address::parse(input).unwrap_or_else(|e| panic!("{input:?} rejected: {e}"));
            assert_eq!(a.local(), local, "{input:?}");
            assert_eq!(a.domain(), domain, "{input:?}");
            assert_eq!(a.as_str(), input.trim_ascii());
            assert_eq!(a.to_string(), input.trim_ascii());
        }
    }

    #[test]
    fn rejects_invalid_addresses() {
        let long_local = format!("{}@example.org", "a".repeat(65));
        let long_label = format!("bob@{}.org", "b".repeat(64));
        let long_domain = format!("b@{}{}", format!("{}.", "a".repeat(60)).repeat(5), "org");
        let too_long = format!(
            "{}@{}.{}.{}.org",
            "a".repeat(64),
            "b".repeat(61),
            "c".repeat(61),
            "d".repeat(62)
        );
        let cases: Vec<(&str, &str)> = vec![
            ("", "Empty"),
            ("   \t ", "Empty"),
            ("bob", "NoAt"),
            ("bob.example.org", "NoAt"),
            ("\"a@b\"", "NoAt"),
            ("bob＠example.org", "InvalidChar"),
            ("bob@@example.org", "MultipleAt"),
            ("a@b@example.org", "MultipleAt"),
            ("mailto:bob@example.org", "MailtoPrefix"),
            ("MAILTO:bob@example.org", "MailtoPrefix"),
            ("Bob <bob@example.org>", "DisplayName"),
            ("\"Bob Smith\" <bob@example.org>", "DisplayName"),
            ("<bob@example.org>", "DisplayName"),
            ("bob@example.org, alice@example.org", "MultipleAddresses"),
            ("bob@example.org;alice@example.org", "MultipleAddresses"),
            ("bob@example.org alice@example.org", "MultipleAddresses"),
            ("bob smith@example.org", "Whitespace"),
            ("bob@exa mple.org", "Whitespace"),
            ("bob\u{a0}@example.org", "Whitespace"),
            ("\"tab\there\"@example.org", "Whitespace"),
            ("bob\u{0}@example.org", "ControlChar"),
            ("bob@exa\nmple.org", "ControlChar"),
            ("bob\u{200b}@example.org", "ControlChar"),
            ("\"bob\\\u{1}\"@example.org", "ControlChar"),
            ("bob(comment)@example.org", "InvalidChar"),
            ("bob,smith@example.org", "InvalidChar"),
            ("a\"b@example.org", "InvalidChar"),
            ("bob@exam_ple.org", "InvalidChar"),
            ("bob@example.org!", "InvalidChar"),
            ("bob@example。org", "InvalidChar"),
            ("@example.org", "LocalEmpty"),
            ("\"\"@example.org", "LocalEmpty"),
            (&long_local, "LocalTooLong"),
            (".bob@example.org", "LocalLeadingDot"),
            ("bob.@example.org", "LocalTrailingDot"),
            ("bob..smith@example.org", "LocalConsecutiveDots"),
            ("\"unterminated@example.org", "UnterminatedQuote"),
            ("\"abc@example.org\\", "UnterminatedQuote"),
            ("\"bob\"smith@example.org", "TextAfterQuote"),
            ("bob@", "DomainEmpty"),
            (&long_domain, "DomainTooLong"),
            ("bob@gmail", "DomainNoDot"),
            ("bob@localhost", "DomainNoDot"),
            ("bob@example.org.", "DomainTrailingDot"),
            ("bob@example..org", "LabelEmpty"),
            ("bob@.example.org", "LabelEmpty"),
            (&long_label, "LabelTooLong"),
            ("bob@-example.org", "LabelHyphen"),
            ("bob@example-.org", "LabelHyphen"),
            ("bob@192.168.0.1", "NumericTld"),
            ("bob@[192.168.0.300]", "BadAddressLiteral"),
            ("bob@[IPv6:zz::1]", "BadAddressLiteral"),
            ("bob@[example.org]", "BadAddressLiteral"),
            ("bob@[192.0.2.1", "BadAddressLiteral"),
            (&too_long, "TooLong"),
        ];
        for (input, expected) in cases {
            match Address::parse(input) {
                Ok(a) => panic!("{input:?} accepted as {a:?}, expected {expected}"),
                Err(e) => assert_eq!(variant(&e), expected, "{input:?}: {e}"),
            }
        }
    }

    #[test]
    fn error_messages_read_well() {
        let msg = |s: &str| Address::parse(s).unwrap_err().to_string();
        assert_eq!(
            msg("bob@@example.org"),
            "\"bob@@example.org\": more than one @ outside quotes"
        );
        assert_eq!(
            msg("Bob <bob@x.org>"),
            "\"Bob <bob@x.org>\": looks like a display name; the column must hold only the address"
        );
        assert_eq!(
            msg("bob@exa\nmple.org"),
            "\"bob@exa\\nmple.org\": contains a line break (U+000A) at character 8"
        );
        assert_eq!(
            msg("bob smith@x.org"),
            "\"bob smith@x.org\": contains a space at character 4"
        );
        assert_eq!(
            msg("zoë(x)@x.org"),
            "\"zoë(x)@x.org\": '(' at character 4 is not allowed in the part before the @"
        );
        assert_eq!(msg("  "), "email is empty");
        assert!(msg("bob@gmail").contains("no dot"));
        assert!(msg("mailto:bob@x.org").contains("mailto:"));
        // A huge cell is cut short rather than copied whole into every message.
        let huge = format!("{}@", "x".repeat(100_000));
        assert!(msg(&huge).len() < 500);
    }

    #[test]
    fn keys_ignore_case_and_surrounding_whitespace() {
        assert_eq!(key("Bob@Example.ORG"), key("bob@example.org"));
        assert_eq!(key("  BOB@example.org\t"), key("bob@example.org"));
        assert_eq!(key("JOSÉ@x.org"), key("josé@x.org"));
        assert_eq!(key("ZOË@EXAMPLE.org"), key("zoë@example.org"));
        assert_ne!(key("bob@example.org"), key("bob2@example.org"));
        assert_ne!(key("bob.smith@example.org"), key("bobsmith@example.org"));
        let a = Address::parse(" JOSÉ@Example.ORG ").unwrap();
        assert_eq!(normalise(&a), "josé@example.org");
        assert_eq!(
            a.key().as_u128(),
            xxhash_rust::xxh3::xxh3_128("josé@example.org".as_bytes())
        );
    }

    #[test]
    fn key_is_stable() {
        // Stored in run directories: if this fails, existing ledgers no longer match.
        let k = key("Bob@Example.ORG");
        assert_eq!(k.to_hex(), "16949cc4e523bfa49f8519adf6d88afc");
        assert_eq!(k.to_hex().len(), 32);
        assert_eq!(k.to_string(), k.to_hex());
        assert_eq!(format!("{:032x}", k.as_u128()), k.to_hex());
    }

    #[test]
    fn domain_keys() {
        let a = Address::parse("Alice@SpamTrap.Example").unwrap();
        assert_eq!(domain_key(a.domain()), domain_key("spamtrap.example"));
        assert_eq!(
            domain_key("@spamtrap.example"),
            domain_key("spamtrap.example")
        );
        assert_eq!(
            domain_key(" @SPAMTRAP.example "),
            domain_key("spamtrap.example")
        );
        assert_eq!(domain_key("MÜNCHEN.de"), domain_key("münchen.de"));
        assert_ne!(domain_key("spamtrap.example"), domain_key("example"));
        assert_ne!(domain_key("spamtrap.example"), a.key());
    }

    #[test]
    fn key_set_basics() {
        let mut set = KeySet::default();
        assert!(set.is_empty());
        assert!(set.insert(key("bob@example.org")));
        assert!(!set.insert(key("BOB@example.org")));
        assert!(set.insert(key("alice@example.org")));
        assert_eq!(set.len(), 2);
        assert!(set.contains(key("Alice@Example.org")));
        assert!(!set.contains(key("carol@example.org")));

        let mut big = KeySet::with_capacity(10_000);
        for i in 0..10_000 {
            assert!(big.insert(key(&format!("donor{i}@example.org"))));
        }
        assert_eq!(big.len(), 10_000);
        assert!(big.contains(key("DONOR9999@example.org")));
    }

    #[test]
    fn batch_insert_matches_one_by_one_and_grows() {
        let keys: Vec<RecipientKey> = (0..5000)
            .map(|i| key(&format!("d{}@example.org", i % 3000)))
            .chain([RecipientKey(0), RecipientKey(0)])
            .collect();
        let mut one = KeySet::default();
        let expected: Vec<bool> = keys.iter().map(|&k| one.insert(k)).collect();
        let mut batched = KeySet::with_capacity(10);
        let mut got = Vec::new();
        for part in keys.chunks(700) {
            batched.insert_batch(part, &mut got);
        }
        assert_eq!(got, expected);
        assert_eq!(batched.len(), 3001);
        assert_eq!(one.len(), 3001);
        assert!(batched.contains(RecipientKey(0)));
        assert!(batched.contains(key("D2999@example.org")));
        assert!(!batched.contains(key("d3000@example.org")));
    }

    #[test]
    fn an_international_domain_has_an_ascii_form() {
        let form = |s: &str| Address::parse(s).unwrap().ascii_domain_form();
        assert_eq!(
            form("bob@bücher.example").as_deref(),
            Some("bob@xn--bcher-kva.example")
        );
        assert_eq!(
            form("bob@München.de").as_deref(),
            Some("bob@xn--mnchen-3ya.de")
        );
        assert_eq!(form("bob@example.org"), None, "ASCII already");
        assert_eq!(
            form("łukasz@bücher.example"),
            None,
            "the local part needs SMTPUTF8"
        );
    }
}
