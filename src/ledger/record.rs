//! One ledger line: parsing it and writing it (the format is specified in the module above).
//!
//! Both directions go through [`Record`], so what a writer keeps in memory is folded by the
//! same code as what a reader parses.

use std::borrow::Cow;
use std::fmt::Write as _;

use jiff::Timestamp;

use crate::email::RecipientKey;

/// A parsed line, borrowing its text from the line (or the writer's arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record<'a> {
    /// The session that wrote it.
    pub session: &'a str,
    /// When.
    pub at: Timestamp,
    /// What happened.
    pub event: Event<'a>,
}

/// The kind-specific part of a [`Record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event<'a> {
    /// `H`: a session starts using the file; `format` is the ledger format version it
    /// writes (1 when the line has no such field).
    Start {
        boot_id: Option<&'a str>,
        pid: u32,
        format: u32,
    },
    /// `A`: attempt reserved.
    Reserve(RecipientKey),
    /// `T`: body about to be sent.
    Transmit(RecipientKey),
    /// `S`: accepted.
    Sent {
        key: RecipientKey,
        code: u16,
        reply: &'a str,
    },
    /// `F`: permanently failed.
    Failed {
        key: RecipientKey,
        code: u16,
        text: &'a str,
        suppress: bool,
    },
    /// `D`: transient failure.
    Deferred {
        key: RecipientKey,
        code: Option<u16>,
        text: &'a str,
    },
    /// `U`: outcome unknown.
    Unknown { key: RecipientKey, text: &'a str },
    /// `R`: reservation released unused.
    Release(RecipientKey),
    /// `X`: suppressed after segment ran (a list given to `send`); never sent.
    Suppressed { key: RecipientKey, text: &'a str },
    /// `B`: what came back after the message was accepted (a bounce, a complaint, an
    /// unsubscribe reply), in the chunk's feedback file.
    Feedback {
        key: RecipientKey,
        kind: FeedbackKind,
        status: Option<&'a str>,
        text: &'a str,
    },
}

/// What a `B` record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    /// A permanent failure reported after the relay accepted the message (a DSN).
    Bounce,
    /// The donor reported the message as spam (an ARF report).
    Complaint,
    /// The donor asked to be unsubscribed (a reply to the `mailto:` unsubscribe).
    Unsubscribe,
}

impl FeedbackKind {
    /// The word written in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Bounce => "bounce",
            FeedbackKind::Complaint => "complaint",
            FeedbackKind::Unsubscribe => "unsubscribe",
        }
    }

    fn parse(s: &str) -> Option<FeedbackKind> {
        match s {
            "bounce" => Some(FeedbackKind::Bounce),
            "complaint" => Some(FeedbackKind::Complaint),
            "unsubscribe" => Some(FeedbackKind::Unsubscribe),
            _ => None,
        }
    }
}

/// The ledger format this build writes; it reads every version up to it.
pub(super) const FORMAT: u32 = 2;

