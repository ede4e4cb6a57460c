//! One ledger line: parsing it and writing it (the format is specified in the module above).
//!
//! Both directions go through [`Record`], so what a writer keeps in memory is folded by the
//! same code as what a reader parses. Format 3 abbreviates against earlier lines of its
//! section, so both directions keep state: [`Encoder`] and [`Decoder`], one per file.

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
pub(super) const FORMAT: u32 = 3;

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

/// Writes records in the current format (3), keeping what it abbreviates against: the time
/// and keys of the section's last `A` line (or its `H` line's time), and the previous `S`
/// reply. One per file being appended to; text fields must already be clean
/// ([`clean_text`]) and ids tokens ([`is_token`]), which the writer guarantees.
#[derive(Debug, Default)]
pub(super) struct Encoder {
    /// The time of the last `A` line, or of the `H` line before any; offsets count from it.
    base: Option<Timestamp>,
    /// Keys of the last `A` line, for `#<n>` references.
    batch: Vec<RecipientKey>,
    /// The previous `S` reply, which the next one is written against.
    reply: String,
}

impl Encoder {
    /// Appends `rec` as one line (with its `\n`) to `buf`.
    pub(super) fn encode(&mut self, rec: &Record<'_>, buf: &mut String) {
        if let Event::Start {
            boot_id,
            pid,
            format,
        } = &rec.event
        {
            debug_assert!(is_token(rec.session));
            let boot = boot_id.unwrap_or("-");
            let _ = writeln!(
                buf,
                "H\t{}\t{boot}\t{:.3}\t{pid}\t{format}",
                rec.session, rec.at
            );
            *self = Encoder {
                base: Some(rec.at),
                ..Encoder::default()
            };
            return;
        }
        if let Event::Reserve(key) = rec.event {
            self.encode_reserve(&[key], rec.at, buf);
            return;
        }
        let (kind, key) = match &rec.event {
            Event::Transmit(k) => ('T', *k),
            Event::Sent { key, .. } => ('S', *key),
            Event::Failed { key, .. } => ('F', *key),
            Event::Deferred { key, .. } => ('D', *key),
            Event::Unknown { key, .. } => ('U', *key),
            Event::Release(k) => ('R', *k),
            Event::Suppressed { key, .. } => ('X', *key),
            Event::Feedback { key, .. } => ('B', *key),
            Event::Start { .. } | Event::Reserve(_) => unreachable!("written above"),
        };
        buf.push(kind);
        buf.push('\t');
        match self.batch.iter().position(|k| *k == key) {
            Some(i) => {
                let _ = write!(buf, "#{i}");
            }
            None => push_key(buf, key),
        }
        let _ = write!(buf, "\t{}", self.offset(rec.at));
        let _ = match &rec.event {
            Event::Transmit(_) => writeln!(buf),
            Event::Sent { code, reply, .. } => {
                let same = common_prefix(&self.reply, reply);
                let _ = writeln!(buf, "\t{code}\t{same}:{}", &reply[same..]);
                self.reply.clear();
                self.reply.push_str(reply);
                Ok(())
            }
            Event::Failed {
                code,
                text,
                suppress,
                ..
            } => writeln!(buf, "\t{code}\t{text}\t{}", u8::from(*suppress)),
            Event::Deferred { code, text, .. } => match code {
                Some(code) => writeln!(buf, "\t{code}\t{text}"),
                None => writeln!(buf, "\t-\t{text}"),
            },
            Event::Unknown { text, .. } | Event::Suppressed { text, .. } => {
                writeln!(buf, "\t{text}")
            }
            Event::Release(_) => writeln!(buf),
            Event::Feedback {
                kind, status, text, ..
            } => writeln!(
                buf,
                "\t{}\t{}\t{text}",
                kind.as_str(),
                status.unwrap_or("-")
            ),
            Event::Start { .. } | Event::Reserve(_) => unreachable!("written above"),
        };
    }

    /// Appends one `A` line reserving every key of `keys` (not empty) at `at`.
    pub(super) fn encode_reserve(
        &mut self,
        keys: &[RecipientKey],
        at: Timestamp,
        buf: &mut String,
    ) {
        debug_assert!(!keys.is_empty());
        let _ = write!(buf, "A\t{}\t", self.offset(at));
        self.base = Some(at);
        for (i, &key) in keys.iter().enumerate() {
            if i > 0 {
                buf.push(' ');
            }
            push_key(buf, key);
        }
        buf.push('\n');
        self.batch.clear();
        self.batch.extend_from_slice(keys);
    }

