//! Building each donor's RFC 5322 message, ready for SMTP `DATA`.
//!
//! This module owns the headers and MIME structure of every message: From / Reply-To / To,
//! Subject, Date, a deterministic Message-ID, the bulk-sender unsubscribe headers
//! (`List-Unsubscribe` and RFC 8058 `List-Unsubscribe-Post`), and the text-plus-HTML body
//! (`multipart/alternative`, plain text first). [`Composer`] checks the parts that are the same
//! for the whole run once; [`Composer::compose`] turns one donor's rendered texts
//! ([`Outgoing`]) into bytes.
//!
//! It never renders templates ([`crate::render`]), never computes unsubscribe tokens
//! ([`crate::unsubscribe`]), never validates donor addresses beyond refusing what would corrupt
//! a header ([`crate::email`] did that), never signs (DKIM is the relay's job) and never sends.
//!
//! Donor data reaches headers (the To display name, the subject, the unsubscribe URL), so any
//! control character there is refused with [`MessageError::HeaderInjection`], never stripped
//! or encoded away: a line break in a subject is a data problem the operator must see.
//!
//! Headers and MIME structure are lettre's (0.11, `builder` feature): RFC 2047 encoded-words
//! for non-ASCII names and subjects, header folding, the Date format, `multipart/alternative`.
//! Two things are done here instead:
//!
//! * the unsubscribe headers are written verbatim ([`ListUnsubscribe`],
//!   [`ListUnsubscribePost`]) from values checked here, so their exact bytes (which DKIM signs
//!   and receivers parse) never depend on a generic encoder;
//! * the body's transfer encoding (`encode_body`): same choice as lettre (7bit for short-lined
//!   ASCII, else quoted-printable, or base64 when more than a third of the bytes need escaping)
//!   and every line at most 76 characters, but several times faster (lettre's took ~80% of
//!   the time for a 13 KB message).
//!
//! Every message is checked on the way out: CRLF line endings only, no line over 998 octets.
//! Addresses with non-ASCII characters are written as they are (RFC 6532); sending them needs
//! a relay that offers SMTPUTF8.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::SystemTime;

use lettre::address::Envelope;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue, MIME_VERSION_1_0,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};

use crate::campaign::MessageSettings;
use crate::email::{Address, RecipientKey};

/// RFC 5322 §2.1.1: a line is at most 998 octets before its CRLF.
const MAX_LINE: usize = 998;

/// The longest unsubscribe URL accepted: `List-Unsubscribe: <URL>,` must fit one line.
const MAX_URL: usize = 900;

/// Why one donor's message (or the run's `[message]` settings) cannot be built.
///
/// `Display` is a reason fit for a failures file: it names the field and says what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// A control character (CR, LF, NUL, ...) in a value that goes into a header.
    #[error("the {} contains {} ({}): donor data cannot add headers", label(field), describe(*.ch), codepoint(*.ch))]
    HeaderInjection {
        /// Which value: `to`, `to_name`, `subject` or `unsubscribe_url`.
        field: &'static str,
        /// The first offending character.
        ch: char,
    },
    /// An address that cannot be used.
    #[error("{field} is not a usable address: {reason}")]
    BadAddress {
        /// The `[message]` key (e.g. `[message] from`) or `to`.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The one-click unsubscribe URL is unusable.
    #[error("the unsubscribe_url {reason}")]
    UnsubscribeUrl {
        /// What is wrong with it, starting with a verb ("does not start with https://").
        reason: String,
    },
    /// The campaign id cannot be part of a Message-ID.
    #[error("campaign id {value:?} cannot be used in a Message-ID: {reason}")]
    CampaignId {
        /// The id as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// lettre refused to build the message, or the result broke a line-length rule.
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// How a [`MessageError::HeaderInjection`] field reads in a sentence.
fn label(field: &str) -> &str {
    match field {
        "to" => "recipient address",
        "to_name" => "To display name (to_name)",
        "unsubscribe_url" => "unsubscribe_url",
        other => other,
    }
}

/// Words for a control character in an error message.
fn describe(ch: char) -> &'static str {
    match ch {
        '\r' | '\n' | '\u{85}' => "a line break",
        '\0' => "a NUL character",
        '\t' => "a tab",
        _ => "a control character",
    }
}

/// `U+000A` style code point.
fn codepoint(ch: char) -> String {
    format!("U+{:04X}", u32::from(ch))
}

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
fn check_header_value(field: &'static str, s: &str, allow_tab: bool) -> Result<(), MessageError> {
    match control_char(s, allow_tab) {
        Some(ch) => Err(MessageError::HeaderInjection { field, ch }),
        None => Ok(()),
    }
}

/// `List-Unsubscribe` (RFC 2369), written verbatim.
///
/// Its value is built here from a checked URL (printable ASCII, no spaces or angle brackets)
/// and a percent-encoded `mailto:`, so it needs no encoding. Writing it verbatim keeps lettre's
/// generic encoder away from it: that encoder turns anything it dislikes into an RFC 2047
/// encoded-word, which is not valid inside `<...>`. Folding is done here too: between the
/// two URIs, never inside one.
#[derive(Debug, Clone)]
pub struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        // Safe: the value holds only printable ASCII, and CRLF + space folds we put there.
        HeaderValue::dangerous_new_pre_encoded(Self::name(), self.0.clone(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), written verbatim.
#[derive(Debug, Clone)]
pub struct ListUnsubscribePost;

impl ListUnsubscribePost {
    /// The only value RFC 8058 defines.
    const VALUE: &'static str = "List-Unsubscribe=One-Click";
}

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        if s.trim() == Self::VALUE {
            Ok(ListUnsubscribePost)
        } else {
            Err(format!("List-Unsubscribe-Post must be {:?}", Self::VALUE).into())
        }
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::dangerous_new_pre_encoded(Self::name(), Self::VALUE.into(), Self::VALUE.into())
    }
}

