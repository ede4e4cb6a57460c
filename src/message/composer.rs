//! [`Composer`]: the run's sender checked once, then each donor's message put together.
//!
//! This owns which headers a message has and in what order, the Message-ID (and so what the
//! campaign id and the From domain must be), the Date line of a run ([`MessageDate`]), the MIME
//! structure (a plain body, or `multipart/alternative` with text first), the last check of the
//! header lines (CRLF only, none over 998 octets), and what a worker keeps between messages
//! ([`Scratch`]). It never decides which characters a header value may hold, how a
//! `[message]` address is read or how a header line is encoded ([`super::headers`] does), and
//! never encodes a body ([`super::body`] does).
//!
//! The bytes are those lettre's message builder wrote (same headers, order, encodings,
//! folding and MIME layout; the tests hold them to it), written straight into one buffer: the
//! builder re-parsed every mailbox it had just written and copied each part several times,
//! more than half of a message's cost.

use std::fmt::Write as _;
use std::time::SystemTime;

use lettre::message::Mailbox;

use super::body::{LineCache, room, write_part};

use super::headers::{
    LIST_UNSUBSCRIBE_POST, ascii_value, check_header_value, list_unsubscribe_value, mailto_escape,
    mailto_uri, parse_mailbox, write_encoded_subject, write_mailbox, write_text, write_verbatim,
};
use super::{MAX_LINE, MessageError, Outgoing};
use crate::campaign::MessageSettings;
use crate::email::RecipientKey;

/// The parts of every message that are the same for the whole run, checked once.
///
/// `Send + Sync`: share one across sending threads.
#[derive(Debug, Clone)]
pub struct Composer {
    campaign_id: String,
    from: Mailbox,
    /// The envelope sender: `[message] return_path`, else From's address.
    sender: Sender,
    /// The From and Reply-To header lines, the same in every message.
    originator: Vec<u8>,
    /// `<mailto:...?subject=unsubscribe`: each message adds its campaign, address and token
    /// (see [`Composer::compose`]).
    mailto: Option<String>,
    /// The From domain, lowercased, for Message-IDs.
    id_domain: String,
}

/// The envelope sender (MAIL FROM) of every message.
#[derive(Debug, Clone)]
enum Sender {
    /// The same address for all.
    Fixed(lettre::Address),
    /// VERP: the donor's key (32 hex digits) between these two halves, so a bounce names its
    /// donor however the returning server mangles the report.
    Verp { before: String, after: String },
}

/// What `[message] return_path` writes for the donor's key.
const VERP_KEY: &str = "{{ key }}";

/// The Date header of a run's messages, as lettre writes it, formatted once: every message of
/// a run is dated when the run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDate(pub(super) String);

impl MessageDate {
    /// The Date header line for `at`.
    ///
    /// # Errors
    /// [`MessageError::Build`] for a time before 1970, which no clock in service shows.
    pub fn new(at: jiff::Timestamp) -> Result<MessageDate, MessageError> {
        let time = SystemTime::try_from(at)
            .ok()
            .filter(|d| *d >= SystemTime::UNIX_EPOCH)
            .ok_or_else(|| MessageError::Build(format!("the date {at} is before 1970")))?;
        let mut headers = lettre::message::header::Headers::new();
        headers.set(lettre::message::header::Date::new(time));
        Ok(MessageDate(headers.to_string()))
    }
}

/// What one worker keeps from one message to the next: the body lines it has encoded, and
/// the last message's buffer once it is given back, so a message is written without
/// allocating (a 10 KB buffer cost more than a short header's encoding).
#[derive(Default)]
pub struct Scratch {
    lines: LineCache,
    spare: Vec<u8>,
}

impl Scratch {
    /// Takes back a message's bytes, once sent or thrown away, for the next message.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        self.spare = bytes;
    }
}

/// Reads a donor's address as lettre writes it, into To and into the envelope.
///
/// # Errors
/// [`MessageError::BadAddress`] when lettre cannot represent it.
pub fn recipient(to: &str) -> Result<lettre::Address, MessageError> {
    to.trim_ascii().parse().map_err(
        |e: lettre::address::AddressError| MessageError::BadAddress {
            field: "to",
            value: to.to_owned(),
            reason: format!("{to:?}: {e} (lettre cannot write it into a header)"),
        },
    )
}