    /// Milliseconds from the section's last `A` (or `H`) line to `at`.
    fn offset(&self, at: Timestamp) -> i64 {
        debug_assert!(self.base.is_some(), "an H line comes first");
        at.as_millisecond()
            - self
                .base
                .map_or(at.as_millisecond(), Timestamp::as_millisecond)
    }
}

/// The length in bytes of the longest common prefix of `a` and `b` that ends on a character
/// boundary of both.
fn common_prefix(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    (0..=n).rev().find(|&i| b.is_char_boundary(i)).unwrap_or(0)
}

/// Appends `key` in the format's 22 characters (unpadded URL-safe base64 of its 16 bytes).
fn push_key(buf: &mut String, key: RecipientKey) {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_string(key.as_u128().to_be_bytes(), buf);
}

/// The key of a 22-character field, if it is one.
fn key_of(field: &str) -> Option<RecipientKey> {
    use base64::Engine as _;
    if field.len() != 22 {
        return None;
    }
    let mut bytes = [0u8; 16];
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(field, &mut bytes) {
        Ok(16) => Some(RecipientKey::from_u128(u128::from_be_bytes(bytes))),
        _ => None,
    }
}

/// Reads records of every format, keeping what format 3 abbreviates against (see
/// [`Encoder`]). One per file, fed its lines in order: each `H` line says the format of the
/// lines after it, up to the next `H`; lines before any `H` are of format 2.
///
/// A format 3 line depends only on the `H` and `A` lines before it, which are durable
/// before any line after them is written (an `A` is fsynced before its keys are used), so a
/// power cut that loses other lines changes nothing else; the one exception is the previous
/// `S` reply, which [`Decoder::lost_lines`] forgets.
#[derive(Debug)]
pub(super) struct Decoder<'a> {
    /// The format of the current section.
    format: u32,
    /// The session of the current section (format 3 lines do not name it).
    session: &'a str,
    /// The time of the section's last `A` line, or of its `H` line before any.
    base: Timestamp,
    batch: Vec<RecipientKey>,
    /// The previous `S` reply; `None` when a line in between was lost.
    reply: Option<String>,
}

