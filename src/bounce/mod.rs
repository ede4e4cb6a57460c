//! What comes back after sending: bounces, complaints and unsubscribe replies, read from the
//! messages themselves.
//!
//! The pipeline of `campaign bounces`: [`source`] splits mbox files, Maildir folders and
//! standard input into messages, each with where it came from; [`classify`] reads one
//! message (RFC 3464 delivery status notifications, RFC 5965 feedback reports, replies to the
//! `mailto:` unsubscribe, and best effort the plain-text notices of common servers, see
//! [`text`]) into a [`Reading`]; [`apply`] appends what must be suppressed to the list and,
//! given a run, records it in the ledger's feedback files.
//!
//! It never suppresses on a temporary failure, an auto-reply or a message it could not
//! understand; those are counted and listed, never silently dropped. It never modifies a
//! source, and never sends mail.

pub mod apply;
mod fields;
pub mod source;
mod text;

#[cfg(test)]
mod tests;

use std::sync::LazyLock;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use regex::Regex;

use crate::email::{Address, RecipientKey, normalise};
use crate::unsubscribe::UnsubscribeSecret;

/// What one message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A delivery report: its recipients say permanent or temporary.
    Bounce,
    /// A feedback report (ARF).
    Complaint,
    /// A reply to the `mailto:` unsubscribe whose token verified.
    Unsubscribe,
    /// An out-of-office or vacation reply: nothing to do.
    AutoReply,
    /// Not understood: listed for a person to read.
    Unrecognised,
}

/// What a report says about one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Gave up for good (5.x.x): suppress.
    Permanent,
    /// Delayed or still being tried (4.x.x): never suppresses.
    Temporary,
    /// Reported as spam or fraud: suppress.
    Complaint,
    /// Asked to be unsubscribed: suppress.
    Unsubscribe,
}

impl Outcome {
    /// Whether the address goes on the suppression list.
    pub fn suppresses(self) -> bool {
        !matches!(self, Outcome::Temporary)
    }
}

/// One recipient named by a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipient {
    /// The address, normalised; `None` when the report hides it (ARF reports often redact
    /// it): a run can still find the donor through the original Message-ID.
    pub address: Option<String>,
    /// What the report says.
    pub outcome: Outcome,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The server's words, shortened.
    pub diagnostic: String,
}

/// One message, read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reading {
    /// What it is.
    pub kind: Kind,
    /// How it was recognised (`RFC 3464 delivery status`, `qmail`, ...), or why it was not.
    pub how: String,
    /// The recipients it names.
    pub recipients: Vec<Recipient>,
    /// Campaign Message-IDs (`<campaign.key@domain>`) found in it: the original message.
    #[serde(skip)]
    pub originals: Vec<(String, RecipientKey)>,
    /// A donor key in the address the report was sent to (a VERP return path).
    #[serde(skip)]
    pub verp: Option<RecipientKey>,
}

/// What reading a message may use.
#[derive(Default)]
pub struct Context<'a> {
    /// To check the token of an unsubscribe reply; without it such replies are listed as
    /// not understood.
    pub secret: Option<&'a UnsubscribeSecret>,
}

static ORIGINAL_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)\.([0-9a-f]{32})@[A-Za-z0-9.-]+>")
        .expect("a valid pattern")
});
static VERP_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[+=._-]([0-9a-f]{32})@").expect("a valid pattern"));
static UNSUBSCRIBE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bunsubscribe\s+(\S+)\s+(\S+@\S+)\s+([A-Za-z0-9_-]{43})\b")
        .expect("a valid pattern")
});

/// The headers a VERP address arrives in (set by the receiving MTA or copied from the
/// envelope).
const ENVELOPE_TO: &[&str] = &[
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "To",
];

