//! The reader against the corpus in fixtures/bounces/ (its README says where each shape
//! comes from): every message's kind, suppressed and temporary addresses, status, and the
//! original Message-ID, as `expected.json` lists them.

use std::path::{Path, PathBuf};

use super::source::{self, Origin};
use super::*;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bounces")
}

fn addresses(reading: &Reading, want: fn(Outcome) -> bool) -> Vec<String> {
    let mut v: Vec<String> = reading
        .recipients
        .iter()
        .filter(|r| want(r.outcome))
        .filter_map(|r| r.address.clone())
        .collect();
    v.sort();
    v
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    s.sort();
    s
}

fn check(name: &str, reading: &Reading, want: &serde_json::Value) {
    let kind = match reading.kind {
        Kind::Bounce => {
            let perm = reading
                .recipients
                .iter()
                .any(|r| r.outcome == Outcome::Permanent);
            let temp = reading
                .recipients
                .iter()
                .any(|r| r.outcome == Outcome::Temporary);
            match (perm, temp) {
                (true, true) => "mixed",
                (true, false) => "permanent",
                _ => "temporary",
            }
        }
        Kind::Complaint => "complaint",
        Kind::Unsubscribe => "unsubscribe",
        Kind::AutoReply => "auto-reply",
        Kind::Unrecognised => "unrecognised",
    };
    assert_eq!(kind, want["kind"], "{name}: {reading:?}");
    assert_eq!(
        addresses(reading, |o| o == Outcome::Permanent),
        strings(&want["permanent"]),
        "{name}: {reading:?}"
    );
    assert_eq!(
        addresses(reading, |o| o == Outcome::Temporary),
        strings(&want["temporary"]),
        "{name}: {reading:?}"
    );
    assert_eq!(
        addresses(reading, |o| o == Outcome::Complaint),
        strings(&want["complaints"]),
        "{name}: {reading:?}"
    );
    if let Some(status) = want["status"].as_str() {
        assert_eq!(
            reading.recipients[0].status.as_deref(),
            Some(status),
            "{name}: {reading:?}"
        );
    }
    if let Some(id) = want["message_id"].as_str() {
        let hex = &id[id.find('.').unwrap() + 1..id.find('@').unwrap()];
        assert!(
            reading
                .originals
                .iter()
                .any(|(c, k)| c == "spring-2026" && format!("{:032x}", k.as_u128()) == hex),
            "{name}: original {id} not found in {:?}",
            reading.originals
        );
    }
    // Whatever suppresses names an address (or, for a redacted complaint, none at all).
    for r in &reading.recipients {
        assert!(
            !r.outcome.suppresses() || r.address.is_some(),
            "{name}: {r:?}"
        );
    }
}

#[test]
fn every_message_of_the_corpus_reads_as_expected() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus().join("expected.json")).unwrap())
            .unwrap();
    let cx = Context::default();
    let mut checked = 0;
    for (name, want) in expected.as_object().unwrap() {
        let path = corpus().join(name);
        let mut readings: Vec<(Origin, Reading)> = Vec::new();
        source::for_each(&path, &mut |origin, bytes| {
            readings.push((origin, classify(bytes, &cx)));
            Ok(())
        })
        .unwrap();
        match want.as_array() {
            Some(list) => {
                assert_eq!(readings.len(), list.len(), "{name}");
                for ((origin, r), w) in readings.iter().zip(list) {
                    assert!(origin.mbox.is_some());
                    check(&origin.to_string(), r, w);
                }
            }
            None => {
                assert_eq!(readings.len(), 1, "{name}");
                check(name, &readings[0].1, want);
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "the corpus lost files: {checked}");
}

#[test]
fn an_unsubscribe_reply_is_honoured_only_with_a_verified_token() {
    let secret = UnsubscribeSecret::new("a-secret-of-at-least-sixteen-bytes").unwrap();
    let token = secret.token("spring-2026", "zoe@example.org");
    let reply = |subject: &str| {
        format!(
            "From: Zoe <zoe.personal@example.net>\r\nTo: unsubscribe@riverside-park.example\r\nSubject: {subject}\r\nIn-Reply-To: <spring-2026.{:032x}@riverside-park.example>\r\n\r\nPlease take me off.\r\n",
            7u128
        )
    };
    let ok = reply(&format!(
        "Re: unsubscribe spring-2026 Zoe@Example.org {token}"
    ));
    let cx = Context {
        secret: Some(&secret),
    };
    let r = classify(ok.as_bytes(), &cx);
    assert_eq!(r.kind, Kind::Unsubscribe, "{r:?}");
    assert_eq!(r.recipients[0].address.as_deref(), Some("zoe@example.org"));
    assert_eq!(r.recipients[0].outcome, Outcome::Unsubscribe);
    assert_eq!(r.originals.len(), 1);

    // Another address with Zoe's token, or another campaign: not honoured.
    for forged in [
        format!("unsubscribe spring-2026 bob@example.org {token}"),
        format!("unsubscribe autumn-2026 zoe@example.org {token}"),
    ] {
        let r = classify(reply(&forged).as_bytes(), &cx);
        assert_eq!(r.kind, Kind::Unrecognised, "{forged}: {r:?}");
        assert!(r.how.contains("does not verify"), "{}", r.how);
    }
    // Without the secret it cannot be checked, and says so.
    let r = classify(ok.as_bytes(), &Context::default());
    assert_eq!(r.kind, Kind::Unrecognised);
    assert!(r.how.contains("CAMPAIGN_UNSUBSCRIBE_SECRET"), "{}", r.how);
    // A bare "unsubscribe" is listed for a person, not acted on.
    let r = classify(reply("unsubscribe").as_bytes(), &cx);
    assert_eq!(r.kind, Kind::Unrecognised);
    assert!(r.how.contains("no token"), "{}", r.how);
}

#[test]
fn a_verp_address_names_the_donor() {
    let key = 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ffu128;
    let msg = format!(
        "Return-Path: <>\r\nDelivered-To: bounces+{key:032x}@riverside-park.example\r\nFrom: MAILER-DAEMON@mx.example.net\r\nTo: bounces+{key:032x}@riverside-park.example\r\nSubject: failure notice\r\n\r\nHi. This is the qmail-send program at mx.example.net.\r\nI'm afraid I wasn't able to deliver your message to the following addresses.\r\nThis is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n<gone@example.org>:\r\n550 5.1.1 no mailbox here\r\n"
    );
    let r = classify(msg.as_bytes(), &Context::default());
    assert_eq!(r.kind, Kind::Bounce);
    assert_eq!(r.verp.map(|k| k.as_u128()), Some(key));
    assert_eq!(
        r.recipients.len(),
        1,
        "the VERP address itself is not a recipient: {r:?}"
    );
    assert_eq!(r.recipients[0].address.as_deref(), Some("gone@example.org"));
}

#[test]
fn what_is_not_mail_is_unrecognised_not_an_error() {
    for junk in [&b""[..], b"\x00\x01\x02", b"just some words\n"] {
        assert_eq!(classify(junk, &Context::default()).kind, Kind::Unrecognised);
    }
}
