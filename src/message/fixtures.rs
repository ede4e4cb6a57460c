//! What the message tests share: the run's settings and composer, one donor's message, and the
//! wire-format checks every test applies to the bytes.

use std::sync::LazyLock;

use super::{Composer, MAX_LINE, MessageDate, Outgoing, recipient};
use crate::campaign::MessageSettings;
use crate::email::{Address, RecipientKey};

pub(super) const NAME: &str = "Zoë Łukasz 田中";
pub(super) const SUBJECT: &str = "Thank you, Zoë — £1,250 raised ✓";
pub(super) const URL: &str = "https://park.example/u?e=zo%C3%AB%40example.org&c=gala-2026&t=PMY8Tyxt05wDG49hie95-nBDx8T0ag55W7WkVczFQVM";

pub(super) fn settings() -> MessageSettings {
    MessageSettings {
        from: "Friends of the Park — Łódź <appeal@Park.Example>".into(),
        reply_to: Some("\"Supporters, Park\" <supporters@park.example>".into()),
        return_path: None,
        to_name: None,
        unsubscribe_url: None,
        unsubscribe_mailto: Some("unsubscribe@park.example".into()),
        unsubscribe_secret_file: None,
        currency: None,
        list_id: None,
        feedback_id: None,
    }
}

/// A realistic 10 KB HTML body of non-ASCII text, for the speed tests.
pub(super) fn long_html() -> String {
    let para = "<p>Dear Zoë, thank you for your gift of £1,250 to the Friends of the Park. \
                Your support planted 40 trees this spring.</p>\n";
    para.repeat(10_240 / para.len() + 1)
}

pub(super) fn composer() -> Composer {
    Composer::new("gala-2026", &settings()).unwrap()
}

pub(super) fn key(s: &str) -> RecipientKey {
    Address::parse(s).unwrap().key()
}

/// The messages' Date: 2026-11-29T14:05:09Z.
pub(super) static DATE: LazyLock<MessageDate> =
    LazyLock::new(|| MessageDate::new("2026-11-29T14:05:09Z".parse().unwrap()).unwrap());

/// An address read as [`recipient`] reads it, for life.
pub(super) fn to(address: &str) -> &'static lettre::Address {
    Box::leak(Box::new(recipient(address).unwrap()))
}

pub(super) fn outgoing<'a>(text: &'a str, html: Option<&'a str>) -> Outgoing<'a> {
    Outgoing {
        to: to("zoe@example.org"),
        to_name: Some(NAME),
        subject: SUBJECT,
        text,
        html,
        unsubscribe_url: Some(URL),
        list_id: None,
        feedback_id: None,
        email: "zoe@example.org",
        unsubscribe_token: "TOKEN",
        key: key("zoe@example.org"),
        date: &DATE,
    }
}

/// Every line ends in CRLF and is at most 998 octets.
pub(super) fn assert_wire_format(bytes: &[u8]) {
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

pub(super) fn header_block(bytes: &[u8]) -> &str {
    let s = std::str::from_utf8(bytes).unwrap();
    &s[..s.find("\r\n\r\n").unwrap() + 2]
}
