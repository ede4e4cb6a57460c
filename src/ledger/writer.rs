//! Appending to a chunk's ledger ([`ChunkLedger`]).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::record::{self, Event, Record};
use super::states::Settle;
use super::{
    ChunkStates, LedgerError, Session, check_chunk_file, ledger_path, sync_dir, to_millis,
};
use crate::email::RecipientKey;

/// An open chunk ledger for appending, owned by one worker.
///
/// The file is `flock`ed while open, so a second writer (another worker by mistake, or
/// another process) gets [`LedgerError::Locked`] instead of interleaving records. Every
/// method writes its record(s) with a single `write(2)` and then applies them to
/// [`ChunkLedger::states`], so the in-memory states always equal what a reader of the file
/// would fold; the one exception is [`ChunkLedger::sent_with_next`], whose record is applied
/// at once and goes out with the next write (or [`ChunkLedger::flush`], sync or close).
/// After a failed write the file may end in a partial line, so every later write fails too;
/// reopening cuts the partial line off.
///
/// Dropping the ledger fsyncs it (ignoring errors); [`ChunkLedger::close`] does the same and
/// reports them.
#[derive(Debug)]
pub struct ChunkLedger {
    path: PathBuf,
    file: File,
    states: ChunkStates,
    /// This session's id, written in every record.
    session: String,
    /// Reused for formatting records, so the hot path does not allocate. Empty between
    /// writes, except for a record [`ChunkLedger::sent_with_next`] holds.
    buf: String,
    /// What the records written so far abbreviate against.
    encoder: record::Encoder,
    /// A write or fsync failed, and how: the file's tail is uncertain.
    poisoned: Option<Poison>,
    /// Records were written since the last fsync.
    dirty: bool,
}

impl ChunkLedger {
    /// Opens (creating dirs and the file), folds existing records, appends this session's H line.
    ///
    /// Also cuts off a torn last line, and settles every reservation earlier sessions left
    /// open (`R` when provably never transmitted, `U` otherwise; see the module doc), with
    /// one fsync. Reservations are judged against `session.boot_id`. `run` must exist.
    pub fn open(
        run: &Path,
        chunk_file: &str,
        session: &Session,
    ) -> Result<ChunkLedger, LedgerError> {
        check_chunk_file(chunk_file)?;
        check_session(session)?;
        let path = ledger_path(run, chunk_file);
        // `create_dir_all` would happily create a mistyped run directory.
        fs::metadata(run).map_err(|e| LedgerError::io(run, e))?;
        let dir = path.parent().unwrap_or(run).to_owned();
        fs::create_dir_all(&dir).map_err(|e| LedgerError::io(&dir, e))?;
        let io = |e| LedgerError::io(&path, e);

        let created = match fs::symlink_metadata(&path) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(e)),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path,
                    holder: "another writer (a second worker on this chunk, or another process)"
                        .to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (mut states, complete) = ChunkStates::fold(&bytes, &path, session.boot_id.clone())?;
        states.fold_feedback(run, chunk_file)?;
        let mut must_sync = created;
        if complete < bytes.len() {
            // A torn record: appending after it would glue the next record onto it.
            file.set_len(complete as u64).map_err(io)?;
            must_sync = true;
        }