/// One donor's message, as rendered.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The donor's address (already validated by [`crate::email::Address::parse`]).
    pub to: &'a str,
    /// The donor's display name for To; `None` or blank gives a bare address.
    pub to_name: Option<&'a str>,
    /// The subject (may be non-ASCII; a TAB is allowed, other control characters are not).
    pub subject: &'a str,
    /// The plain-text body (required: bulk mail without a text part scores as spam).
    pub text: &'a str,
    /// An HTML alternative, sent after the text part.
    pub html: Option<&'a str>,
    /// The donor's one-click unsubscribe URL (`https://`, printable ASCII, percent-encoded).
    pub unsubscribe_url: Option<&'a str>,
    /// The donor's recipient key, for the Message-ID.
    pub key: RecipientKey,
    /// The Date header.
    pub date: jiff::Timestamp,
}

/// The parts of every message that are the same for the whole run, checked once.
///
/// `Send + Sync`: share one across sending threads.
#[derive(Debug, Clone)]
pub struct Composer {
    campaign_id: String,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    /// `<mailto:...?subject=unsubscribe>`, ready for List-Unsubscribe.
    mailto: Option<String>,
    /// The From domain, lowercased, for Message-IDs.
    id_domain: String,
}

impl Composer {
    /// Parses From / Reply-To (`Display Name <addr>` or bare, display name may be non-ASCII)
    /// and the unsubscribe mailto.
    ///
    /// # Errors
    /// A [`MessageError`] naming the `[message]` key and saying what is wrong, or
    /// [`MessageError::CampaignId`] if the id cannot form a Message-ID.
    pub fn new(campaign_id: &str, settings: &MessageSettings) -> Result<Composer, MessageError> {
        check_campaign_id(campaign_id)?;
        let from = parse_mailbox("[message] from", &settings.from)?;
        let domain = from.email.domain();
        // The Message-ID's right side and DMARC alignment both need a plain DNS name.
        if domain.starts_with('[') {
            return Err(MessageError::BadAddress {
                field: "[message] from",
                value: settings.from.clone(),
                reason: format!(
                    "the domain {domain} is an IP address; bulk mail must come from a domain name that SPF, DKIM and DMARC can cover"
                ),
            });
        }
        if !domain.is_ascii() {
            return Err(MessageError::BadAddress {
                field: "[message] from",
                value: settings.from.clone(),
                reason: format!(
                    "the domain {domain} is not ASCII; write its xn-- (Punycode) form, as in DNS"
                ),
            });
        }
        let id_domain = domain.to_ascii_lowercase();
        let reply_to = settings
            .reply_to
            .as_deref()
            .map(|r| parse_mailbox("[message] reply_to", r))
            .transpose()?;
        let mailto = settings
            .unsubscribe_mailto
            .as_deref()
            .map(mailto_uri)
            .transpose()?;
        Ok(Composer {
            campaign_id: campaign_id.to_owned(),
            from,
            reply_to,
            mailto,
            id_domain,
        })
    }

