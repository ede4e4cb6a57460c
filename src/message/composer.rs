//! [`Composer`]: the run's sender checked once, then each donor's message put together.
//!
//! This owns which headers a message has and in what order, the Message-ID (and so what the
//! campaign id and the From domain must be), the MIME structure (a plain body, or
//! `multipart/alternative` with text first) and the last check of the bytes (CRLF only, no line
//! over 998 octets). It never decides which characters a header value may hold or how a
//! `[message]` address is read ([`super::headers`] does), and never encodes a body
//! ([`super::body`] does).

use std::fmt::Write as _;
use std::time::SystemTime;

use lettre::address::Envelope;
use lettre::message::header::{ContentType, MIME_VERSION_1_0};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::body::encode_body;
use super::headers::{
    EncodedSubject, FeedbackId, ListId, ListUnsubscribe, ListUnsubscribePost, check_header_value,
    list_unsubscribe_value, mailto_escape, mailto_uri, parse_mailbox,
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
    reply_to: Option<Mailbox>,
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
        Ok(Composer {
            campaign_id: campaign_id.to_owned(),
            sender,
            from,
            reply_to,
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
        let envelope = Envelope::new(Some(self.sender(m.key)), vec![to_addr.clone()])
            .map_err(|e| MessageError::Build(e.to_string()))?;
        let mut builder = lettre::Message::builder()
            .envelope(envelope)
            .from(self.from.clone());
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        builder = builder.to(Mailbox::new(to_name.map(str::to_owned), to_addr));
        // Text that a client could decode as an RFC 2047 encoded word (a donor whose name is
        // `=?utf-8?b?...?=`) is encoded as a whole, so the subject reads as written; lettre
        // would pass ASCII text through as it is.
        builder = if m.subject.contains("=?") {
            builder.header(EncodedSubject::new(m.subject))
        } else {
            builder.subject(m.subject)
        };
        builder = builder.date(date).message_id(Some(self.message_id(m.key)));
        if let Some(v) = m.list_id {
            builder = builder.header(ListId::new("list_id", v)?);
        }
        if let Some(v) = m.feedback_id {
            builder = builder.header(FeedbackId::new("feedback_id", v)?);
        }
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
    fn composer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Composer>();
        check::<MessageError>();
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