/// Reads one message.
pub fn classify(bytes: &[u8], cx: &Context<'_>) -> Reading {
    let Some(msg) = MessageParser::default().parse(bytes) else {
        return unrecognised("not a mail message (no header lines)");
    };
    if msg.headers().is_empty() {
        return unrecognised("not a mail message (no header lines)");
    }
    let mut reading = read_kind(&msg, cx);
    let own_id = msg.message_id().map(|id| format!("<{id}>"));
    let raw = String::from_utf8_lossy(bytes);
    for c in ORIGINAL_ID.captures_iter(&raw) {
        if own_id.as_deref() == Some(&c[0]) {
            continue;
        }
        if let Some(key) = RecipientKey::from_hex(&c[2]) {
            let id = (c[1].to_owned(), key);
            if !reading.originals.contains(&id) {
                reading.originals.push(id);
            }
        }
    }
    reading.verp = ENVELOPE_TO.iter().find_map(|h| {
        let v = msg.header_raw(*h)?;
        VERP_KEY
            .captures(v)
            .and_then(|c| RecipientKey::from_hex(&c[1]))
    });
    for r in &mut reading.recipients {
        r.address = r
            .address
            .take()
            .and_then(|a| Address::parse(&a).ok().map(|p| normalise(&p)));
    }
    reading
}

