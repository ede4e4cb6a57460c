//! What may go into a header, and how each header line is written.
//!
//! This owns refusing control characters in donor values, reading the `[message]` From /
//! Reply-To / unsubscribe mailto into mailboxes, checking the one-click URL, and writing header
//! lines into a message's bytes: the mailboxes and the Subject with RFC 2047 encoded words and
//! folding exactly as lettre writes them (with lettre's own encoder, email-encoding), the
//! unsubscribe headers, List-Id and Feedback-ID verbatim from values checked here. It never
//! decides which headers a message has or in what order ([`super::Composer`] does) and never
//! encodes a body.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use email_encoding::headers::writer::EmailWriter;
use email_encoding::headers::{quoted_string, rfc2047};
use lettre::message::Mailbox;

use super::{MessageError, codepoint, describe};
use crate::email::Address;

/// Where the header encoders fold a line (email-encoding's limit, RFC 2047's 76).
const MAX_HEADER_LINE: usize = 76;

/// The longest unsubscribe URL accepted: `List-Unsubscribe: <URL>,` must fit one line.
const MAX_URL: usize = 900;

/// `List-Unsubscribe-Post` (RFC 8058) with the only value it defines.
pub(super) const LIST_UNSUBSCRIBE_POST: &str =
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";

/// The first control character in `s`, if any; `allow_tab` lets TAB (legal header whitespace)
/// through.
fn control_char(s: &str, allow_tab: bool) -> Option<char> {
    // Fast path: almost every value is plain ASCII text with no control bytes.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) || (allow_tab && b == b'\t'))
    {
        return None;
    }
    s.chars()
        .find(|&c| c.is_control() && !(allow_tab && c == '\t'))
}

/// Refuses any control character in a header value coming from donor data.
pub(super) fn check_header_value(
    field: &'static str,
    s: &str,
    allow_tab: bool,
) -> Result<(), MessageError> {
    match control_char(s, allow_tab) {
        Some(ch) => Err(MessageError::HeaderInjection { field, ch }),
        None => Ok(()),
    }
}

/// Checks that a value written verbatim (List-Id, RFC 2919; Gmail's Feedback-ID) is printable
/// ASCII; `field` names the setting in the error.
pub(super) fn ascii_value<'v>(
    field: &'static str,
    value: &'v str,
) -> Result<&'v str, MessageError> {
    match value.chars().find(|c| !(' '..='~').contains(c)) {
        None => Ok(value),
        Some(c) => Err(MessageError::NotAscii {
            field,
            value: value.to_owned(),
            what: format!("{} ({})", describe(c), codepoint(c)),
        }),
    }
}

/// A message's bytes as a `fmt::Write`, for the header encoders.
struct Sink<'a>(&'a mut Vec<u8>);

impl fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The encoders write into memory, which cannot fail; were one to report an error anyway, the
/// donor fails rather than getting a half-written header.
fn written(r: fmt::Result) -> Result<(), MessageError> {
    r.map_err(|_| MessageError::Build("a header could not be encoded".into()))
}