/// The MIME-Version line of every message.
const MIME_VERSION: &[u8] = b"MIME-Version: 1.0\r\n";
/// The message's Content-Type up to the boundary, which comes next, then [`MULTIPART_END`].
const MULTIPART: &[u8] = b"Content-Type: multipart/alternative;\r\n boundary=\"";
const MULTIPART_END: &[u8] = b"\"\r\n\r\n";
/// Characters in a boundary, as lettre makes them: random letters and digits, so that no
/// body line can be one by chance.
const BOUNDARY_LEN: usize = 40;
const TEXT_PLAIN: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n";
const TEXT_HTML: &[u8] = b"Content-Type: text/html; charset=utf-8\r\n";
/// Room for the header block, so that a message is written without growing its buffer.
const HEADER_ROOM: usize = 1536;

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
        let sender = match settings.return_path.as_deref() {
            None => Sender::Fixed(from.email.clone()),
            Some(raw) if raw.contains("{{") => verp(raw)?,
            Some(raw) => {
                let mailbox = parse_mailbox("[message] return_path", raw)?;
                if mailbox.name.is_some() {
                    return Err(MessageError::BadAddress {
                        field: "[message] return_path",
                        value: raw.to_owned(),
                        reason: "the envelope sender is a bare address; remove the display name"
                            .into(),
                    });
                }
                Sender::Fixed(mailbox.email)
            }
        };
        let mut originator = Vec::new();
        for (name, mailbox) in [("From", Some(&from)), ("Reply-To", reply_to.as_ref())] {
            if let Some(m) = mailbox {
                write_mailbox(name, m.name.as_deref(), m.email.as_ref(), &mut originator)?;
            }
        }
        Ok(Composer {
            campaign_id: campaign_id.to_owned(),
            sender,
            from,
            originator,
            mailto,
            id_domain,
        })
    }

    /// The domain of `[message] from`, lower case: the Message-ID's right side, and the
    /// domain DMARC aligns DKIM signatures with.
    pub fn from_domain(&self) -> &str {
        &self.id_domain
    }

    /// The envelope sender (MAIL FROM) of `key`'s message: `[message] return_path` (with the
    /// key in place of `{{ key }}`), else the address of `[message] from`.
    pub fn sender(&self, key: RecipientKey) -> lettre::Address {
        match &self.sender {
            Sender::Fixed(a) => a.clone(),
            Sender::Verp { before, after } => {
                let a = format!("{before}{:032x}{after}", key.as_u128());
                // `verp` checked that a key in place makes an address.
                a.parse().unwrap_or_else(|_| self.from.email.clone())
            }
        }
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

    /// Builds the full message bytes (CRLF line endings) ready for SMTP DATA, with the calling
    /// worker's `scratch`.
    ///
    /// # Errors
    /// [`MessageError::HeaderInjection`] for a control character in `to`, `to_name`, `subject`
    /// or `unsubscribe_url`; [`MessageError::UnsubscribeUrl`] for an unusable URL;
    /// [`MessageError::NotAscii`] for a List-Id or Feedback-ID that is not printable ASCII;
    /// [`MessageError::Build`] if a header line would exceed 998 octets.
    pub fn compose(
        &self,
        m: &Outgoing<'_>,
        scratch: &mut Scratch,
    ) -> Result<Vec<u8>, MessageError> {
        let to: &str = m.to.as_ref();
        let to_name = m.to_name.map(str::trim).filter(|n| !n.is_empty());
        if let Some(name) = to_name {
            check_header_value("to_name", name, false)?;
        }
        check_header_value("subject", m.subject, true)?;
        if let Some(url) = m.unsubscribe_url {
            check_header_value("unsubscribe_url", url, false)?;
        }
        check_header_value("to", to, false)?;

        // The mailto's subject carries the campaign, the address and its token, so a reply
        // can be checked (`campaign bounces`) without trusting its From.
        let mailto = self.mailto.as_ref().map(|prefix| {
            let mut uri = String::with_capacity(prefix.len() + 120);
            uri.push_str(prefix);
            uri.push_str("%20");
            mailto_escape(&self.campaign_id, &mut uri);
            uri.push_str("%20");
            mailto_escape(m.email, &mut uri);
            uri.push_str("%20");
            mailto_escape(m.unsubscribe_token, &mut uri);
            uri.push('>');
            uri
        });
        let list_unsubscribe = match (m.unsubscribe_url, mailto) {
            (Some(url), mailto) => Some(list_unsubscribe_value(url, mailto.as_deref())?),
            (None, Some(mailto)) => Some(mailto),
            (None, None) => None,
        };
        let list_id = m.list_id.map(|v| ascii_value("list_id", v)).transpose()?;
        let feedback_id = m
            .feedback_id
            .map(|v| ascii_value("feedback_id", v))
            .transpose()?;

        let mut out = std::mem::take(&mut scratch.spare);
        out.clear();
        out.reserve(HEADER_ROOM + room(m.text.len()) + m.html.map_or(0, |h| room(h.len())));
        let lines = &mut scratch.lines;
        out.extend_from_slice(&self.originator);
        write_mailbox("To", to_name, to, &mut out)?;
        // Text that a client could decode as an RFC 2047 encoded word (a donor whose name is
        // `=?utf-8?b?...?=`) is encoded as a whole, so the subject reads as written; lettre
        // would pass ASCII text through as it is.
        if m.subject.contains("=?") {
            write_encoded_subject(m.subject, &mut out);
        } else {
            write_text("Subject", m.subject, &mut out)?;
        }
        out.extend_from_slice(m.date.0.as_bytes());
        write_verbatim("Message-ID", &self.message_id(m.key), &mut out);
        if let Some(v) = list_id {
            write_verbatim("List-Id", v, &mut out);
        }
        if let Some(v) = feedback_id {
            write_verbatim("Feedback-ID", v, &mut out);
        }
        if let Some(value) = &list_unsubscribe {
            // Checked printable ASCII, with the folds put there by `list_unsubscribe_value`.
            write_verbatim("List-Unsubscribe", value, &mut out);
            // RFC 8058 one-click needs an https URI in List-Unsubscribe; a mailto alone is not
            // one-click, so the Post header would be a false promise.
            if m.unsubscribe_url.is_some() {
                out.extend_from_slice(LIST_UNSUBSCRIBE_POST.as_bytes());
            }
        }
        // Only header lines can be too long: donor data sets their length (an unbreakable
        // word in a subject, say), while every body line is encoded to at most 76 characters.
        check_lines(&out)?;
        out.extend_from_slice(MIME_VERSION);

        match m.html {
            // Not a MIME part of its own: lettre ended a single part with an extra CRLF that
            // became part of the body (a blank line the donor did not write). The message still
            // ends in CRLF because the body is written with a final line break.
            None => {
                out.extend_from_slice(TEXT_PLAIN);
                write_part(m.text, true, lines, &mut out);
            }
            Some(html) => {
                let mut boundary = [0u8; BOUNDARY_LEN];
                for b in &mut boundary {
                    *b = fastrand::alphanumeric() as u8;
                }
                out.extend_from_slice(MULTIPART);
                out.extend_from_slice(&boundary);
                out.extend_from_slice(MULTIPART_END);
                for (content_type, body) in [(TEXT_PLAIN, m.text), (TEXT_HTML, html)] {
                    out.extend_from_slice(b"--");
                    out.extend_from_slice(&boundary);
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(content_type);
                    write_part(body, false, lines, &mut out);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"--");
                out.extend_from_slice(&boundary);
                out.extend_from_slice(b"--\r\n");
            }
        }
        // Safety net (every body already ends so): SMTP DATA wants the message to end in CRLF.
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        Ok(out)
    }
}