fn read_kind(msg: &Message<'_>, cx: &Context<'_>) -> Reading {
    if let Some(part) = find_part(
        msg,
        "message",
        &["delivery-status", "global-delivery-status"],
    ) {
        return delivery_status(&String::from_utf8_lossy(part));
    }
    if let Some(part) = find_part(msg, "message", &["feedback-report"]) {
        return feedback_report(msg, &String::from_utf8_lossy(part));
    }
    let subject = msg.subject().unwrap_or("");
    if let Some(r) = unsubscribe_reply(subject, cx) {
        return r;
    }
    let body = body_text(msg);
    let ignore: Vec<String> = ["From", "To", "Return-Path"]
        .iter()
        .filter_map(|h| msg.header_raw(*h))
        .flat_map(|v| {
            v.split([',', '<', '>', ' '])
                .filter(|s| s.contains('@'))
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some((name, recipients)) = text::read(&body, &ignore) {
        if recipients.is_empty() {
            return unrecognised(&format!(
                "looks like a {name} bounce, but names no recipient campaign could read"
            ));
        }
        return Reading {
            kind: Kind::Bounce,
            how: format!("{name} bounce text"),
            recipients,
            originals: Vec::new(),
            verp: None,
        };
    }
    if let Some(how) = auto_reply(msg, subject) {
        return Reading {
            kind: Kind::AutoReply,
            how,
            recipients: Vec::new(),
            originals: Vec::new(),
            verp: None,
        };
    }
    if subject.to_ascii_lowercase().contains("unsubscribe") {
        return unrecognised(
            "asks to unsubscribe but carries no token campaign made (the mailto link's subject was changed, or it came from elsewhere): unsubscribe the sender by hand if it is a donor",
        );
    }
    unrecognised("not a bounce, complaint or unsubscribe reply campaign recognises")
}

fn unrecognised(why: &str) -> Reading {
    Reading {
        kind: Kind::Unrecognised,
        how: why.to_owned(),
        recipients: Vec::new(),
        originals: Vec::new(),
        verp: None,
    }
}

/// The body of the first part (at any depth outside returned messages) of type
/// `ctype/subtype`.
fn find_part<'m>(msg: &'m Message<'_>, ctype: &str, subtypes: &[&str]) -> Option<&'m [u8]> {
    msg.parts.iter().find_map(|p| {
        let ct = p.content_type()?;
        let sub = ct.subtype()?;
        (ct.ctype().eq_ignore_ascii_case(ctype)
            && subtypes.iter().any(|s| s.eq_ignore_ascii_case(sub)))
        .then(|| p.contents())
    })
}

/// The text of the message's text parts (not of returned messages), joined.
fn body_text(msg: &Message<'_>) -> String {
    let mut out = String::new();
    for i in 0..msg.text_body_count() {
        if let Some(t) = msg.body_text(i) {
            out.push_str(&t);
            out.push('\n');
        }
    }
    if out.is_empty()
        && let Some(PartType::Text(t)) = msg.parts.first().map(|p| &p.body)
    {
        out.push_str(t);
    }
    out
}

/// An RFC 3464 report: one block per recipient after the per-message block.
fn delivery_status(text: &str) -> Reading {
    let mut recipients = Vec::new();
    let mut mta = None;
    for b in fields::blocks(text) {
        if let Some(m) = b.get("Reporting-MTA") {
            mta.get_or_insert_with(|| m.split(';').next_back().unwrap_or(m).trim().to_owned());
        }
        let Some(action) = b.get("Action") else {
            continue;
        };
        let Some(address) = b
            .get("Final-Recipient")
            .or_else(|| b.get("Original-Recipient"))
            .and_then(fields::rfc822_address)
        else {
            continue;
        };
        let status = b
            .get("Status")
            .map(|s| s.split_whitespace().next().unwrap_or(s).to_owned());
        let permanent = status.as_deref().is_some_and(|s| s.starts_with('5'));
        let outcome = match action.to_ascii_lowercase().as_str() {
            "failed" if permanent => Outcome::Permanent,
            "failed" | "delayed" => Outcome::Temporary,
            // delivered, relayed, expanded: nothing went wrong.
            _ => continue,
        };
        let diagnostic = b
            .get("Diagnostic-Code")
            .map(|d| d.split_once(';').map_or(d, |(_, t)| t).trim().to_owned())
            .unwrap_or_default();
        recipients.push(Recipient {
            address: Some(address.to_owned()),
            outcome,
            status,
            diagnostic,
        });
    }
    if recipients.is_empty() {
        return unrecognised("a delivery status report naming no failed or delayed recipient");
    }
    Reading {
        kind: Kind::Bounce,
        how: match mta {
            Some(m) => format!("RFC 3464 delivery status from {m}"),
            None => "RFC 3464 delivery status".to_owned(),
        },
        recipients,
        originals: Vec::new(),
        verp: None,
    }
}

/// An RFC 5965 report: abuse and fraud complaints suppress; other feedback types do not.
fn feedback_report(msg: &Message<'_>, text: &str) -> Reading {
    let blocks = fields::blocks(text);
    let Some(b) = blocks.first() else {
        return unrecognised("a feedback report with no fields");
    };
    let kind = b.get("Feedback-Type").unwrap_or("").to_ascii_lowercase();
    if !matches!(kind.as_str(), "abuse" | "fraud" | "virus") {
        return Reading {
            kind: Kind::Complaint,
            how: format!(
                "RFC 5965 feedback report of type {:?}: not a complaint, nothing to suppress",
                kind
            ),
            recipients: Vec::new(),
            originals: Vec::new(),
            verp: None,
        };
    }
    // The complainant: Original-Rcpt-To, else the To of the returned message (often redacted).
    let mut addresses: Vec<String> = b
        .all("Original-Rcpt-To")
        .filter_map(fields::rfc822_address)
        .map(str::to_owned)
        .collect();
    if addresses.is_empty() {
        addresses.extend(returned_to(msg));
    }
    let mut recipients: Vec<Recipient> = addresses
        .into_iter()
        .map(|a| Recipient {
            address: Some(a),
            outcome: Outcome::Complaint,
            status: None,
            diagnostic: format!("feedback type {kind}"),
        })
        .collect();
    if recipients.is_empty() {
        // Matched to a donor through the original Message-ID when a run is given.
        recipients.push(Recipient {
            address: None,
            outcome: Outcome::Complaint,
            status: None,
            diagnostic: format!("feedback type {kind} (the address is redacted)"),
        });
    }
    Reading {
        kind: Kind::Complaint,
        how: format!("RFC 5965 feedback report ({kind})"),
        recipients,
        originals: Vec::new(),
        verp: None,
    }
}

/// The To addresses of the message a report returns (a message/rfc822 part, or
/// text/rfc822-headers).
fn returned_to(msg: &Message<'_>) -> Vec<String> {
    for p in &msg.parts {
        let headers = match &p.body {
            PartType::Message(m) => m.header_raw("To").map(str::to_owned),
            PartType::Text(t)
                if p.content_type().is_some_and(|c| {
                    c.subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
                }) =>
            {
                MessageParser::default()
                    .parse(t.as_bytes())
                    .and_then(|m| m.header_raw("To").map(str::to_owned))
            }
            _ => None,
        };
        if let Some(to) = headers {
            return to
                .split([',', '<', '>', ' '])
                .filter(|s| s.contains('@') && !s.contains("redacted"))
                .map(|s| s.trim().to_owned())
                .collect();
        }
    }
    Vec::new()
}

/// A reply to the `mailto:` unsubscribe: its subject carries campaign, address and token.
fn unsubscribe_reply(subject: &str, cx: &Context<'_>) -> Option<Reading> {
    let c = UNSUBSCRIBE.captures(subject)?;
    let (campaign, email, token) = (&c[1], &c[2], &c[3]);
    let Some(secret) = cx.secret else {
        return Some(unrecognised(
            "an unsubscribe reply, but CAMPAIGN_UNSUBSCRIBE_SECRET is not set, so its token cannot be checked: set it (the same secret `send` used) and read this message again",
        ));
    };
    let normalised = Address::parse(email).ok().map(|a| normalise(&a))?;
    if !secret.verify(campaign, &normalised, token) {
        return Some(unrecognised(
            "an unsubscribe reply whose token does not verify (forged, edited, or made with another secret): nothing suppressed",
        ));
    }
    Some(Reading {
        kind: Kind::Unsubscribe,
        how: format!("reply to the mailto unsubscribe of campaign {campaign}"),
        recipients: vec![Recipient {
            address: Some(normalised),
            outcome: Outcome::Unsubscribe,
            status: None,
            diagnostic: format!("unsubscribed by reply (campaign {campaign})"),
        }],
        originals: Vec::new(),
        verp: None,
    })
}

/// Why `msg` is an automatic reply, if it is (RFC 3834's Auto-Submitted, the headers
/// Exchange and vacation programs set, and their usual subjects).
fn auto_reply(msg: &Message<'_>, subject: &str) -> Option<String> {
    if let Some(v) = msg.header_raw("Auto-Submitted")
        && !v.trim().eq_ignore_ascii_case("no")
    {
        return Some(format!("automatic reply (Auto-Submitted: {})", v.trim()));
    }
    for h in ["X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"] {
        if msg.header_raw(h).is_some() {
            return Some(format!("automatic reply ({h})"));
        }
    }
    let s = subject.trim().to_ascii_lowercase();
    let hints = [
        "automatic reply",
        "auto:",
        "autoreply",
        "auto-reply",
        "out of office",
        "out of the office",
        "away from",
        "on vacation",
        "abwesenheit",
    ];
    if let Some(h) = hints.iter().find(|h| s.contains(*h)) {
        return Some(format!("automatic reply (subject says {h:?})"));
    }
    let precedence = msg
        .header_raw("Precedence")
        .map(|p| p.trim().to_ascii_lowercase());
    if let Some(p) = precedence.filter(|p| matches!(p.as_str(), "bulk" | "junk" | "auto_reply")) {
        return Some(format!("automatic reply (Precedence: {p})"));
    }
    None
}

/// Counts of what was read, for the operator.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Tally {
    /// Messages read.
    pub messages: usize,
    /// Delivery reports.
    pub bounces: usize,
    /// Recipients failed for good.
    pub permanent: usize,
    /// Recipients delayed or failed for now (never suppressed).
    pub temporary: usize,
    /// Complaints (abuse, fraud) reported.
    pub complaints: usize,
    /// Unsubscribe replies whose token verified.
    pub unsubscribes: usize,
    /// Automatic replies (out of office, vacation).
    pub auto_replies: usize,
    /// Feedback reports that are not complaints (e.g. not-spam).
    pub other_reports: usize,
    /// Messages not understood, with where they are and why.
    pub unrecognised: Vec<Unread>,
}

/// A message `bounces` did not understand.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unread {
    /// Where it is (file, and line and number in an mbox).
    pub origin: String,
    /// Why it was not understood.
    pub why: String,
}

impl Tally {
    /// Counts one message.
    pub fn add(&mut self, origin: &source::Origin, r: &Reading) {
        self.messages += 1;
        let count = |o: Outcome| r.recipients.iter().filter(|x| x.outcome == o).count();
        match r.kind {
            Kind::Bounce => self.bounces += 1,
            Kind::Complaint if r.recipients.is_empty() => self.other_reports += 1,
            Kind::AutoReply => self.auto_replies += 1,
            Kind::Unrecognised => self.unrecognised.push(Unread {
                origin: origin.to_string(),
                why: r.how.clone(),
            }),
            Kind::Complaint | Kind::Unsubscribe => {}
        }
        self.permanent += count(Outcome::Permanent);
        self.temporary += count(Outcome::Temporary);
        self.complaints += count(Outcome::Complaint);
        self.unsubscribes += count(Outcome::Unsubscribe);
    }
}