impl<'a> Decoder<'a> {
    pub(super) fn new() -> Decoder<'a> {
        Decoder {
            format: 2,
            session: "",
            base: Timestamp::UNIX_EPOCH,
            batch: Vec::new(),
            reply: Some(String::new()),
        }
    }

    /// Tells the decoder that lines were lost here (NUL bytes where a power cut left
    /// unsynced data): an `S` reply written against a lost one cannot be rebuilt.
    pub(super) fn lost_lines(&mut self) {
        self.reply = None;
    }

    /// Parses one complete line (without its `\n`) and gives each record it holds to `f`:
    /// one, or one per key of a format 3 `A` line. The error is a reason for an operator,
    /// from the parser or from `f`.
    pub(super) fn line(
        &mut self,
        line: &'a str,
        f: &mut dyn FnMut(&Record<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        if self.format < 3 || line.starts_with("H\t") {
            let rec = parse_v2(line)?;
            if let Event::Start { format, .. } = rec.event {
                *self = Decoder {
                    format,
                    session: rec.session,
                    base: rec.at,
                    ..Decoder::new()
                };
            }
            return f(&rec);
        }
        self.line_v3(line, f)
    }

    fn line_v3(
        &mut self,
        line: &'a str,
        f: &mut dyn FnMut(&Record<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut fields = [""; MAX_FIELDS];
        let n = split_fields(line, &mut fields);
        let kind = fields[0];
        let want = match kind {
            "A" | "T" | "R" => 3,
            "U" | "X" => 4,
            "S" | "D" => 5,
            "F" | "B" => 6,
            "" if n == 1 => return Err("empty line".to_owned()),
            _ => return Err(unknown_kind(kind)),
        };
        check_count(kind, n, want)?;
        if kind == "A" {
            self.base = self.after(fields[1])?;
            self.batch.clear();
            for k in fields[2].split(' ') {
                self.batch.push(key_of(k).ok_or_else(|| bad_key(k))?);
            }
            for &key in &self.batch {
                f(&Record {
                    session: self.session,
                    at: self.base,
                    event: Event::Reserve(key),
                })?;
            }
            return Ok(());
        }
        let key = match fields[1] {
            r if r.starts_with('#') => {
                let i: usize = r[1..]
                    .parse()
                    .map_err(|_| format!("bad key reference {:?}", shorten(r)))?;
                *self.batch.get(i).ok_or_else(|| {
                    format!(
                        "key reference {r} is past the {} keys of the last A line",
                        self.batch.len()
                    )
                })?
            }
            r => key_of(r).ok_or_else(|| bad_key(r))?,
        };
        let at = self.after(fields[2])?;
        let event = match kind {
            "T" => Event::Transmit(key),
            "R" => Event::Release(key),
            "S" => {
                let code = code(fields[3])?;
                let (same, rest) = fields[4]
                    .split_once(':')
                    .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
                    .ok_or_else(|| {
                        format!(
                            "bad reply {:?} (expected <length>:<text>)",
                            shorten(fields[4])
                        )
                    })?;
                let reply = match &mut self.reply {
                    Some(before) if same <= before.len() && before.is_char_boundary(same) => {
                        before.truncate(same);
                        before.push_str(rest);
                        before
                    }
                    Some(before) => {
                        return Err(format!(
                            "reply keeps {same} bytes of the previous reply, which has {}",
                            before.len()
                        ));
                    }
                    // Its start was in a line a power cut lost; the record itself stands.
                    lost => lost.insert(if same == 0 {
                        rest.to_owned()
                    } else {
                        format!("(start lost in a power cut)…{rest}")
                    }),
                };
                return f(&Record {
                    session: self.session,
                    at,
                    event: Event::Sent { key, code, reply },
                });
            }
            _ => tail_event(kind, key, &fields[3..n])?,
        };
        f(&Record {
            session: self.session,
            at,
            event,
        })
    }

    /// The time `delta` milliseconds after the section's last `A` (or `H`) line.
    fn after(&self, delta: &str) -> Result<Timestamp, String> {
        let d: i64 = delta.parse().map_err(|_| {
            format!(
                "bad time offset {:?} (expected milliseconds)",
                shorten(delta)
            )
        })?;
        self.base
            .as_millisecond()
            .checked_add(d)
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .ok_or_else(|| format!("time offset {d} ms is out of range"))
    }
}

fn bad_key(field: &str) -> String {
    format!(
        "bad recipient key {:?} (expected 22 URL-safe base64 characters or #<n>)",
        shorten(field)
    )
}

/// The most fields any record has (`F`, `B`).
const MAX_FIELDS: usize = 7;

/// Splits `line` on TABs into `fields`; the count, or one more than [`MAX_FIELDS`] when
/// there are more.
fn split_fields<'a>(line: &'a str, fields: &mut [&'a str; MAX_FIELDS]) -> usize {
    let mut n = 0;
    for field in line.split('\t') {
        if n == MAX_FIELDS {
            return n + 1;
        }
        fields[n] = field;
        n += 1;
    }
    n
}

fn unknown_kind(kind: &str) -> String {
    format!(
        "unknown record kind {:?} (expected one of H A T S F D U R X B)",
        shorten(kind)
    )
}

fn check_count(kind: &str, n: usize, want: usize) -> Result<(), String> {
    if n == want {
        return Ok(());
    }
    let found = if n > MAX_FIELDS {
        "more".to_owned()
    } else {
        n.to_string()
    };
    Err(format!(
        "{kind} record has {found} tab-separated fields, expected {want}"
    ))
}

/// Parses one complete line of format 1 or 2, or an `H` line of any format.
fn parse_v2(line: &str) -> Result<Record<'_>, String> {
    let mut fields = [""; MAX_FIELDS];
    let n = split_fields(line, &mut fields);
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
        _ => return Err(unknown_kind(kind)),
    };
    check_count(kind, n, want)?;
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
        _ => tail_event(kind, key, &fields[4..n])?,
    };
    Ok(Record { session, at, event })
}

/// The event of an `F`, `D`, `U`, `X` or `B` record from its fields after the time, which
/// every format writes alike.
fn tail_event<'a>(kind: &str, key: RecipientKey, fields: &[&'a str]) -> Result<Event<'a>, String> {
    Ok(match kind {
        "F" => Event::Failed {
            key,
            code: code(fields[0])?,
            text: fields[1],
            suppress: match fields[2] {
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
            code: match fields[0] {
                "-" => None,
                c => Some(code(c)?),
            },
            text: fields[1],
        },
        "X" => Event::Suppressed {
            key,
            text: fields[0],
        },
        "B" => Event::Feedback {
            key,
            kind: FeedbackKind::parse(fields[0]).ok_or_else(|| {
                format!(
                    "bad feedback kind {:?} (expected bounce, complaint or unsubscribe)",
                    shorten(fields[0])
                )
            })?,
            status: match fields[1] {
                "-" => None,
                s => Some(s),
            },
            text: fields[2],
        },
        // Only "U" is left: the field count rejected every other kind.
        _ => Event::Unknown {
            key,
            text: fields[0],
        },
    })
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
