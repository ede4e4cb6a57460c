//! A message as a person reads it: `send --dry-run --print` shows the headers decoded
//! (no encoded words), the text part, and the HTML part as text, instead of the
//! quoted-printable bytes that are sent (`--raw` shows those).
//!
//! Owns only that rendering, with a MIME parser independent of the composer (mail-parser).
//! It never changes what is sent.

use mail_parser::{MessageParser, MimeHeaders};

/// The headers shown, in this order, when present.
const SHOWN: &[&str] = &[
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
];

/// `bytes` for reading; the raw bytes as text when they do not parse.
pub fn for_reading(bytes: &[u8]) -> String {
    let Some(m) = MessageParser::default().parse(bytes) else {
        return String::from_utf8_lossy(bytes).into_owned();
    };
    let mut out = String::new();
    for name in SHOWN {
        let value = match *name {
            "Subject" => m.subject().map(str::to_owned),
            "From" | "To" | "Reply-To" => m.header(*name).and_then(|h| h.as_address()).map(|a| {
                a.iter()
                    .map(|x| match (x.name(), x.address()) {
                        (Some(n), Some(e)) => format!("{n} <{e}>"),
                        (None, Some(e)) => e.to_owned(),
                        (Some(n), None) => n.to_owned(),
                        (None, None) => String::new(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            _ => m
                .header_raw(*name)
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")),
        };
        if let Some(v) = value {
            out.push_str(&format!("{name}: {v}\n"));
        }
    }
    if m.text_body.is_empty() && m.html_body.is_empty() {
        return out;
    }
    let text = m
        .text_body
        .first()
        .and_then(|&i| m.parts.get(i as usize))
        .filter(|p| p.content_type().is_none_or(|c| c.subtype() != Some("html")))
        .and_then(|p| p.text_contents());
    if let Some(t) = text {
        out.push_str("\n--- text part ---\n");
        out.push_str(t.trim_end());
        out.push('\n');
    }
    let html = m
        .html_body
        .first()
        .and_then(|&i| m.parts.get(i as usize))
        .filter(|p| {
            p.content_type()
                .is_some_and(|c| c.subtype() == Some("html"))
        })
        .and_then(|p| p.text_contents());
    if let Some(h) = html {
        out.push_str("\n--- HTML part, as text ---\n");
        out.push_str(mail_parser::decoders::html::html_to_text(h).trim_end());
        out.push('\n');
    }
    out
}

/// The message's HTML part, decoded, if it has one: what a preview opens in a browser.
pub fn html_part(bytes: &[u8]) -> Option<String> {
    let m = MessageParser::default().parse(bytes)?;
    m.html_body
        .first()
        .and_then(|&i| m.parts.get(i as usize))
        .filter(|p| {
            p.content_type()
                .is_some_and(|c| c.subtype() == Some("html"))
        })
        .and_then(|p| p.text_contents())
        .map(str::to_owned)
}