        let mut ledger = ChunkLedger {
            path,
            file,
            states,
            session: session.id.clone(),
            buf: String::with_capacity(256),
            encoder: record::Encoder::default(),
            poisoned: None,
            dirty: false,
        };
        let start = Record {
            session: &session.id,
            at: to_millis(session.started),
            event: Event::Start {
                boot_id: session.boot_id.as_deref(),
                pid: session.pid,
                format: record::FORMAT,
            },
        };
        // Checked before writing: an `H` contradicting an earlier one would make the file
        // unreadable. Only a caller-made session id reused across boots can do that.
        ledger
            .states
            .apply(&start)
            .map_err(|reason| LedgerError::Invalid { reason })?;
        // Settle reservations of earlier sessions now, so the conclusion drawn on this boot
        // is on disk before a reboot could change it.
        let settle = ledger.states.to_settle();
        let settle: Vec<Record<'_>> = settle
            .iter()
            .map(|s| Record {
                session: &session.id,
                at: start.at,
                event: match s {
                    Settle::Release(key) => Event::Release(*key),
                    Settle::Unknown(key, text) => Event::Unknown { key: *key, text },
                },
            })
            .collect();
        for rec in std::iter::once(&start).chain(&settle) {
            ledger.encoder.encode(rec, &mut ledger.buf);
        }
        ledger.write_buf().map_err(|e| ledger.err(e))?;
        for rec in &settle {
            apply(&mut ledger.states, rec);
        }
        if must_sync || !settle.is_empty() {
            ledger.sync()?;
        }
        if created {
            // The new file (and any new directories) must survive a power cut, or the
            // reservations synced into it could vanish with its directory entry.
            let ledger_dir = dir.parent().unwrap_or(run);
            sync_dir(&dir)?;
            sync_dir(ledger_dir)?;
            sync_dir(run)?;
        }
        Ok(ledger)
    }

    /// The folded states, including everything this ledger has written.
    pub fn states(&self) -> &ChunkStates {
        &self.states
    }

    /// The ledger file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reserves `keys` for sending: one `A` record each, one write and one fsync for all.
    ///
    /// Send none of them unless this returns `Ok`. The fsync also makes every earlier record
    /// durable (group commit). An empty `keys` does nothing.
    pub fn reserve(&mut self, keys: &[RecipientKey], now: Timestamp) -> Result<(), LedgerError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write_keys(keys, now, Event::Reserve)?;
        self.sync()
    }

    /// Records that the body of `key`'s message is about to be sent (`T`, no fsync).
    ///
    /// Do not send if this fails: the record is what tells a reader that the message may have
    /// gone out.
    pub fn transmitting(&mut self, key: RecipientKey, now: Timestamp) -> io::Result<()> {
        self.write_one(now, Event::Transmit(key))
    }

    /// Records that the server accepted `key`'s message (`S`); `reply` should carry the
    /// queue id.
    pub fn sent(
        &mut self,
        key: RecipientKey,
        now: Timestamp,
        code: u16,
        reply: &str,
    ) -> Result<(), LedgerError> {
        let reply = record::clean_text(reply);
        let event = Event::Sent {
            key,
            code,
            reply: &reply,
        };
        self.write_one(now, event).map_err(|e| self.err(e))
    }

    /// Records that `key`'s message was accepted, as [`ChunkLedger::sent`] does, but keeps the
    /// record in memory to go out in the same `write(2)` as the ledger's next record: for a
    /// caller about to write again without waiting for anything (the next message's transmit
    /// record, its replies already read), to save a system call per message. A caller that
    /// finds it must wait after all calls [`ChunkLedger::flush`] first; until then a kill
    /// leaves this donor unknown rather than sent. Fails only on a ledger a failed write or
    /// fsync already poisoned; an error writing the record surfaces with the write that
    /// carries it.
    pub fn sent_with_next(
        &mut self,
        key: RecipientKey,
        now: Timestamp,
        code: u16,
        reply: &str,
    ) -> Result<(), LedgerError> {
        if let Some(p) = &self.poisoned {
            return Err(self.err(p.error()));
        }
        let reply = record::clean_text(reply);
        let rec = Record {
            session: &self.session,
            at: to_millis(now),
            event: Event::Sent {
                key,
                code,
                reply: &reply,
            },
        };
        self.encoder.encode(&rec, &mut self.buf);
        apply(&mut self.states, &rec);
        Ok(())
    }

    /// Writes the record [`ChunkLedger::sent_with_next`] holds, if any (no fsync). Fails on a
    /// poisoned ledger, held record or not.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        if let Some(p) = &self.poisoned {
            return Err(self.err(p.error()));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.write_buf().map_err(|e| self.err(e))
    }

    /// Records that `key` failed for good (`F`); `suppress` asks for the address to be added
    /// to the suppression list (e.g. mailbox does not exist).
    pub fn failed(
        &mut self,
        key: RecipientKey,
        now: Timestamp,
        code: u16,
        text: &str,
        suppress: bool,
    ) -> Result<(), LedgerError> {
        let text = record::clean_text(text);
        let event = Event::Failed {
            key,
            code,
            text: &text,
            suppress,
        };
        self.write_one(now, event).map_err(|e| self.err(e))
    }

    /// Records a transient failure (`D`): `key` is retried by a later run. `code` is `None`
    /// when the failure was not an SMTP reply (e.g. a timeout before the body).
    pub fn deferred(
        &mut self,
        key: RecipientKey,
        now: Timestamp,
        code: Option<u16>,
        text: &str,
    ) -> Result<(), LedgerError> {
        let text = record::clean_text(text);
        let event = Event::Deferred {
            key,
            code,
            text: &text,
        };
        self.write_one(now, event).map_err(|e| self.err(e))
    }

    /// Records that `key`'s outcome is unknown (`U`), e.g. the connection dropped after the
    /// body was sent.
    pub fn unknown(
        &mut self,
        key: RecipientKey,
        now: Timestamp,
        text: &str,
    ) -> Result<(), LedgerError> {
        let text = record::clean_text(text);
        let event = Event::Unknown { key, text: &text };
        self.write_one(now, event).map_err(|e| self.err(e))
    }

    /// Records that `key` is on a suppression list given to `send` (`X`): never sent in this
    /// run. Like the outcomes, no fsync: a lost record only means the next send checks the
    /// list again.
    pub fn suppressed(
        &mut self,
        key: RecipientKey,
        now: Timestamp,
        text: &str,
    ) -> Result<(), LedgerError> {
        let text = record::clean_text(text);
        let event = Event::Suppressed { key, text: &text };
        self.write_one(now, event).map_err(|e| self.err(e))
    }

    /// Gives back reservations that were not used (`R`, one write for all, no fsync), e.g.
    /// when the run stops mid-batch. Only for keys whose body was never started: a key after
    /// [`ChunkLedger::transmitting`] stays Unknown.
    pub fn release(&mut self, keys: &[RecipientKey], now: Timestamp) -> Result<(), LedgerError> {
        self.write_keys(keys, now, Event::Release)
    }

    /// Makes every record written so far durable (fsync).
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        // Fails on a poisoned ledger too.
        self.flush()?;
        match self.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                // After a failed fsync the kernel may have dropped the dirty pages: nothing
                // written since the last good fsync can be trusted to be on disk.
                self.poisoned = Some(Poison::from(&e));
                Err(self.err(e))
            }
        }
    }

    /// Syncs and closes the ledger (releasing its lock). Call it when the chunk is done, so
    /// its last outcomes are durable before the worker moves on.
    pub fn close(mut self) -> Result<(), LedgerError> {
        if self.dirty || !self.buf.is_empty() {
            self.sync()
        } else {
            Ok(())
        }
    }

    /// Points the ledger at another file, to make its writes fail (`/dev/full`).
    #[cfg(test)]
    pub(super) fn write_to(&mut self, file: File) {
        self.file = file;
    }

    /// Writes one record for a key and applies it.
    fn write_one(&mut self, now: Timestamp, event: Event<'_>) -> io::Result<()> {
        let rec = Record {
            session: &self.session,
            at: to_millis(now),
            event,
        };
        self.encoder.encode(&rec, &mut self.buf);
        write_all(&mut self.file, &mut self.buf, &mut self.poisoned)?;
        self.dirty = true;
        apply(&mut self.states, &rec);
        Ok(())
    }

    /// Writes one record per key with a single write, then applies them.
    fn write_keys(
        &mut self,
        keys: &[RecipientKey],
        now: Timestamp,
        event: fn(RecipientKey) -> Event<'static>,
    ) -> Result<(), LedgerError> {
        if keys.is_empty() {
            return Ok(());
        }
        let at = to_millis(now);
        if matches!(event(keys[0]), Event::Reserve(_)) {
            self.encoder.encode_reserve(keys, at, &mut self.buf);
        } else {
            for &key in keys {
                let rec = Record {
                    session: &self.session,
                    at,
                    event: event(key),
                };
                self.encoder.encode(&rec, &mut self.buf);
            }
        }
        self.write_buf().map_err(|e| self.err(e))?;
        for &key in keys {
            let rec = Record {
                session: &self.session,
                at,
                event: event(key),
            };
            apply(&mut self.states, &rec);
        }
        Ok(())
    }

    /// Writes `buf` as is, and empties it.
    fn write_buf(&mut self) -> io::Result<()> {
        write_all(&mut self.file, &mut self.buf, &mut self.poisoned)?;
        self.dirty = true;
        Ok(())
    }

    fn err(&self, e: io::Error) -> LedgerError {
        LedgerError::io(&self.path, e)
    }
}