    /// The Message-ID for a donor: deterministic, unique per (campaign, recipient):
    /// `<{campaign_id}.{key hex}@{from domain}>`.
    ///
    /// Deterministic so a retried send reuses the same id (receivers deduplicate on it), and
    /// different for every donor and campaign (Gmail throttles reused ids).
    #[must_use]
    pub fn message_id(&self, key: RecipientKey) -> String {
        let mut id = String::with_capacity(self.campaign_id.len() + self.id_domain.len() + 36);
        id.push('<');
        id.push_str(&self.campaign_id);
        id.push('.');
        // Writing to a String cannot fail.
        let _ = write!(id, "{:032x}", key.as_u128());
        id.push('@');
        id.push_str(&self.id_domain);
        id.push('>');
        id
    }

    /// Builds the full message bytes (CRLF line endings) ready for SMTP DATA.
    ///
    /// # Errors
    /// [`MessageError::HeaderInjection`] for a control character in `to`, `to_name`, `subject`
    /// or `unsubscribe_url`; [`MessageError::UnsubscribeUrl`] for an unusable URL;
    /// [`MessageError::BadAddress`] if lettre cannot represent `to`; [`MessageError::Build`]
    /// if lettre refuses the message or a header line would exceed 998 octets.
    pub fn compose(&self, m: &Outgoing<'_>) -> Result<Vec<u8>, MessageError> {
        let to_name = m.to_name.map(str::trim).filter(|n| !n.is_empty());
        if let Some(name) = to_name {
            check_header_value("to_name", name, false)?;
        }
        check_header_value("subject", m.subject, true)?;
        if let Some(url) = m.unsubscribe_url {
            check_header_value("unsubscribe_url", url, false)?;
        }
        check_header_value("to", m.to, false)?;

        let list_unsubscribe = match (m.unsubscribe_url, &self.mailto) {
            (Some(url), mailto) => Some(list_unsubscribe_value(url, mailto.as_deref())?),
            (None, Some(mailto)) => Some(mailto.clone()),
            (None, None) => None,
        };

        let to_addr: lettre::Address =
            m.to.trim_ascii()
                .parse()
                .map_err(
                    |e: lettre::address::AddressError| MessageError::BadAddress {
                        field: "to",
                        value: m.to.to_owned(),
                        reason: format!("{:?}: {e} (lettre cannot write it into a header)", m.to),
                    },
                )?;
        let date = SystemTime::try_from(m.date)
            .ok()
            .filter(|d| *d >= SystemTime::UNIX_EPOCH)
            .ok_or_else(|| MessageError::Build(format!("the date {} is before 1970", m.date)))?;

        // The envelope is given rather than derived: lettre would otherwise re-parse the From
        // and To headers it has just written.
        let envelope = Envelope::new(Some(self.from.email.clone()), vec![to_addr.clone()])
            .map_err(|e| MessageError::Build(e.to_string()))?;
        let mut builder = lettre::Message::builder()
            .envelope(envelope)
            .from(self.from.clone());
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        builder = builder
            .to(Mailbox::new(to_name.map(str::to_owned), to_addr))
            .subject(m.subject)
            .date(date)
            .message_id(Some(self.message_id(m.key)));
        if let Some(value) = list_unsubscribe {
            builder = builder.header(ListUnsubscribe(value));
            // RFC 8058 one-click needs an https URI in List-Unsubscribe; a mailto alone is not
            // one-click, so the Post header would be a false promise.
            if m.unsubscribe_url.is_some() {
                builder = builder.header(ListUnsubscribePost);
            }
        }

        let message = match m.html {
            // Not `singlepart`: lettre ends a single part with an extra CRLF that becomes part
            // of the body (a blank line the donor did not write). A plain body keeps the text
            // exact; the message still ends in CRLF because `encode_body` ensures a final line
            // break, as SMTP DATA wants.
            None => builder
                .header(MIME_VERSION_1_0)
                .header(ContentType::TEXT_PLAIN)
                .body(encode_body(m.text, true)),
            Some(html) => builder.multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(encode_body(m.text, false)),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(encode_body(html, false)),
                    ),
            ),
        }
        .map_err(|e| MessageError::Build(e.to_string()))?;
        let mut bytes = message.formatted();
        // Safety net (every body already ends so): SMTP DATA wants the message to end in CRLF.
        if !bytes.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        check_lines(&bytes)?;
        Ok(bytes)
    }
}

