//! Folding a chunk's ledger into per-key states ([`ChunkStates`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::Offset;

use super::record::{self, Event, Record};
use super::{
    Entry, Feedback, LedgerError, Session, State, check_chunk_file, feedback_path, ledger_path,
};
use crate::email::RecipientKey;

/// The folded state of one chunk's ledger, read-only (for `campaign status` and reports).
///
/// Also the in-memory half of a [`super::ChunkLedger`], which applies each record it writes.
#[derive(Debug, Clone)]
pub struct ChunkStates {
    /// Every key the file mentions.
    slots: HashMap<RecipientKey, Slot>,
    /// Sessions seen, by index (records refer to them by id).
    sessions: Vec<SessionInfo>,
    /// Session id → index in `sessions`.
    session_index: HashMap<String, u32>,
    /// The boot id reservations are judged against (see the module doc).
    current_boot: Option<String>,
    /// `S` records per UTC day; a run spans few days, so a short list.
    sent_days: Vec<(Date, u64)>,
    /// Torn or NUL-damaged lines skipped.
    ignored: usize,
}

/// What the file says about one session.
#[derive(Debug, Clone)]
struct SessionInfo {
    id: String,
    /// `None` when the `H` line said `-`, or there was no `H` line.
    boot_id: Option<String>,
    /// Whether an `H` line was seen (records without one are judged as from an unknown boot).
    started: bool,
}

/// Everything known about one key.
#[derive(Debug, Clone)]
struct Slot {
    /// Details of the last outcome (or Pending): the state an unused reservation returns to.
    settled: Entry,
    /// `D` records so far.
    deferrals: u32,
    /// A reservation without an outcome yet.
    open: Option<Open>,
    /// When `open` makes the key Unknown, the entry to report instead of `settled`.
    unsettled: Option<Entry>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            settled: Entry::pending(),
            deferrals: 0,
            open: None,
            unsettled: None,
        }
    }

    fn entry(&self) -> &Entry {
        self.unsettled.as_ref().unwrap_or(&self.settled)
    }
}

/// An `A` (or stray `T`) not yet followed by an outcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct Open {
    /// Index of the reserving session.
    session: u32,
    /// Time of the `A`, or of the `T` once one follows.
    at: Timestamp,
    /// A `T` followed: the body may have been sent.
    transmitted: bool,
}

/// How an open reservation is settled by [`super::ChunkLedger::open`].
pub(super) enum Settle {
    /// Provably never transmitted: write `R`.
    Release(RecipientKey),
    /// May have been transmitted: write `U` with this text.
    Unknown(RecipientKey, String),
}

impl ChunkStates {
    /// Reads and folds the ledger of `chunk_file` (the manifest's run-relative chunk path).
    ///
    /// A missing file means nothing happened yet: every key is Pending. Reservations are
    /// judged against this machine's current boot ([`Session::current_boot_id`]), so while a
    /// `send` is running its in-flight recipients show as Unknown once transmitting and in
    /// their previous state before. Never blocks on, or waits for, a writer.
    pub fn read(run: &Path, chunk_file: &str) -> Result<ChunkStates, LedgerError> {
        check_chunk_file(chunk_file)?;
        let path = ledger_path(run, chunk_file);
        let current_boot = Session::current_boot_id();
        let mut states = match fs::read(&path) {
            Ok(bytes) => ChunkStates::fold(&bytes, &path, current_boot)?.0,
            Err(e) if e.kind() == io::ErrorKind::NotFound => ChunkStates::empty(current_boot),
            Err(e) => return Err(LedgerError::io(&path, e)),
        };
        states.fold_feedback(run, chunk_file)?;
        Ok(states)
    }