impl Drop for ChunkLedger {
    fn drop(&mut self) {
        let _ = self.flush();
        if self.dirty && self.poisoned.is_none() {
            // Best effort: errors surface only through `close`.
            let _ = self.file.sync_data();
        }
    }
}

/// Appends `buf` with one `write(2)` (more only if the kernel writes it short), poisoning the
/// ledger on failure, and empties `buf` either way.
fn write_all(file: &mut File, buf: &mut String, poisoned: &mut Option<Poison>) -> io::Result<()> {
    let written = match poisoned {
        Some(p) => Err(p.error()),
        None => file
            .write_all(buf.as_bytes())
            .inspect_err(|e| *poisoned = Some(Poison::from(e))),
    };
    buf.clear();
    written
}

/// The first failed write or fsync, kept so every later refusal names it (a full disk says
/// "No space left on device" each time, not only the first).
#[derive(Debug)]
struct Poison {
    kind: io::ErrorKind,
    what: String,
}

impl From<&io::Error> for Poison {
    fn from(e: &io::Error) -> Poison {
        Poison {
            kind: e.kind(),
            what: e.to_string(),
        }
    }
}

impl Poison {
    fn error(&self) -> io::Error {
        io::Error::new(
            self.kind,
            format!(
                "an earlier write to this ledger failed ({}); nothing more is written to it. Fix that (free disk space, for one), then run again: the ledger is reopened and a torn last line cut off",
                self.what
            ),
        )
    }
}

/// Applies a record this ledger wrote. Only an `H` can be refused, and `open` applies its own
/// `H` itself, before writing it.
fn apply(states: &mut ChunkStates, rec: &Record<'_>) {
    let result = states.apply(rec);
    debug_assert!(result.is_ok(), "{result:?}");
}

/// Refuses session ids and boot ids that would break the line format.
fn check_session(session: &Session) -> Result<(), LedgerError> {
    let boot_ok = session.boot_id.as_deref().is_none_or(record::is_token);
    if record::is_token(&session.id) && boot_ok {
        Ok(())
    } else {
        Err(LedgerError::Invalid {
            reason: format!(
                "session id {:?} or boot id {:?} is empty, \"-\" or contains spaces or control \
                 characters",
                session.id, session.boot_id
            ),
        })
    }
}