/// The longest body line sent unencoded (7bit), as lettre does: RFC 5322 asks for at most 78.
const MAX_7BIT_LINE: usize = 76;

/// Encodes a body for the wire, choosing like lettre does: 7bit for short-lined printable
/// ASCII, quoted-printable for mostly-ASCII text, base64 when more than a third of the bytes
/// would need escaping (CJK text, say). Line breaks (CRLF, LF or a lone CR) become CRLF; with
/// `final_newline` the text ends with one.
///
/// Why not lettre's `Body::new`: it converts line endings by inserting one CR at a time
/// (a memmove of the rest of the body per line), scans the text twice more, and its
/// quoted-printable encoder goes byte by byte through a `String`; together that was ~45 of
/// the ~55 µs a 13 KB message cost. Encoding choice and output format are the same.
fn encode_body(s: &str, final_newline: bool) -> Body {
    let bytes = s.as_bytes();
    let add_newline = final_newline && !matches!(bytes.last(), Some(b'\n' | b'\r'));
    let escaped = count_escaped(bytes);
    if escaped == 0 && max_line(bytes) <= MAX_7BIT_LINE {
        let mut out = crlf(bytes).into_owned();
        if add_newline {
            out.extend_from_slice(b"\r\n");
        }
        return Body::dangerous_pre_encoded(out, ContentTransferEncoding::SevenBit);
    }
    if escaped > bytes.len() / 3 {
        let mut text = crlf(bytes).into_owned();
        if add_newline {
            text.extend_from_slice(b"\r\n");
        }
        let mut out = base64_lines(&text);
        // A lone text part is the whole message body: end it with a line break.
        if final_newline {
            out.extend_from_slice(b"\r\n");
        }
        return Body::dangerous_pre_encoded(out, ContentTransferEncoding::Base64);
    }
    let mut out = Vec::with_capacity(bytes.len() + escaped * 2 + bytes.len() / 38 + 8);
    quoted_printable(bytes, &mut out);
    if add_newline {
        out.extend_from_slice(b"\r\n");
    }
    Body::dangerous_pre_encoded(out, ContentTransferEncoding::QuotedPrintable)
}

/// How many bytes quoted-printable must escape wherever they are: non-ASCII bytes, DEL and
/// control characters other than TAB, CR and LF.
fn count_escaped(bytes: &[u8]) -> usize {
    // Branch-free with byte-wide counters (at most 255 per chunk) so the compiler vectorises
    // it: this reads every body byte, and a `usize` per byte ran at under 2 bytes per ns.
    bytes
        .chunks(255)
        .map(|chunk| {
            let n: u8 = chunk
                .iter()
                .map(|&b| {
                    let ctrl = (b < 0x20) & (b != b'\t') & (b != b'\r') & (b != b'\n');
                    u8::from((b >= 0x7f) | ctrl)
                })
                .fold(0u8, u8::wrapping_add);
            usize::from(n)
        })
        .sum()
}

/// Length of the longest line, not counting line-break characters.
fn max_line(bytes: &[u8]) -> usize {
    let mut max = 0;
    let mut start = 0;
    for i in memchr::memchr2_iter(b'\n', b'\r', bytes) {
        max = max.max(i - start);
        start = i + 1;
    }
    max.max(bytes.len() - start)
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

/// Base64 in lines of 76 characters separated by CRLF (RFC 2045 §6.8), no final CRLF.
fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    const IN_PER_LINE: usize = 57; // 57 bytes -> 76 characters
    let lines = data.len().div_ceil(IN_PER_LINE);
    let mut out = vec![0u8; lines * 78];
    let mut len = 0;
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
    out
}