/// Checks that every line ends in CRLF and fits RFC 5322's 998 octets. Header encoding does
/// not break a word that is longer than a line (an ASCII subject with no spaces, say), so the
/// header lines are checked.
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
/// A `[message] return_path` with `{{ key }}` in its local part: VERP.
fn verp(raw: &str) -> Result<Sender, MessageError> {
    let bad = |reason: &str| MessageError::BadAddress {
        field: "[message] return_path",
        value: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let t = raw.trim();
    let Some((before, after)) = t.split_once(VERP_KEY) else {
        return Err(bad(
            "the only variable it takes is `{{ key }}` (written so, with one space inside each brace pair), for example bounces+{{ key }}@charity.example",
        ));
    };
    if after.contains("{{") || !after.contains('@') || before.contains('@') {
        return Err(bad(
            "`{{ key }}` goes once, in the part before the @, for example bounces+{{ key }}@charity.example",
        ));
    }
    let sample = format!("{before}{:032x}{after}", 0u128);
    sample.parse::<lettre::Address>().map_err(|e| {
        bad(&format!(
            "with a key in place it reads {sample}, which is not an address: {e}"
        ))
    })?;
    Ok(Sender::Verp {
        before: before.to_owned(),
        after: after.to_owned(),
    })
}

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

#[cfg(test)]
mod tests {
    use mail_parser::{MessageParser, MimeHeaders as _};

    use super::*;
    use crate::message::fixtures::{
        assert_wire_format, composer, header_block, key, long_html, outgoing, settings,
    };

    #[test]
    fn a_return_path_with_the_key_is_verp() {
        let mut with = settings();
        with.return_path = Some("bounces+{{ key }}@park.example".into());
        let c = Composer::new("gala-2026", &with).unwrap();
        let k = key("zoe@example.org");
        assert_eq!(
            c.sender(k).to_string(),
            format!("bounces+{:032x}@park.example", k.as_u128())
        );
        assert_ne!(c.sender(k), c.sender(key("bob@example.org")));
        for bad in [
            "bounces+{{ id }}@park.example",
            "bounces@{{ key }}.park.example",
            "{{ key }}{{ key }}@park.example",
            "bounces+{{ key }}",
        ] {
            with.return_path = Some(bad.into());
            let e = Composer::new("gala-2026", &with).unwrap_err().to_string();
            assert!(e.contains("[message] return_path"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_envelope_sender_is_the_return_path_else_from() {
        let k = key("zoe@example.org");
        assert_eq!(composer().sender(k).to_string(), "appeal@Park.Example");
        let mut with = settings();
        with.return_path = Some(" bounces@park.example ".into());
        let c = Composer::new("gala-2026", &with).unwrap();
        assert_eq!(c.sender(k).to_string(), "bounces@park.example");
        with.return_path = Some("Bounces <bounces@park.example>".into());
        let e = Composer::new("gala-2026", &with).unwrap_err().to_string();
        assert!(
            e.contains("[message] return_path") && e.contains("bare address"),
            "{e}"
        );
        with.return_path = Some("not an address".into());
        let e = Composer::new("gala-2026", &with).unwrap_err().to_string();
        assert!(e.contains("[message] return_path"), "{e}");
    }

    #[test]
    fn bodies_round_trip_in_order() {
        let text = "Dear Zoë,\nthank you for £1,250.\n\nFriends of the Park — Łódź\n";
        let html = "<p>Dear Zoë,</p>\n<p>thank you for <b>£1,250</b> ✓</p>\n";
        let bytes = composer()
            .compose(&outgoing(text, Some(html)), &mut Scratch::default())
            .unwrap();
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
        let bytes = composer()
            .compose(&outgoing(text, None), &mut Scratch::default())
            .unwrap();
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
        let bytes = c
            .compose(&outgoing("hi", None), &mut Scratch::default())
            .unwrap();
        assert!(header_block(&bytes).contains(&format!("\r\nMessage-ID: {a}\r\n")));
        // Two composes differ only in the MIME boundary (none here): same bytes.
        assert_eq!(
            bytes,
            c.compose(&outgoing("hi", None), &mut Scratch::default())
                .unwrap()
        );
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
    fn composer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Composer>();
        check::<MessageError>();
    }

    #[test]
    fn bytes_are_those_lettres_builder_wrote() {
        // Names, subjects and settings that take every path of the header encoders: atoms,
        // quoted strings, RFC 2047 words, folding, text that looks like encoded words, the
        // optional headers, with and without HTML.
        let names = [
            None,
            Some("Zoë"),
            Some("Bob Smith"),
            Some("O'Brien, \"Bob\" \\ Jr."),
            Some("  "),
            Some("田中 花子 and a rather long family name that will not fit on one line"),
            Some("=?utf-8?q?x?="),
        ];
        let subjects = [
            "Thanks",
            "Thank you, Zoë — £1,250 raised ✓",
            "A subject long enough to be folded somewhere before the seventy-sixth column, surely",
            "Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë Zoë end",
            "=?utf-8?b?SGFja2Vk?= and more",
            "Tabs\tand  double  spaces ",
            "x",
        ];
        let mut with_everything = settings();
        with_everything.list_id = Some("x".into());
        let mut bare = settings();
        bare.reply_to = None;
        bare.unsubscribe_mailto = None;
        bare.from = "appeal@park.example".into();
        let html = long_html();
        for s in [settings(), with_everything, bare] {
            let c = Composer::new("gala-2026", &s).unwrap();
            for (i, name) in names.iter().enumerate() {
                for (j, subject) in subjects.iter().enumerate() {
                    let mut m = outgoing("Dear Zoë,\nthanks.\n", None);
                    m.to_name = *name;
                    m.subject = subject;
                    if (i + j) % 2 == 0 {
                        m.html = Some(&html);
                    }
                    if (i + j) % 3 == 0 {
                        m.unsubscribe_url = None;
                    }
                    if s.list_id.is_some() {
                        m.list_id = Some("Spring appeal <spring.park.example>");
                        m.feedback_id = Some("spring:major:park");
                    }
                    if j == 6 {
                        m.to = crate::message::fixtures::to("josé@example.es");
                    }
                    let ours = c.compose(&m, &mut Scratch::default()).unwrap();
                    let lettres = crate::message::reference::compose(&c, "gala-2026", &s, &m);
                    assert_eq!(
                        String::from_utf8(crate::message::reference::without_boundary(&ours))
                            .unwrap(),
                        String::from_utf8(crate::message::reference::without_boundary(&lettres))
                            .unwrap(),
                        "name {name:?}, subject {subject:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn boundaries_differ_and_never_come_from_the_body() {
        let html = long_html();
        let m = outgoing("hi\n", Some(&html));
        let boundary = |bytes: &[u8]| {
            let s = String::from_utf8(bytes.to_vec()).unwrap();
            let rest = s.split_once("boundary=\"").unwrap().1;
            rest[..rest.find('"').unwrap()].to_owned()
        };
        let (a, b) = (
            composer().compose(&m, &mut Scratch::default()).unwrap(),
            composer().compose(&m, &mut Scratch::default()).unwrap(),
        );
        let (ba, bb) = (boundary(&a), boundary(&b));
        assert_ne!(ba, bb);
        assert_eq!(ba.len(), BOUNDARY_LEN);
        assert!(ba.bytes().all(|c| c.is_ascii_alphanumeric()));
        // Two parts and the end: the delimiter lines and nothing else.
        let text = String::from_utf8(a).unwrap();
        assert_eq!(text.matches(&format!("\r\n--{ba}\r\n")).count(), 2);
        assert!(text.ends_with(&format!("\r\n--{ba}--\r\n")));
    }

    #[test]
    #[ignore = "timing; run in release"]
    fn compose_speed() {
        let html = long_html();
        let tpara = "Dear Zoë, thank you for your gift of £1,250 to the Friends of the Park.\n";
        let text: String = tpara.repeat(3_072 / tpara.len() + 1);
        let c = composer();
        let m = outgoing(&text, Some(&html));
        let mut total = 0usize;
        for _ in 0..200 {
            total += c.compose(&m, &mut Scratch::default()).unwrap().len();
        }
        let n = 20_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            total += std::hint::black_box(
                c.compose(std::hint::black_box(&m), &mut Scratch::default())
                    .unwrap(),
            )
            .len();
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
