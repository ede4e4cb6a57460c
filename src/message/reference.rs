//! The message as lettre's builder put it together before [`super::Composer`] wrote the bytes
//! itself: the tests hold the composer to these bytes (but for the random MIME boundary).
//! Bodies are encoded by [`super::body`] in both, as they were before.

use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue, MIME_VERSION_1_0,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};

use super::body::write_part;
use super::headers::{list_unsubscribe_value, mailto_escape, mailto_uri, parse_mailbox};
use super::{Composer, Outgoing};
use crate::campaign::MessageSettings;

/// A header lettre writes verbatim.
fn verbatim(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str(name),
        value.to_owned(),
        value.to_owned(),
    )
}

/// `text` encoded as the composer encodes a body, handed to lettre as pre-encoded.
fn body(text: &str, final_newline: bool) -> Body {
    let mut out = Vec::new();
    write_part(
        text,
        final_newline,
        &mut super::body::LineCache::default(),
        &mut out,
    );
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&out[..at]).unwrap();
    let encoding = match head.strip_prefix("Content-Transfer-Encoding: ").unwrap() {
        "7bit" => ContentTransferEncoding::SevenBit,
        "quoted-printable" => ContentTransferEncoding::QuotedPrintable,
        "base64" => ContentTransferEncoding::Base64,
        other => panic!("{other}"),
    };
    Body::dangerous_pre_encoded(out[at + 4..].to_vec(), encoding)
}

/// What lettre's builder made of `m` with these settings (the composer's checks passed).
pub(super) fn compose(
    composer: &Composer,
    campaign_id: &str,
    settings: &MessageSettings,
    m: &Outgoing<'_>,
) -> Vec<u8> {
    let from = parse_mailbox("[message] from", &settings.from).unwrap();
    let mut builder = lettre::Message::builder()
        .envelope(lettre::address::Envelope::new(None, vec![m.to.clone()]).unwrap())
        .from(from);
    if let Some(r) = &settings.reply_to {
        builder = builder.reply_to(parse_mailbox("[message] reply_to", r).unwrap());
    }
    let to_name = m.to_name.map(str::trim).filter(|n| !n.is_empty());
    builder = builder.to(Mailbox::new(to_name.map(str::to_owned), m.to.clone()));
    builder = if m.subject.contains("=?") {
        let mut line = Vec::new();
        super::headers::write_encoded_subject(m.subject, &mut line);
        let value = std::str::from_utf8(&line).unwrap();
        let value = value.strip_prefix("Subject: ").unwrap().trim_end();
        builder.raw_header(verbatim("Subject", value))
    } else {
        builder.subject(m.subject)
    };
    let date = m.date.0.strip_prefix("Date: ").unwrap().trim_end();
    builder = builder
        .raw_header(verbatim("Date", date))
        .message_id(Some(composer.message_id(m.key)));
    if let Some(v) = m.list_id {
        builder = builder.raw_header(verbatim("List-Id", v));
    }
    if let Some(v) = m.feedback_id {
        builder = builder.raw_header(verbatim("Feedback-ID", v));
    }
    let mailto = settings.unsubscribe_mailto.as_deref().map(|raw| {
        let mut uri = mailto_uri(raw).unwrap();
        for part in [campaign_id, m.email, m.unsubscribe_token] {
            uri.push_str("%20");
            mailto_escape(part, &mut uri);
        }
        uri.push('>');
        uri
    });
    let list_unsubscribe = match (m.unsubscribe_url, mailto) {
        (Some(url), mailto) => Some(list_unsubscribe_value(url, mailto.as_deref()).unwrap()),
        (None, mailto) => mailto,
    };
    if let Some(value) = list_unsubscribe {
        builder = builder.raw_header(verbatim("List-Unsubscribe", &value));
        if m.unsubscribe_url.is_some() {
            builder = builder.raw_header(verbatim(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click",
            ));
        }
    }
    let message = match m.html {
        None => builder
            .header(MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN)
            .body(body(m.text, true)),
        Some(html) => builder.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(body(m.text, false)),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(body(html, false)),
                ),
        ),
    }
    .unwrap();
    message.formatted()
}

/// `bytes` with its MIME boundary (random per message) replaced by `B`s, to compare messages.
pub(super) fn without_boundary(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    match text.split_once("boundary=\"") {
        None => bytes.to_vec(),
        Some((_, rest)) => {
            let boundary = &rest[..rest.find('"').unwrap()];
            text.replace(boundary, &"B".repeat(boundary.len()))
                .into_bytes()
        }
    }
}

#[test]
fn lettre_dates_read_as_written() {
    // The reference passes the composer's Date line through: check it is lettre's own.
    let date = super::fixtures::DATE.0.clone();
    let mut h = lettre::message::header::Headers::new();
    h.set(lettre::message::header::Date::new(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_961_109),
    ));
    assert_eq!(date, h.to_string());
    assert!(
        lettre::message::header::Date::parse(date.strip_prefix("Date: ").unwrap().trim_end())
            .is_ok()
    );
}