/// Quoted-printable (RFC 2045 §6.7) of UTF-8 text: every line break becomes a hard CRLF, lines
/// are at most 76 characters (soft breaks are `=` CRLF), and `=`, non-ASCII, control
/// characters and whitespace before a line end are escaped.
fn quoted_printable(input: &[u8], out: &mut Vec<u8>) {
    /// Content characters per line; the 76th is kept for a soft break's `=`.
    const WIDTH: usize = 75;
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    /// Bytes that stand for themselves: printable ASCII but `=`, plus space and TAB.
    const LITERAL: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = matches!(b as u8, b'!'..=b'<' | b'>'..=b'~' | b' ' | b'\t');
            b += 1;
        }
        t
    };
    let literal = |b: u8| LITERAL[usize::from(b)];
    let n = input.len();
    let mut col = 0;
    let mut i = 0;
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
        // Copy the run of characters that stand for themselves, up to the end of the line.
        let limit = n.min(i + (WIDTH - col));
        let mut j = i;
        while j < limit && literal(input[j]) {
            j += 1;
        }
        // Whitespace right before a line end must be escaped (transports strip it); escaping
        // the last one is enough, as `=20` then follows the others.
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
        out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        col += 3;
        i += 1;
    }
}

/// Checks that every line ends in CRLF and fits RFC 5322's 998 octets. lettre chooses
/// quoted-printable or base64 for long body lines, but does not break a header word that is
/// longer than a line (an ASCII subject with no spaces, say), so the result is checked.
fn check_lines(bytes: &[u8]) -> Result<(), MessageError> {
    let mut start = 0;
    for (n, end) in memchr::memchr_iter(b'\n', bytes).enumerate() {
        if end == 0 || bytes[end - 1] != b'\r' {
            return Err(MessageError::Build(format!(
                "line {} ends in a bare LF",
                n + 1
            )));
        }
        if end - 1 - start > MAX_LINE {
            return Err(MessageError::Build(format!(
                "line {} would be {} octets long; the limit is {MAX_LINE} (is there a very long word in the subject or name?)",
                n + 1,
                end - 1 - start
            )));
        }
        start = end + 1;
    }
    if bytes.len() - start > MAX_LINE {
        return Err(MessageError::Build(format!(
            "the last line would be {} octets long; the limit is {MAX_LINE}",
            bytes.len() - start
        )));
    }
    Ok(())
}

/// The campaign id must make `<id>.<hex>` a dot-atom (RFC 5322 §3.6.4): atext and single dots.
fn check_campaign_id(id: &str) -> Result<(), MessageError> {
    let bad = |reason: &str| MessageError::CampaignId {
        value: id.to_owned(),
        reason: reason.to_owned(),
    };
    if id.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some(c) = id
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)))
    {
        return Err(bad(&format!("{c:?} is not allowed")));
    }
    if id.starts_with('.') || id.ends_with('.') || id.contains("..") {
        return Err(bad("it starts or ends with '.' or has two dots in a row"));
    }
    Ok(())
}