/// Whether `s` can be a session or boot id field: non-empty, not the `-` placeholder, no
/// control characters (so no TAB or newline) and no spaces (so it reads as one word).
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s != "-" && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// `text` with every ASCII control character replaced by a space; borrowed when it has none,
/// which is the usual case for SMTP replies.
pub(super) fn clean_text(text: &str) -> Cow<'_, str> {
    // Control characters are ASCII, so a byte scan finds them in any UTF-8 text.
    if text.bytes().any(|b| b.is_ascii_control()) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_ascii_control() { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// `rec` in words, when it is about `key`: `<timestamp> <what happened>`.
pub(super) fn describe(rec: &Record<'_>, key: RecipientKey) -> Option<String> {
    let what = match &rec.event {
        Event::Reserve(k) if *k == key => "reserved for sending".to_owned(),
        Event::Transmit(k) if *k == key => "message transmitting".to_owned(),
        Event::Release(k) if *k == key => "reservation released unused".to_owned(),
        Event::Sent {
            key: k,
            code,
            reply,
        } if *k == key => {
            format!("accepted by the relay: {code} {reply}")
        }
        Event::Failed {
            key: k, code, text, ..
        } if *k == key => {
            format!("failed for good: {code} {text}")
        }
        Event::Deferred { key: k, code, text } if *k == key => match code {
            Some(c) => format!("deferred: {c} {text}"),
            None => format!("deferred: {text}"),
        },
        Event::Unknown { key: k, text } if *k == key => format!("outcome unknown: {text}"),
        Event::Suppressed { key: k, text } if *k == key => format!("not sent, {text}"),
        Event::Feedback {
            key: k, kind, text, ..
        } if *k == key => format!("came back after sending ({}): {text}", kind.as_str()),
        _ => return None,
    };
    Some(format!("{:.3} {what}", rec.at))
}

/// `text` as one word for a field such as a status code: control characters and spaces
/// become `_`, and an empty or `-` value becomes `?`, since `-` means none.
pub(super) fn clean_token(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if t.is_empty() || t == "-" {
        "?".to_owned()
    } else {
        t
    }
}

/// Appends `rec` as one line (with its `\n`) to `buf`. Text fields must already be clean
/// ([`clean_text`]) and ids tokens ([`is_token`]); the writer guarantees both.
pub(super) fn encode(rec: &Record<'_>, buf: &mut String) {
    debug_assert!(is_token(rec.session));
    // Writing to a String cannot fail.
    let s = rec.session;
    let at = rec.at;
    let _ = match &rec.event {
        Event::Start {
            boot_id,
            pid,
            format,
        } => {
            let boot = boot_id.unwrap_or("-");
            if *format == 1 {
                writeln!(buf, "H\t{s}\t{boot}\t{at:.3}\t{pid}")
            } else {
                writeln!(buf, "H\t{s}\t{boot}\t{at:.3}\t{pid}\t{format}")
            }
        }
        Event::Reserve(key) => writeln!(buf, "A\t{s}\t{:032x}\t{at:.3}", key.as_u128()),
        Event::Transmit(key) => writeln!(buf, "T\t{s}\t{:032x}\t{at:.3}", key.as_u128()),
        Event::Sent { key, code, reply } => {
            writeln!(
                buf,
                "S\t{s}\t{:032x}\t{at:.3}\t{code}\t{reply}",
                key.as_u128()
            )
        }
        Event::Failed {
            key,
            code,
            text,
            suppress,
        } => writeln!(
            buf,
            "F\t{s}\t{:032x}\t{at:.3}\t{code}\t{text}\t{}",
            key.as_u128(),
            u8::from(*suppress)
        ),
        Event::Deferred { key, code, text } => {
            let _ = write!(buf, "D\t{s}\t{:032x}\t{at:.3}\t", key.as_u128());
            let _ = match code {
                Some(code) => write!(buf, "{code}"),
                None => buf.write_char('-'),
            };
            writeln!(buf, "\t{text}")
        }
        Event::Unknown { key, text } => {
            writeln!(buf, "U\t{s}\t{:032x}\t{at:.3}\t{text}", key.as_u128())
        }
        Event::Release(key) => writeln!(buf, "R\t{s}\t{:032x}\t{at:.3}", key.as_u128()),
        Event::Suppressed { key, text } => {
            writeln!(buf, "X\t{s}\t{:032x}\t{at:.3}\t{text}", key.as_u128())
        }
        Event::Feedback {
            key,
            kind,
            status,
            text,
        } => writeln!(
            buf,
            "B\t{s}\t{:032x}\t{at:.3}\t{}\t{}\t{text}",
            key.as_u128(),
            kind.as_str(),
            status.unwrap_or("-")
        ),
    };
}

/// The most fields any record has (`F`, `B`).
const MAX_FIELDS: usize = 7;

/// Parses one complete line (without its `\n`); the error is a reason for an operator.
pub(super) fn parse(line: &str) -> Result<Record<'_>, String> {
    let mut fields = [""; MAX_FIELDS];
    let mut n = 0;
    for field in line.split('\t') {
        if n == MAX_FIELDS {
            n += 1;
            break;
        }
        fields[n] = field;
        n += 1;
    }
    let kind = fields[0];
    let want = match kind {
        // A version 1 `H` has no format field.
        "H" if n == 5 => 5,
        "H" => 6,
        "U" | "X" => 5,
        "A" | "T" | "R" => 4,
        "S" | "D" => 6,
        "F" | "B" => 7,
        "" if n == 1 => return Err("empty line".to_owned()),
        _ => {
            return Err(format!(
                "unknown record kind {:?} (expected one of H A T S F D U R X B)",
                shorten(kind)
            ));
        }
    };
    if n != want {
        let found = if n > MAX_FIELDS {
            "more".to_owned()
        } else {
            n.to_string()
        };
        return Err(format!(
            "{kind} record has {found} tab-separated fields, expected {want}"
        ));
    }
    let session = fields[1];
    if session.is_empty() {
        return Err("empty session id".to_owned());
    }
    if kind == "H" {
        let boot_id = match fields[2] {
            "" => return Err("empty boot id (use - for none)".to_owned()),
            "-" => None,
            b => Some(b),
        };
        let at = timestamp(fields[3])?;
        let pid = fields[4]
            .parse()
            .map_err(|_| format!("bad process id {:?}", shorten(fields[4])))?;
        let format = match n {
            5 => 1,
            _ => match fields[5].parse::<u32>() {
                Ok(v @ 1..=FORMAT) => v,
                Ok(v) => {
                    return Err(format!(
                        "written by a newer campaign (ledger format {v}; this one reads formats 1 to {FORMAT}); finish the run with the campaign version that started it, or a newer one"
                    ));
                }
                Err(_) => return Err(format!("bad format version {:?}", shorten(fields[5]))),
            },
        };
        return Ok(Record {
            session,
            at,
            event: Event::Start {
                boot_id,
                pid,
                format,
            },
        });
    }
    let key = RecipientKey::from_hex(fields[2]).ok_or_else(|| {
        format!(
            "bad recipient key {:?} (expected 32 lowercase hex digits)",
            shorten(fields[2])
        )
    })?;
    let at = timestamp(fields[3])?;
    let event = match kind {
        "A" => Event::Reserve(key),
        "T" => Event::Transmit(key),
        "R" => Event::Release(key),
        "S" => Event::Sent {
            key,
            code: code(fields[4])?,
            reply: fields[5],
        },
        "F" => Event::Failed {
            key,
            code: code(fields[4])?,
            text: fields[5],
            suppress: match fields[6] {
                "0" => false,
                "1" => true,
                other => {
                    return Err(format!(
                        "bad suppress flag {:?} (expected 0 or 1)",
                        shorten(other)
                    ));
                }
            },
        },
        "D" => Event::Deferred {
            key,
            code: match fields[4] {
                "-" => None,
                c => Some(code(c)?),
            },
            text: fields[5],
        },
        "X" => Event::Suppressed {
            key,
            text: fields[4],
        },
        "B" => Event::Feedback {
            key,
            kind: FeedbackKind::parse(fields[4]).ok_or_else(|| {
                format!(
                    "bad feedback kind {:?} (expected bounce, complaint or unsubscribe)",
                    shorten(fields[4])
                )
            })?,
            status: match fields[5] {
                "-" => None,
                s => Some(s),
            },
            text: fields[6],
        },
        // Only "U" is left: `want` rejected every other kind.
        _ => Event::Unknown {
            key,
            text: fields[4],
        },
    };
    Ok(Record { session, at, event })
}

fn timestamp(s: &str) -> Result<Timestamp, String> {
    s.parse()
        .map_err(|_| format!("bad timestamp {:?} (expected RFC 3339)", shorten(s)))
}

fn code(s: &str) -> Result<u16, String> {
    // `parse` would accept a leading `+`; a code is digits only.
    if !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && let Ok(c) = s.parse()
    {
        return Ok(c);
    }
    Err(format!("bad SMTP code {:?}", shorten(s)))
}

/// At most 40 characters of `s`, so a garbage megabyte line gives a readable message.
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
