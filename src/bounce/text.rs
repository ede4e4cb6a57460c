//! Best effort for bounces that are not RFC 3464 reports: the plain-text notices of mail
//! servers still widely deployed (qmail, Exim, older Postfix and sendmail, older Exchange,
//! Yahoo). Each shape is a sentence the server always writes, the part of the text that
//! lists the failed addresses, and whether the notice means "gave up" or "still trying".
//!
//! Owns only recognising those texts. It never reads MIME (the caller hands it the text)
//! and never trusts an address outside the section that lists failures.

use std::sync::LazyLock;

use regex::Regex;

use super::{Outcome, Recipient};

/// One server's notice.
struct Shape {
    /// Named in what `bounces` prints.
    name: &'static str,
    /// A sentence only this notice has; the failed addresses follow it.
    start: &'static str,
    /// Where the list of failures ends (the returned copy of the message starts), if the
    /// notice has such a line.
    end: &'static [&'static str],
    /// The notice says delivery is still being tried.
    temporary: bool,
}

const COPY: &[&str] = &[
    "--- Below this line is a copy of the message",
    "------ This is a copy of the message",
    "------ This is a copy of the body",
    "----- Transcript of session follows -----",
    "----- Original message -----",
    "-----Original Message-----",
    "Original message headers:",
];

/// In the order tried: delay warnings first, as some share their opening with failures.
const SHAPES: &[Shape] = &[
    Shape {
        name: "Exim delay warning",
        start: "has not yet been delivered to one or more of its",
        end: COPY,
        temporary: true,
    },
    Shape {
        name: "Postfix delay warning",
        start: "This is a warning message only",
        end: COPY,
        temporary: true,
    },
    Shape {
        name: "sendmail delay warning",
        start: "----- The following addresses had transient non-fatal errors -----",
        end: COPY,
        temporary: true,
    },
    Shape {
        name: "qmail",
        start: "This is the qmail-send program at",
        end: COPY,
        temporary: false,
    },
    Shape {
        name: "Exim",
        start: "could not be delivered to one or more of its",
        end: COPY,
        temporary: false,
    },
    Shape {
        name: "Postfix (plain text)",
        start: "This is the Postfix program at host",
        end: COPY,
        temporary: false,
    },
    Shape {
        name: "sendmail",
        start: "----- The following addresses had permanent fatal errors -----",
        end: COPY,
        temporary: false,
    },
    Shape {
        name: "Exchange",
        start: "Your message did not reach some or all of the intended recipients",
        end: COPY,
        temporary: false,
    },
    Shape {
        name: "Yahoo",
        start: "Sorry, we were unable to deliver your message to the following address",
        end: COPY,
        temporary: false,
    },
];

static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>?")
        .expect("a valid pattern")
});
static STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b").expect("a valid pattern"));
static CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([45])\d\d\b").expect("a valid pattern"));

/// The failed recipients a known notice in `text` lists, and the notice's name; `None` when
/// `text` is none of them. `ignore` holds addresses that are never a failed recipient here
/// (the bounce's own sender and recipient).
pub(super) fn read(text: &str, ignore: &[String]) -> Option<(&'static str, Vec<Recipient>)> {
    // Servers wrap their sentences anywhere: compare with all whitespace as single spaces.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = text.as_str();
    let shape = SHAPES.iter().find(|s| text.contains(s.start))?;
    let from = text.find(shape.start)? + shape.start.len();
    let rest = &text[from..];
    let to = shape
        .end
        .iter()
        .filter_map(|e| rest.find(e))
        .min()
        .unwrap_or(rest.len());
    let section = &rest[..to];
    let found: Vec<(usize, usize, String)> = ADDRESS
        .captures_iter(section)
        .filter_map(|c| {
            let m = c.get(1)?;
            let addr = m.as_str().trim_end_matches('.').to_ascii_lowercase();
            let local = addr.split('@').next().unwrap_or("");
            let own = ignore.iter().any(|i| i.eq_ignore_ascii_case(&addr))
                || local.eq_ignore_ascii_case("mailer-daemon")
                || local.eq_ignore_ascii_case("postmaster");
            (!own).then(|| (m.start(), m.end(), addr))
        })
        .collect();
    let mut out: Vec<Recipient> = Vec::new();
    for (i, (_, end, addr)) in found.iter().enumerate() {
        if out.iter().any(|r| r.address.as_deref() == Some(addr)) {
            continue;
        }
        // What follows the address, up to the next other one, is its diagnostic (servers
        // often repeat the address inside it: `RCPT TO:<addr>`).
        let next = found[i + 1..]
            .iter()
            .find(|n| n.2 != *addr)
            .map_or(section.len(), |n| n.0);
        let diag = section[*end..next].trim();
        let status = STATUS
            .captures(diag)
            .map(|c| c[0].to_owned())
            .or_else(|| CODE.captures(diag).map(|c| format!("{}.0.0", &c[1])));
        let outcome = match status.as_deref() {
            _ if shape.temporary => Outcome::Temporary,
            Some(s) if s.starts_with('4') => Outcome::Temporary,
            _ => Outcome::Permanent,
        };
        out.push(Recipient {
            address: Some(addr.clone()),
            outcome,
            status,
            diagnostic: diag.chars().take(300).collect(),
        });
    }
    Some((shape.name, out))
}