    /// Folds the chunk's feedback file (`B` records from `campaign bounces --run`) on top of
    /// the ledger, when there is one.
    pub(super) fn fold_feedback(
        &mut self,
        run: &Path,
        chunk_file: &str,
    ) -> Result<(), LedgerError> {
        let path = feedback_path(run, chunk_file);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LedgerError::io(&path, e)),
        };
        let (feedback, _) = ChunkStates::fold(&bytes, &path, self.current_boot.clone())?;
        self.ignored += feedback.ignored;
        for (key, slot) in feedback.slots {
            let Some(report) = slot.settled.feedback else {
                continue;
            };
            let rec = Record {
                session: "feedback",
                at: report.at,
                event: Event::Feedback {
                    key,
                    kind: report.kind,
                    status: report.status.as_deref(),
                    text: &report.text,
                },
            };
            self.apply(&rec).map_err(|reason| LedgerError::Malformed {
                path: path.clone(),
                line: 0,
                reason,
            })?;
        }
        Ok(())
    }

    /// The details of `key`, or `None` when the ledger has no record of it (it is Pending).
    pub fn get(&self, key: RecipientKey) -> Option<&Entry> {
        self.slots.get(&key).map(Slot::entry)
    }

    /// The state of `key` ([`State::Pending`] when never seen).
    pub fn state(&self, key: RecipientKey) -> State {
        self.get(key).map_or(State::Pending, |e| e.state)
    }

    /// Every key the ledger mentions, with its details, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (RecipientKey, &Entry)> {
        self.slots.iter().map(|(k, s)| (*k, s.entry()))
    }

    /// Number of keys the ledger mentions.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the ledger mentions no key.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of S records whose timestamp falls on `day` (UTC) — for a daily cap across
    /// cron runs.
    pub fn sent_on(&self, day: Date) -> u64 {
        self.sent_days
            .iter()
            .find(|(d, _)| *d == day)
            .map_or(0, |(_, n)| *n)
    }

    /// Lines skipped as damage (a torn last line, lines with NUL bytes); worth a warning.
    pub fn ignored_lines(&self) -> usize {
        self.ignored
    }

    pub(super) fn empty(current_boot: Option<String>) -> ChunkStates {
        ChunkStates {
            slots: HashMap::new(),
            sessions: Vec::new(),
            session_index: HashMap::new(),
            current_boot,
            sent_days: Vec::new(),
            ignored: 0,
        }
    }

    /// Folds a whole file. Also returns the length of its complete lines, i.e. where a torn
    /// last line starts (the file's length when there is none).
    pub(super) fn fold(
        bytes: &[u8],
        path: &Path,
        current_boot: Option<String>,
    ) -> Result<(ChunkStates, usize), LedgerError> {
        let mut states = ChunkStates::empty(current_boot);
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            states.ignored += 1;
        }
        let malformed = |line: usize, reason: String| LedgerError::Malformed {
            path: PathBuf::from(path),
            line,
            reason,
        };
        let mut decoder = record::Decoder::new();
        for (i, line) in bytes[..complete]
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
        {
            let number = i + 1;
            let line = &line[..line.len() - 1];
            // A run of NUL bytes alone is what a power cut leaves in place of data never
            // synced; NUL among other bytes is damage of another kind, never skipped.
            if !line.is_empty() && line.iter().all(|&b| b == 0) {
                states.ignored += 1;
                decoder.lost_lines();
                continue;
            }
            if line.contains(&0) {
                return Err(malformed(
                    number,
                    "the line holds NUL bytes among other bytes, which no writer writes".into(),
                ));
            }
            let text = std::str::from_utf8(line).map_err(|e| {
                malformed(number, format!("not UTF-8 (byte {})", e.valid_up_to() + 1))
            })?;
            decoder
                .line(text, &mut |rec| states.apply(rec))
                .map_err(|r| malformed(number, r))?;
        }
        Ok((states, complete))
    }

    /// Applies one record; the error (an `H` contradicting an earlier one) is a reason.
    pub(super) fn apply(&mut self, rec: &Record<'_>) -> Result<(), String> {
        let at = rec.at;
        match rec.event {
            Event::Start { boot_id, .. } => {
                let i = self.session(rec.session);
                let info = &mut self.sessions[i as usize];
                if info.started && info.boot_id.as_deref() != boot_id {
                    return Err(format!(
                        "session {} started again with another boot id",
                        rec.session
                    ));
                }
                info.started = true;
                info.boot_id = boot_id.map(str::to_owned);
            }
            Event::Reserve(key) => {
                let session = self.session(rec.session);
                let slot = self.slots.entry(key).or_insert_with(Slot::new);
                // An older reservation still open is settled first, as a reader would.
                if let Some(unknown) = slot.unsettled.take() {
                    slot.settled = unknown;
                }
                let open = Open {
                    session,
                    at,
                    transmitted: false,
                };
                slot.open = Some(open);
                slot.unsettled = judge(&self.sessions, self.current_boot.as_deref(), open);
            }
            Event::Transmit(key) => {
                let session = self.session(rec.session);
                let slot = self.slots.entry(key).or_insert_with(Slot::new);
                let open = Open {
                    session,
                    at,
                    transmitted: true,
                };
                slot.open = Some(open);
                slot.unsettled = judge(&self.sessions, self.current_boot.as_deref(), open);
            }
            Event::Release(key) => {
                self.session(rec.session);
                let slot = self.slots.entry(key).or_insert_with(Slot::new);
                // A transmitted reservation cannot be released: it stays Unknown.
                if let (Some(open), Some(unknown)) = (slot.open.take(), slot.unsettled.take())
                    && open.transmitted
                {
                    slot.settled = unknown;
                }
            }
            Event::Sent { key, code, reply } => {
                self.outcome(rec.session, key, at, State::Sent, Some(code), reply, false);
                let day = Offset::UTC.to_datetime(at).date();
                match self.sent_days.iter_mut().find(|(d, _)| *d == day) {
                    Some((_, n)) => *n += 1,
                    None => self.sent_days.push((day, 1)),
                }
            }
            Event::Failed {
                key,
                code,
                text,
                suppress,
            } => self.outcome(
                rec.session,
                key,
                at,
                State::Failed,
                Some(code),
                text,
                suppress,
            ),
            Event::Deferred { key, code, text } => {
                let attempts = self.slots.get(&key).map_or(0, |s| s.deferrals) + 1;
                self.outcome(
                    rec.session,
                    key,
                    at,
                    State::Deferred { attempts },
                    code,
                    text,
                    false,
                );
                if let Some(slot) = self.slots.get_mut(&key) {
                    slot.deferrals = attempts;
                }
            }
            Event::Unknown { key, text } => {
                self.outcome(rec.session, key, at, State::Unknown, None, text, false)
            }
            Event::Suppressed { key, text } => {
                self.outcome(rec.session, key, at, State::Suppressed, None, text, false)
            }
            Event::Feedback {
                key,
                kind,
                status,
                text,
            } => {
                self.session(rec.session);
                let slot = self.slots.entry(key).or_insert_with(Slot::new);
                // A report about the message proves the relay accepted it: an unknown
                // outcome is settled as sent.
                if let Some(unknown) = slot.unsettled.take() {
                    slot.open = None;
                    slot.settled = unknown;
                }
                if slot.settled.state == State::Unknown {
                    slot.settled.state = State::Sent;
                }
                slot.settled.feedback = Some(Feedback {
                    kind,
                    status: status.map(str::to_owned),
                    text: text.to_owned(),
                    at,
                });
            }
        }
        Ok(())
    }

    /// Records an outcome, closing any open reservation.
    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &mut self,
        session: &str,
        key: RecipientKey,
        at: Timestamp,
        state: State,
        code: Option<u16>,
        text: &str,
        suppress: bool,
    ) {
        self.session(session);
        let slot = self.slots.entry(key).or_insert_with(Slot::new);
        slot.open = None;
        slot.unsettled = None;
        slot.settled = Entry {
            state,
            code,
            text: text.to_owned(),
            at: Some(at),
            suppress,
            feedback: slot.settled.feedback.take(),
        };
    }

    /// The index of session `id`, registering it (as of unknown boot) if new.
    fn session(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.session_index.get(id) {
            return i;
        }
        let i = u32::try_from(self.sessions.len()).unwrap_or(u32::MAX);
        self.sessions.push(SessionInfo {
            id: id.to_owned(),
            boot_id: None,
            started: false,
        });
        self.session_index.insert(id.to_owned(), i);
        i
    }

    /// How each reservation still open should be settled, in key order (so files are
    /// reproducible).
    pub(super) fn to_settle(&self) -> Vec<Settle> {
        let mut keys: Vec<RecipientKey> = self
            .slots
            .iter()
            .filter(|(_, s)| s.open.is_some())
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| match &self.slots[&k].unsettled {
                Some(unknown) => Settle::Unknown(k, unknown.text.clone()),
                None => Settle::Release(k),
            })
            .collect()
    }
}

/// The Unknown entry an open reservation stands for, or `None` when it was provably never
/// transmitted (same boot, no `T`) and the key keeps its settled state.
fn judge(sessions: &[SessionInfo], current_boot: Option<&str>, open: Open) -> Option<Entry> {
    let session = &sessions[open.session as usize];
    let text = if open.transmitted {
        format!(
            "session {} began transmitting and recorded no outcome; the message may have been \
             delivered (check the relay's log)",
            session.id
        )
    } else {
        let same_boot = matches!(
            (session.boot_id.as_deref(), current_boot),
            (Some(a), Some(b)) if a == b
        );
        if same_boot {
            return None;
        }
        format!(
            "session {} reserved this recipient and recorded no outcome before a reboot (or on a \
             system without boot ids); the message may have been delivered (check the relay's log)",
            session.id
        )
    };
    Some(Entry {
        state: State::Unknown,
        code: None,
        text,
        at: Some(open.at),
        suppress: false,
        feedback: None,
    })
}