/// Appends `Name: value` CRLF with `value` written verbatim: the caller checked it holds only
/// printable ASCII (and any folds it put there itself).
pub(super) fn write_verbatim(name: &str, value: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a mailbox header (`From`, `Reply-To`, `To`): the display name as an atom, a quoted
/// string or RFC 2047 words, then `<address>`; a bare address without a name. Byte for byte
/// what lettre's mailbox headers write.
pub(super) fn write_mailbox(
    name: &str,
    display: Option<&str>,
    address: &str,
    out: &mut Vec<u8>,
) -> Result<(), MessageError> {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let mut sink = Sink(out);
    written((|| {
        let mut w = EmailWriter::new(&mut sink, name.len() + 2, 0, false);
        if let Some(display) = display {
            quoted_string::encode(display, &mut w)?;
            w.space();
            w.write_char('<')?;
        }
        w.write_str(address)?;
        if display.is_some() {
            w.write_char('>')?;
        }
        Ok(())
    })())?;
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends an unstructured header (the Subject): runs of words with non-ASCII characters
/// become RFC 2047 encoded words, the rest stays as written, folded before 76 columns where
/// there is a space. Byte for byte what lettre writes for a `Subject`.
pub(super) fn write_text(name: &str, value: &str, out: &mut Vec<u8>) -> Result<(), MessageError> {
    /// What lettre passes through unencoded: any ASCII but NUL, CR and LF.
    fn plain(word: &str) -> bool {
        word.bytes()
            .all(|c| matches!(c, 1..=9 | 11 | 12 | 14..=127))
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Plain text that fits the line needs neither encoding nor folding: the writers below
    // would give it back as it is, at a few hundred instructions a word.
    if name.len() + 2 + value.len() <= MAX_HEADER_LINE && plain(value) {
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
        return Ok(());
    }
    let mut sink = Sink(out);
    written((|| {
        let mut w = EmailWriter::new(&mut sink, name.len() + 2, 0, false);
        // Consecutive words to encode go into one run of encoded words, without the spaces
        // after it, which stay foldable.
        let mut pending = String::new();
        let flush = |pending: &mut String, w: &mut EmailWriter<'_>| -> fmt::Result {
            if pending.is_empty() {
                return Ok(());
            }
            let text = pending.trim_end_matches(' ');
            rfc2047::encode(text, w)?;
            for _ in text.len()..pending.len() {
                w.space();
            }
            pending.clear();
            Ok(())
        };
        for word in value.split_inclusive(' ') {
            if plain(word) {
                flush(&mut pending, &mut w)?;
                w.folding().write_str(word)?;
            } else {
                pending.push_str(word);
            }
        }
        flush(&mut pending, &mut w)
    })())?;
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends a Subject written as RFC 2047 encoded words throughout (`=?utf-8?b?...?=`,
/// folded), for text that a client would otherwise decode as encoded words (a donor whose name
/// is `=?utf-8?b?...?=`): it then reads as written.
pub(super) fn write_encoded_subject(text: &str, out: &mut Vec<u8>) {
    use base64::Engine as _;
    /// UTF-8 bytes per encoded word: 56 base64 characters, so that `Subject: ` and the first
    /// word fit in 78 characters (RFC 5322's advice) and no word passes 75 (RFC 2047's rule).
    const BYTES_PER_WORD: usize = 42;
    out.extend_from_slice(b"Subject: ");
    let mut rest = text;
    let mut first = true;
    while !rest.is_empty() {
        let mut end = rest.len().min(BYTES_PER_WORD);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if !first {
            out.extend_from_slice(b"\r\n ");
        }
        first = false;
        out.extend_from_slice(b"=?utf-8?b?");
        let at = out.len();
        out.resize(at + base64::encoded_len(end, true).unwrap_or(0), 0);
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(&rest[..end], &mut out[at..])
            .unwrap_or(0);
        out.truncate(at + n);
        out.extend_from_slice(b"?=");
        rest = &rest[end..];
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses `Display Name <addr>`, `"Quoted, Name" <addr>` or a bare address from `[message]`.
pub(super) fn parse_mailbox(field: &'static str, raw: &str) -> Result<Mailbox, MessageError> {
    let bad = |reason: String| MessageError::BadAddress {
        field,
        value: raw.to_owned(),
        reason,
    };
    if let Some(c) = control_char(raw, false) {
        return Err(bad(format!(
            "it contains {} ({})",
            describe(c),
            codepoint(c)
        )));
    }
    let s = raw.trim();
    let (name, addr) = match (s.rfind('<'), s.strip_suffix('>')) {
        (Some(lt), Some(inner)) => (s[..lt].trim(), &inner[lt + 1..]),
        (None, None) => ("", s),
        _ => {
            return Err(bad(format!(
                "{s:?} has unbalanced angle brackets; write `Display Name <address>` or just the address"
            )));
        }
    };
    let name = unquote(name).map_err(|r| bad(format!("the display name {name:?} {r}")))?;
    // The crate's own parser gives reasons a marketer can act on ("no dot in the domain");
    // lettre's then confirms it can write the address.
    let checked = Address::parse(addr).map_err(|e| bad(e.to_string()))?;
    let email: lettre::Address =
        checked
            .as_str()
            .parse()
            .map_err(|e: lettre::address::AddressError| {
                bad(format!(
                    "{:?}: {e} (lettre cannot write it into a header)",
                    checked.as_str()
                ))
            })?;
    let name = (!name.is_empty()).then(|| name.into_owned());
    Ok(Mailbox::new(name, email))
}

/// Removes one level of `"..."` quoting (with `\` escapes) from a display name.
fn unquote(name: &str) -> Result<Cow<'_, str>, &'static str> {
    let Some(inner) = name.strip_prefix('"') else {
        if name.contains('"') {
            return Err("has a stray '\"'; quote the whole name or none of it");
        }
        return Ok(Cow::Borrowed(name));
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or("starts with '\"' but does not end with one")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or("ends with a lone '\\'")?),
            '"' => return Err("has an unescaped '\"' inside the quotes"),
            c => out.push(c),
        }
    }
    Ok(Cow::Owned(out))
}

/// `<mailto:ADDR?subject=unsubscribe>` from `[message] unsubscribe_mailto` (a bare address,
/// optionally written with `mailto:`).
pub(super) fn mailto_uri(raw: &str) -> Result<String, MessageError> {
    const FIELD: &str = "[message] unsubscribe_mailto";
    let bad = |reason: String| MessageError::BadAddress {
        field: FIELD,
        value: raw.to_owned(),
        reason,
    };
    let s = raw.trim();
    let s = match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => &s[7..],
        _ => s,
    };
    if s.contains('?') && s.rfind('?') > s.rfind('@') {
        return Err(bad(
            "write only the address; `?subject=unsubscribe` is added automatically".to_owned(),
        ));
    }
    let addr = Address::parse(s).map_err(|e| bad(e.to_string()))?;
    let mut uri = String::with_capacity(addr.as_str().len() + 40);
    uri.push_str("<mailto:");
    mailto_escape(addr.as_str(), &mut uri);
    uri.push_str("?subject=unsubscribe");
    Ok(uri)
}

/// Appends `text` to a `mailto:` URI: RFC 6068 percent-encodes every byte outside unreserved
/// characters and `some-delims` (this covers UTF-8 and the `%`, `?`, `#`, `&` an address may
/// legally contain).
pub(super) fn mailto_escape(text: &str, uri: &mut String) {
    /// Bytes a mailto URI takes as they are.
    const KEEP: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = matches!(b as u8, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
                || matches!(b as u8, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'\'')
                || matches!(
                    b as u8,
                    b'(' | b')' | b'*' | b'+' | b',' | b';' | b':' | b'@'
                );
            b += 1;
        }
        t
    };
    let keep = |c: char| c.is_ascii() && KEEP[usize::from(c as u8)];
    crate::percent::encode(text, keep, crate::percent::UPPER, uri);
}

/// Checks the one-click URL and builds the List-Unsubscribe value.
pub(super) fn list_unsubscribe_value(
    url: &str,
    mailto: Option<&str>,
) -> Result<String, MessageError> {
    let bad = |reason: String| Err(MessageError::UnsubscribeUrl { reason });
    let Some(rest) = url
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .map(|_| &url[8..])
    else {
        return bad(format!(
            "{} does not start with https:// (RFC 8058 one-click needs an https URL)",
            shown(url)
        ));
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..host_end].is_empty() {
        return bad(format!("{} has no host name", shown(url)));
    }
    if url.len() > MAX_URL {
        return bad(format!(
            "is {} characters long; at most {MAX_URL} fit in the header",
            url.len()
        ));
    }
    // RFC 3986 characters only: anything else (space, quotes, angle brackets, non-ASCII) must
    // be percent-encoded, e.g. with the `urlencode` template filter.
    const URL_CHARS: [bool; 128] = {
        let mut t = [false; 128];
        let mut b = 0;
        while b < 128 {
            t[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let punctuation = b"-._~:/?#[]@!$&'()*+,;=%";
        let mut i = 0;
        while i < punctuation.len() {
            t[punctuation[i] as usize] = true;
            i += 1;
        }
        t
    };
    if let Some(c) = url
        .chars()
        .find(|&c| !URL_CHARS.get(c as usize).copied().unwrap_or(false))
    {
        return bad(format!(
            "{} contains {c:?}, which is not allowed in a URL; percent-encode it (the `urlencode` filter)",
            shown(url)
        ));
    }
    let mut v = String::with_capacity(url.len() + mailto.map_or(0, str::len) + 8);
    v.push('<');
    v.push_str(url);
    v.push('>');
    if let Some(m) = mailto {
        v.push(',');
        // Keep lines near the recommended 78 characters by folding between the URIs (never
        // inside one); DKIM's relaxed canonicalisation treats both forms alike.
        if "List-Unsubscribe: ".len() + v.len() + 1 + m.len() > 78 {
            v.push_str("\r\n");
        }
        v.push(' ');
        v.push_str(m);
    }
    Ok(v)
}

/// A value for an error message, cut short so a huge cell does not flood the failures file.
fn shown(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use mail_parser::MessageParser;

    use super::*;
    use crate::campaign::MessageSettings;
    use crate::message::fixtures::{
        NAME, SUBJECT, URL, assert_wire_format, composer, header_block, key, outgoing, settings,
    };
    use crate::message::{Composer, Outgoing, Scratch, fixtures, recipient};

    #[test]
    fn text_that_looks_like_an_encoded_word_reads_as_written() {
        let c = composer();
        for subject in [
            "=?utf-8?b?SGFja2Vk?=",
            "Thank you, =?utf-8?q?Bo?= — you gave £25 to the park's spring appeal, again!",
            "a=?b",
        ] {
            let mut m = outgoing("hi\n", None);
            m.subject = subject;
            let bytes = c.compose(&m, &mut Scratch::default()).unwrap();
            assert_wire_format(&bytes);
            let head = header_block(&bytes);
            assert!(!head.contains(subject), "passed through as it is:\n{head}");
            // An independent parser reads back exactly the text, not what it would decode to.
            let msg = MessageParser::default().parse(&bytes).unwrap();
            assert_eq!(msg.subject(), Some(subject), "{head}");
        }
    }

    #[test]
    fn headers_round_trip() {
        let text = "Dear Zoë,\nthank you for £1,250.\n\nFriends of the Park\n";
        let html = "<p>Dear Zoë,</p>\n<p>thank you for <b>£1,250</b> ✓</p>\n";
        let c = composer();
        let bytes = c
            .compose(&outgoing(text, Some(html)), &mut Scratch::default())
            .unwrap();
        assert_wire_format(&bytes);
        let msg = MessageParser::default().parse(&bytes).unwrap();

        let from = msg.from().unwrap().first().unwrap();
        assert_eq!(from.name(), Some("Friends of the Park — Łódź"));
        assert_eq!(from.address(), Some("appeal@Park.Example"));
        let reply = msg.reply_to().unwrap().first().unwrap();
        assert_eq!(reply.name(), Some("Supporters, Park"));
        assert_eq!(reply.address(), Some("supporters@park.example"));
        let to = msg.to().unwrap().first().unwrap();
        assert_eq!(to.name(), Some(NAME));
        assert_eq!(to.address(), Some("zoe@example.org"));
        assert_eq!(msg.subject(), Some(SUBJECT));
        assert_eq!(msg.date().unwrap().to_rfc3339(), "2026-11-29T14:05:09Z");
        assert_eq!(
            msg.message_id(),
            Some(format!("gala-2026.{}@park.example", key("zoe@example.org").to_hex()).as_str())
        );

        let head = header_block(&bytes);
        // Non-ASCII header text is RFC 2047-encoded: the header block is pure ASCII.
        assert!(head.is_ascii(), "{head}");
        assert!(
            head.contains("\r\nDate: Sun, 29 Nov 2026 14:05:09 +0000\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nMIME-Version: 1.0\r\n"), "{head}");
        let expected_lu = format!(
            "List-Unsubscribe: <{URL}>,\r\n <mailto:unsubscribe@park.example?subject=unsubscribe%20gala-2026%20zoe@example.org%20TOKEN>\r\n"
        );
        assert!(head.contains(&expected_lu), "{head}");
        assert!(head.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert_eq!(
            msg.header_raw("List-Unsubscribe").unwrap().trim(),
            format!(
                "<{URL}>,\r\n <mailto:unsubscribe@park.example?subject=unsubscribe%20gala-2026%20zoe@example.org%20TOKEN>"
            )
        );
        assert_eq!(
            msg.header_raw("List-Unsubscribe-Post").unwrap().trim(),
            "List-Unsubscribe=One-Click"
        );
        // lettre drops nothing it should keep and adds nothing unexpected.
        for h in [
            "From",
            "Reply-To",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
        ] {
            assert_eq!(
                head.matches(&format!("\n{h}: ")).count()
                    + usize::from(head.starts_with(&format!("{h}: "))),
                1,
                "{h} in {head}"
            );
        }
        assert!(!head.contains("Bcc"));
    }

    #[test]
    fn header_injection_is_refused() {
        let c = composer();
        let inj = |f: &dyn Fn(&mut Outgoing<'_>)| {
            let mut m = outgoing("hi", None);
            f(&mut m);
            c.compose(&m, &mut Scratch::default()).unwrap_err()
        };
        let evil = "Bob\r\nBcc: evil@x.org";
        assert_eq!(
            inj(&|m| m.to_name = Some(evil)),
            MessageError::HeaderInjection {
                field: "to_name",
                ch: '\r'
            }
        );
        assert_eq!(
            inj(&|m| m.subject = evil),
            MessageError::HeaderInjection {
                field: "subject",
                ch: '\r'
            }
        );
        assert_eq!(
            inj(&|m| m.subject = "Hi\nBcc: evil@x.org"),
            MessageError::HeaderInjection {
                field: "subject",
                ch: '\n'
            }
        );
        assert_eq!(
            inj(&|m| m.to_name = Some("Bob\0")),
            MessageError::HeaderInjection {
                field: "to_name",
                ch: '\0'
            }
        );
        assert_eq!(
            inj(&|m| m.subject = "a\u{85}b"),
            MessageError::HeaderInjection {
                field: "subject",
                ch: '\u{85}'
            }
        );
        assert_eq!(
            inj(&|m| m.to_name = Some("Bob\tSmith")),
            MessageError::HeaderInjection {
                field: "to_name",
                ch: '\t'
            }
        );
        assert_eq!(
            inj(&|m| m.unsubscribe_url = Some("https://x.org/u\r\nBcc: evil@x.org")),
            MessageError::HeaderInjection {
                field: "unsubscribe_url",
                ch: '\r'
            }
        );
        // An address with a line break never gets as far as a header.
        assert!(matches!(
            recipient("bob@x.org\nBcc: evil@x.org"),
            Err(MessageError::BadAddress { field: "to", .. })
        ));
        assert_eq!(
            inj(&|m| m.subject = evil).to_string(),
            "the subject contains a line break (U+000D): donor data cannot add headers"
        );
        assert_eq!(
            inj(&|m| m.to_name = Some("Bob\0")).to_string(),
            "the To display name (to_name) contains a NUL character (U+0000): donor data cannot add headers"
        );
        // A tab is legal whitespace in a subject.
        let mut m = outgoing("hi", None);
        m.subject = "Thanks\tagain";
        let bytes = c.compose(&m, &mut Scratch::default()).unwrap();
        let msg = MessageParser::default().parse(&bytes).unwrap();
        assert!(msg.subject().unwrap().starts_with("Thanks"));
    }

    #[test]
    fn awkward_names_round_trip() {
        let c = composer();
        for name in [
            "O'Brien, \"Bob\" \\ Jr.",
            "a@b.org <x>",
            "=?utf-8?q?not-encoded?=",
            "Mr. Smith",
            "Zoë, Łukasz & 田中 (family)",
            &"Ævar ".repeat(40),
        ] {
            let mut m = outgoing("hi", None);
            m.to_name = Some(name);
            let bytes = c
                .compose(&m, &mut Scratch::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_wire_format(&bytes);
            let msg = MessageParser::default().parse(&bytes).unwrap();
            let to = msg.to().unwrap().first().unwrap();
            assert_eq!(to.name(), Some(name.trim()), "{}", header_block(&bytes));
            assert_eq!(to.address(), Some("zoe@example.org"));
        }
        // Blank names give a bare address.
        let mut m = outgoing("hi", None);
        m.to_name = Some("  ");
        let bytes = c.compose(&m, &mut Scratch::default()).unwrap();
        assert!(header_block(&bytes).contains("\r\nTo: zoe@example.org\r\n"));
    }

    #[test]
    fn long_subjects_fold() {
        let c = composer();
        let subject = "Thank you for everything you did this year, Zoë ".repeat(30);
        // mail-parser drops trailing whitespace of an unstructured header.
        let subject = subject.trim_end();
        let mut m = outgoing("hi", None);
        m.subject = subject;
        let bytes = c.compose(&m, &mut Scratch::default()).unwrap();
        assert_wire_format(&bytes);
        let msg = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(msg.subject(), Some(subject));
        // One unbreakable 1200-character word cannot be folded (lettre writes ASCII words
        // as they are): refused, not sent broken.
        let word = "x".repeat(1200);
        m.subject = &word;
        let e = c.compose(&m, &mut Scratch::default()).unwrap_err();
        assert!(matches!(e, MessageError::Build(_)), "{e}");
        assert!(e.to_string().contains("998"), "{e}");
    }

    #[test]
    fn list_unsubscribe_variants() {
        let head = |c: &Composer, url: Option<&str>| {
            let mut m = outgoing("hi", None);
            m.unsubscribe_url = url;
            let bytes = c.compose(&m, &mut Scratch::default()).unwrap();
            header_block(&bytes).to_owned()
        };
        let mut s = settings();
        s.unsubscribe_mailto = None;
        let no_mailto = Composer::new("g", &s).unwrap();
        let h = head(&no_mailto, Some("https://p.example/u?t=abc"));
        assert!(
            h.contains("\r\nList-Unsubscribe: <https://p.example/u?t=abc>\r\n"),
            "{h}"
        );
        assert!(h.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        // The mailto carries the campaign, address and token; a line too long folds after
        // the comma.
        let mut s = settings();
        s.unsubscribe_mailto = Some("mailto:u@p.example".into());
        let short = Composer::new("g", &s).unwrap();
        let h = head(&short, Some("https://p.ex/u"));
        assert!(
            h.contains(
                "\r\nList-Unsubscribe: <https://p.ex/u>,\r\n <mailto:u@p.example?subject=unsubscribe%20g%20zoe@example.org%20TOKEN>\r\n"
            ),
            "{h}"
        );
        // Without a URL: the mailto alone, and no one-click promise.
        let h = head(&composer(), None);
        assert!(
            h.contains(
                "\r\nList-Unsubscribe: <mailto:unsubscribe@park.example?subject=unsubscribe%20gala-2026%20zoe@example.org%20TOKEN>\r\n"
            ),
            "{h}"
        );
        assert!(!h.contains("List-Unsubscribe-Post"));
        // Neither: no header.
        assert!(!head(&no_mailto, None).contains("List-Unsubscribe"));
        // Non-ASCII mailto addresses are percent-encoded (RFC 6068).
        let mut s = settings();
        s.unsubscribe_mailto = Some("désabonner@park.example".into());
        let c = Composer::new("g", &s).unwrap();
        assert!(
            head(&c, None).contains("<mailto:d%C3%A9sabonner@park.example?subject=unsubscribe%20g%20zoe@example.org%20TOKEN>")
        );
    }

    #[test]
    fn bad_unsubscribe_urls() {
        let c = composer();
        let err = |url: &str| {
            let mut m = outgoing("hi", None);
            m.unsubscribe_url = Some(url);
            c.compose(&m, &mut Scratch::default()).unwrap_err()
        };
        for (url, says) in [
            ("http://park.example/u", "does not start with https://"),
            ("park.example/u", "does not start with https://"),
            ("mailto:u@park.example", "does not start with https://"),
            ("https:///u", "no host"),
            ("https://park.example/u?e=zoë@x.org", "'ë'"),
            ("https://park.example/u?e=a b", "' '"),
            ("https://park.example/u>, <https://evil.example/", "'>'"),
            ("https://park.example/u\"", "'\"'"),
        ] {
            let e = err(url);
            assert!(
                matches!(e, MessageError::UnsubscribeUrl { .. }),
                "{url}: {e:?}"
            );
            assert!(e.to_string().contains(says), "{url}: {e}");
            assert!(e.to_string().starts_with("the unsubscribe_url "), "{e}");
        }
        let long = format!("https://park.example/{}", "a".repeat(1000));
        assert!(err(&long).to_string().contains("characters long"));
        // Upper-case scheme is fine.
        let mut m = outgoing("hi", None);
        m.unsubscribe_url = Some("HTTPS://park.example/u");
        assert!(c.compose(&m, &mut Scratch::default()).is_ok());
    }

    #[test]
    fn settings_errors_name_the_key() {
        let err = |f: &dyn Fn(&mut MessageSettings)| {
            let mut s = settings();
            f(&mut s);
            Composer::new("g", &s).unwrap_err().to_string()
        };
        let e = err(&|s| s.from = "Friends <appeal@park>".into());
        assert!(
            e.starts_with("[message] from is not a usable address"),
            "{e}"
        );
        assert!(e.contains("dot"), "{e}");
        let e = err(&|s| s.from = "Friends appeal@park.example>".into());
        assert!(
            e.contains("[message] from") && e.contains("angle brackets"),
            "{e}"
        );
        let e = err(&|s| s.from = "Bob \"The\" Builder <b@park.example>".into());
        assert!(e.contains("stray"), "{e}");
        let e = err(&|s| s.from = "Friends <appeal@[192.0.2.1]>".into());
        assert!(e.contains("IP address"), "{e}");
        let e = err(&|s| s.from = "Friends <appeal@münchen.de>".into());
        assert!(e.contains("xn--"), "{e}");
        let e = err(&|s| s.from = "Friends\r\nBcc: x@y.org <appeal@park.example>".into());
        assert!(e.contains("line break"), "{e}");
        let e = err(&|s| s.reply_to = Some("not an address".into()));
        assert!(e.starts_with("[message] reply_to"), "{e}");
        let e = err(&|s| s.unsubscribe_mailto = Some("Unsub <u@park.example>".into()));
        assert!(e.starts_with("[message] unsubscribe_mailto"), "{e}");
        let e = err(&|s| s.unsubscribe_mailto = Some("u@park.example?subject=stop".into()));
        assert!(e.contains("added automatically"), "{e}");
        // Bare and quoted forms are accepted.
        let mut s = settings();
        s.from = "appeal@park.example".into();
        s.reply_to = Some("\"Park \\\"Friends\\\"\" <r@park.example>".into());
        let c = Composer::new("g", &s).unwrap();
        let bytes = c
            .compose(&outgoing("hi", None), &mut Scratch::default())
            .unwrap();
        let msg = MessageParser::default().parse(&bytes).unwrap();
        let from = msg.from().unwrap().first().unwrap();
        assert_eq!(
            (from.name(), from.address()),
            (None, Some("appeal@park.example"))
        );
        let reply = msg.reply_to().unwrap().first().unwrap();
        assert_eq!(reply.name(), Some("Park \"Friends\""));
    }

    #[test]
    fn international_and_odd_recipients() {
        // Addresses the email module accepts are written as they are (non-ASCII ones need a
        // relay with SMTPUTF8; that is the sender's concern, not this module's).
        let c = composer();
        for to in [
            "josé@example.es",
            "\"john smith\"@example.org",
            "bob@[192.0.2.1]",
            "bob@[IPv6:2001:db8::1]",
            "用户@例子.广告",
        ] {
            let mut m = outgoing("hi", None);
            m.to = fixtures::to(to);
            let bytes = c
                .compose(&m, &mut Scratch::default())
                .unwrap_or_else(|e| panic!("{to}: {e}"));
            assert_wire_format(&bytes);
            assert!(
                header_block(&bytes).contains(&format!("<{to}>\r\n")),
                "{to}"
            );
        }
        assert!(matches!(
            recipient("not an address"),
            Err(MessageError::BadAddress { field: "to", .. })
        ));
    }
}
