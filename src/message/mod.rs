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
//! a header ([`crate::email`] did that), and never sends. Signing is
//! [`dkim`]'s, applied to the composed bytes.
//!
//! Donor data reaches headers (the To display name, the subject, the unsubscribe URL), so any
//! control character there is refused with [`MessageError::HeaderInjection`], never stripped
//! or encoded away: a line break in a subject is a data problem the operator must see.
//!
//! The bytes are those lettre's (0.11) message builder wrote: RFC 2047 encoded-words for
//! non-ASCII names and subjects and header folding (with lettre's own encoder, the
//! email-encoding crate), the Date format, `multipart/alternative`. They are written straight
//! into one buffer instead of going through the builder, which re-parsed what it had just
//! written and copied each part several times (see [`Composer`]). Written here from values
//! checked here:
//!
//! * the unsubscribe headers (`List-Unsubscribe`, `List-Unsubscribe-Post`), List-Id and
//!   Feedback-ID, verbatim, so their exact bytes (which DKIM signs and receivers parse) never
//!   depend on a generic encoder;
//! * the body's transfer encoding: same choice as lettre (7bit for short-lined ASCII, else
//!   quoted-printable, or base64 when more than a third of the bytes need escaping) and every
//!   line at most 76 characters, but several times faster (lettre's took ~80% of the time for
//!   a 13 KB message).
//!
//! Every message is checked on the way out: CRLF line endings only, no header line over 998
//! octets (body lines are encoded to at most 76).
//! Addresses with non-ASCII characters are written as they are (RFC 6532); sending them needs
//! a relay that offers SMTPUTF8.

mod body;
mod composer;
pub mod dkim;
mod headers;
pub mod view;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod reference;

pub use composer::{Composer, MessageDate, Scratch, recipient};

use crate::email::RecipientKey;

/// RFC 5322 §2.1.1: a line is at most 998 octets before its CRLF.
const MAX_LINE: usize = 998;

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
    /// A header value that must be printable ASCII is not.
    #[error("the {field} {value:?} has {what}; it must be printable ASCII (it is a header value)")]
    NotAscii {
        /// The `[message]` key.
        field: &'static str,
        /// The rendered value.
        value: String,
        /// What is in it.
        what: String,
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

/// One donor's message, as rendered.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The donor's address (validated by [`crate::email::Address::parse`], then read by lettre
    /// for the envelope).
    pub to: &'a lettre::Address,
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
    /// The List-Id header's value (`[message] list_id`, rendered): printable ASCII.
    pub list_id: Option<&'a str>,
    /// The Feedback-ID header's value (`[message] feedback_id`, rendered): printable ASCII.
    pub feedback_id: Option<&'a str>,
    /// The donor's address as the unsubscribe token was made for it (normalised), for the
    /// `mailto:` unsubscribe's subject.
    pub email: &'a str,
    /// The donor's unsubscribe token, also in the `mailto:` unsubscribe's subject.
    pub unsubscribe_token: &'a str,
    /// The donor's recipient key, for the Message-ID (and a VERP envelope sender).
    pub key: RecipientKey,
    /// The Date header.
    pub date: &'a MessageDate,
}