/// Parses `Display Name <addr>`, `"Quoted, Name" <addr>` or a bare address from `[message]`.
fn parse_mailbox(field: &'static str, raw: &str) -> Result<Mailbox, MessageError> {
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
fn mailto_uri(raw: &str) -> Result<String, MessageError> {
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
    // RFC 6068: outside unreserved characters and `some-delims`, bytes are percent-encoded
    // (this covers UTF-8 and the `%`, `?`, `#`, `&` an address may legally contain).
    for &b in addr.as_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$'()*+,;:@".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?subject=unsubscribe>");
    Ok(uri)
}

/// Checks the one-click URL and builds the List-Unsubscribe value.
fn list_unsubscribe_value(url: &str, mailto: Option<&str>) -> Result<String, MessageError> {
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
    if let Some(c) = url
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)))
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
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders as _};

    const NAME: &str = "Zoë Łukasz 田中";
    const SUBJECT: &str = "Thank you, Zoë — £1,250 raised ✓";
    const URL: &str = "https://park.example/u?e=zo%C3%AB%40example.org&c=gala-2026&t=PMY8Tyxt05wDG49hie95-nBDx8T0ag55W7WkVczFQVM";

    fn settings() -> MessageSettings {
        MessageSettings {
            from: "Friends of the Park — Łódź <appeal@Park.Example>".into(),
            reply_to: Some("\"Supporters, Park\" <supporters@park.example>".into()),
            to_name: None,
            unsubscribe_url: None,
            unsubscribe_mailto: Some("unsubscribe@park.example".into()),
            currency: None,
        }
    }

    fn composer() -> Composer {
        Composer::new("gala-2026", &settings()).unwrap()
    }

    fn key(s: &str) -> RecipientKey {
        Address::parse(s).unwrap().key()
    }

    fn date() -> jiff::Timestamp {
        "2026-11-29T14:05:09Z".parse().unwrap()
    }

    fn outgoing<'a>(text: &'a str, html: Option<&'a str>) -> Outgoing<'a> {
        Outgoing {
            to: "zoe@example.org",
            to_name: Some(NAME),
            subject: SUBJECT,
            text,
            html,
            unsubscribe_url: Some(URL),
            key: key("zoe@example.org"),
            date: date(),
        }
    }

    /// Every line ends in CRLF and is at most 998 octets.
    fn assert_wire_format(bytes: &[u8]) {
        assert!(bytes.ends_with(b"\r\n") || !bytes.contains(&b'\n'));
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let is_last = i == bytes.split(|&b| b == b'\n').count() - 1;
            if !is_last {
                assert_eq!(line.last(), Some(&b'\r'), "line {} lacks CR", i + 1);
            }
            assert!(
                line.len() <= MAX_LINE + 1,
                "line {} is {} octets",
                i + 1,
                line.len()
            );
            assert!(!line[..line.len().saturating_sub(1)].contains(&b'\r'));
        }
        assert!(!bytes.contains(&0));
    }

    fn header_block(bytes: &[u8]) -> &str {
        let s = std::str::from_utf8(bytes).unwrap();
        &s[..s.find("\r\n\r\n").unwrap() + 2]
    }

    #[test]
    fn headers_round_trip() {
        let text = "Dear Zoë,\nthank you for £1,250.\n\nFriends of the Park\n";
        let html = "<p>Dear Zoë,</p>\n<p>thank you for <b>£1,250</b> ✓</p>\n";
        let c = composer();
        let bytes = c.compose(&outgoing(text, Some(html))).unwrap();
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
            "List-Unsubscribe: <{URL}>,\r\n <mailto:unsubscribe@park.example?subject=unsubscribe>\r\n"
        );
        assert!(head.contains(&expected_lu), "{head}");
        assert!(head.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert_eq!(
            msg.header_raw("List-Unsubscribe").unwrap().trim(),
            format!("<{URL}>,\r\n <mailto:unsubscribe@park.example?subject=unsubscribe>")
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
    fn bodies_round_trip_in_order() {
        let text = "Dear Zoë,\nthank you for £1,250.\n\nFriends of the Park — Łódź\n";
        let html = "<p>Dear Zoë,</p>\n<p>thank you for <b>£1,250</b> ✓</p>\n";
        let bytes = composer().compose(&outgoing(text, Some(html))).unwrap();
        let msg = MessageParser::default().parse(&bytes).unwrap();
        let root = msg.root_part();
        assert_eq!(root.content_type().unwrap().ctype(), "multipart");
        assert_eq!(root.content_type().unwrap().subtype(), Some("alternative"));
        let parts = root.sub_parts().unwrap();
        assert_eq!(parts.len(), 2);
        let first = msg.part(parts[0]).unwrap();
        let last = msg.part(parts[1]).unwrap();
        assert_eq!(first.content_type().unwrap().subtype(), Some("plain"));
        assert_eq!(last.content_type().unwrap().subtype(), Some("html"));
        for p in [first, last] {
            assert_eq!(
                p.content_type().unwrap().attribute("charset"),
                Some("utf-8")
            );
        }
        // Line breaks go on the wire as CRLF, and come back so.
        assert_eq!(
            first.text_contents(),
            Some(text.replace('\n', "\r\n").as_str())
        );
        assert_eq!(
            last.text_contents(),
            Some(html.replace('\n', "\r\n").as_str())
        );
        assert_eq!(msg.body_text(0).unwrap(), text.replace('\n', "\r\n"));
        assert_eq!(msg.body_html(0).unwrap(), html.replace('\n', "\r\n"));
        // The raw order: text/plain appears before text/html.
        let s = String::from_utf8(bytes).unwrap();
        assert!(s.find("text/plain").unwrap() < s.find("text/html").unwrap());
    }

    #[test]
    fn text_only_is_a_single_part() {
        let text = "Dear Zoë,\r\nthank you.\r\n";
        let bytes = composer().compose(&outgoing(text, None)).unwrap();
        assert_wire_format(&bytes);
        let msg = MessageParser::default().parse(&bytes).unwrap();
        let ct = msg.root_part().content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        assert_eq!(msg.body_text(0).unwrap(), text);
        assert_eq!(
            msg.html_body_count(),
            1,
            "mail-parser synthesises html from text"
        );
        assert!(!String::from_utf8_lossy(&bytes).contains("multipart"));
    }

    #[test]
    fn transfer_encodings_suit_the_content() {
        let c = composer();
        let enc = |text: &str| {
            let bytes = c.compose(&outgoing(text, None)).unwrap();
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
        let bytes = c.compose(&outgoing("a\rb\r\nc\n", None)).unwrap();
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
                .compose(&outgoing(&long_text, Some(html)))
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
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..250 {
            let len = (next() % 300) as usize + if round % 10 == 0 { 2000 } else { 0 };
            let mut text = String::new();
            while text.len() < len {
                let p = pieces[(next() % pieces.len() as u64) as usize];
                // Long runs too, so 7bit-eligible ASCII and over-long lines both occur.
                let times = if next() % 8 == 0 {
                    (next() % 100) as usize
                } else {
                    1
                };
                text.push_str(&p.repeat(times));
            }
            for html in [None, Some(text.as_str())] {
                let m = outgoing(&text, html);
                let bytes = c.compose(&m).unwrap();
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
        use ContentTransferEncoding::*;
        let enc = |s: &str| {
            let b = encode_body(s, false);
            (b.encoding(), String::from_utf8(b.into_vec()).unwrap())
        };
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
        assert_eq!(encode_body("hi", true).into_vec(), b"hi\r\n");
        assert_eq!(encode_body("hi\n", true).into_vec(), b"hi\r\n");
        assert_eq!(encode_body("田中", true).into_vec(), b"55Sw5LitDQo=\r\n");
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
    fn header_injection_is_refused() {
        let c = composer();
        let inj = |f: &dyn Fn(&mut Outgoing<'_>)| {
            let mut m = outgoing("hi", None);
            f(&mut m);
            c.compose(&m).unwrap_err()
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
        assert_eq!(
            inj(&|m| m.to = "bob@x.org\nBcc: evil@x.org"),
            MessageError::HeaderInjection {
                field: "to",
                ch: '\n'
            }
        );
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
        let bytes = c.compose(&m).unwrap();
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
            let bytes = c.compose(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_wire_format(&bytes);
            let msg = MessageParser::default().parse(&bytes).unwrap();
            let to = msg.to().unwrap().first().unwrap();
            assert_eq!(to.name(), Some(name.trim()), "{}", header_block(&bytes));
            assert_eq!(to.address(), Some("zoe@example.org"));
        }
        // Blank names give a bare address.
        let mut m = outgoing("hi", None);
        m.to_name = Some("  ");
        let bytes = c.compose(&m).unwrap();
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
        let bytes = c.compose(&m).unwrap();
        assert_wire_format(&bytes);
        let msg = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(msg.subject(), Some(subject));
        // One unbreakable 1200-character word cannot be folded (lettre writes ASCII words
        // as they are): refused, not sent broken.
        let word = "x".repeat(1200);
        m.subject = &word;
        let e = c.compose(&m).unwrap_err();
        assert!(matches!(e, MessageError::Build(_)), "{e}");
        assert!(e.to_string().contains("998"), "{e}");
    }

    #[test]
    fn message_ids_are_deterministic_and_distinct() {
        let c = composer();
        let a = c.message_id(key("zoe@example.org"));
        assert_eq!(a, c.message_id(key("Zoe@Example.org")));
        assert_eq!(
            a,
            format!(
                "<gala-2026.{}@park.example>",
                key("zoe@example.org").to_hex()
            )
        );
        assert_ne!(a, c.message_id(key("bob@example.org")));
        let other = Composer::new("gala-2027", &settings()).unwrap();
        assert_ne!(a, other.message_id(key("zoe@example.org")));
        let bytes = c.compose(&outgoing("hi", None)).unwrap();
        assert!(header_block(&bytes).contains(&format!("\r\nMessage-ID: {a}\r\n")));
        // Two composes differ only in the MIME boundary (none here): same bytes.
        assert_eq!(bytes, c.compose(&outgoing("hi", None)).unwrap());
        for bad in ["", "a..b", "a.", ".a", "a b", "gala\n"] {
            assert!(
                matches!(
                    Composer::new(bad, &settings()),
                    Err(MessageError::CampaignId { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn list_unsubscribe_variants() {
        let head = |c: &Composer, url: Option<&str>| {
            let mut m = outgoing("hi", None);
            m.unsubscribe_url = url;
            let bytes = c.compose(&m).unwrap();
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
        // Short enough to stay on one line.
        let mut s = settings();
        s.unsubscribe_mailto = Some("mailto:u@p.example".into());
        let short = Composer::new("g", &s).unwrap();
        let h = head(&short, Some("https://p.ex/u"));
        assert!(
            h.contains(
                "\r\nList-Unsubscribe: <https://p.ex/u>, <mailto:u@p.example?subject=unsubscribe>\r\n"
            ),
            "{h}"
        );
        // Without a URL: the mailto alone, and no one-click promise.
        let h = head(&composer(), None);
        assert!(
            h.contains(
                "\r\nList-Unsubscribe: <mailto:unsubscribe@park.example?subject=unsubscribe>\r\n"
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
            head(&c, None).contains("<mailto:d%C3%A9sabonner@park.example?subject=unsubscribe>")
        );
    }

    #[test]
    fn bad_unsubscribe_urls() {
        let c = composer();
        let err = |url: &str| {
            let mut m = outgoing("hi", None);
            m.unsubscribe_url = Some(url);
            c.compose(&m).unwrap_err()
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
        assert!(c.compose(&m).is_ok());
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
        let bytes = c.compose(&outgoing("hi", None)).unwrap();
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
            m.to = to;
            let bytes = c.compose(&m).unwrap_or_else(|e| panic!("{to}: {e}"));
            assert_wire_format(&bytes);
            assert!(
                header_block(&bytes).contains(&format!("<{to}>\r\n")),
                "{to}"
            );
        }
        let mut m = outgoing("hi", None);
        m.to = "not an address";
        assert!(matches!(
            c.compose(&m),
            Err(MessageError::BadAddress { field: "to", .. })
        ));
    }

    #[test]
    fn composer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Composer>();
        check::<MessageError>();
    }

    /// `cargo test --release --lib -- --ignored compose_speed --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn message_encode_speed() {
        let para = "<p>Dear Zoë, thank you for your gift of £1,250 to the Friends of the Park. \
                    Your support planted 40 trees this spring.</p>\n";
        let html: String = para.repeat(10_240 / para.len() + 1);
        let n = 20_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(encode_body(std::hint::black_box(&html), false));
        }
        let per = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(count_escaped(std::hint::black_box(html.as_bytes())));
        }
        let per_count = start.elapsed() / n;
        println!(
            "encode_speed: {:.1} µs per 10 KB HTML body, of which counting {:.2} µs",
            per.as_secs_f64() * 1e6,
            per_count.as_secs_f64() * 1e6
        );
    }

    #[test]
    #[ignore = "timing; run in release"]
    fn compose_speed() {
        let para = "<p>Dear Zoë, thank you for your gift of £1,250 to the Friends of the Park. \
                    Your support planted 40 trees this spring.</p>\n";
        let html: String = para.repeat(10_240 / para.len() + 1);
        let tpara = "Dear Zoë, thank you for your gift of £1,250 to the Friends of the Park.\n";
        let text: String = tpara.repeat(3_072 / tpara.len() + 1);
        let c = composer();
        let m = outgoing(&text, Some(&html));
        let mut total = 0usize;
        for _ in 0..200 {
            total += c.compose(&m).unwrap().len();
        }
        let n = 20_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            total += std::hint::black_box(c.compose(std::hint::black_box(&m)).unwrap()).len();
        }
        let per = start.elapsed() / n;
        println!(
            "compose_speed: {:.1} µs per message ({} B HTML + {} B text -> {} B), {:.0} msg/s on one core",
            per.as_secs_f64() * 1e6,
            html.len(),
            text.len(),
            total / (n as usize + 200),
            1.0 / per.as_secs_f64()
        );
    }
}
