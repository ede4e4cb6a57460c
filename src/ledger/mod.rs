//! The delivery ledger: a durable record of every donor's delivery outcome.
//!
//! This module owns the files under `RUN/ledger/` and the rules for reading them back: what
//! state each recipient is in ([`ChunkStates`]), appending records as `send` works
//! ([`ChunkLedger`]), and keeping two `send` processes off one run ([`RunLock`]). It never
//! talks SMTP, never decides *whether* to send a donor (the caller does, from [`State`]), and
//! never rewrites or deletes a record: files only grow, except that a torn last line (see
//! below) is cut off before appending.
//!
//! # Guarantee
//!
//! A recipient is only ever sent after its reservation (`A`) is on disk (fsynced), and a
//! re-run sends only [`State::Pending`] and [`State::Deferred`] recipients, so nobody is lost
//! and nobody is mailed twice:
//!
//! * after a **process crash** (kill -9, OOM kill, panic) at most **one recipient per
//!   worker** is [`State::Unknown`]: the one whose body was on the wire. This needs the next
//!   `send` to open the chunk before the machine reboots (it then writes its conclusion
//!   down); after a reboot the power-cut bound below applies instead;
//! * after a **power cut or kernel crash** at most **batch size × workers** recipients are
//!   [`State::Unknown`]: those reserved in the batches in flight.
//!
//! This assumes each worker transmits one message at a time, writes `T` before the body and
//! does not send when that write fails, and syncs a chunk's ledger ([`ChunkLedger::sync`],
//! [`ChunkLedger::close`], or dropping it) before moving to other work: its next chunk, or a
//! retry of another chunk's donors. Unknown recipients need a human decision (check
//! the relay's logs); `send` must skip them, and everything else not
//! [`State::is_sendable`].
//!
//! # Layout
//!
//! ```text
//! RUN/ledger/lock                         RunLock: "pid <pid>, started <RFC 3339>\n"
//! RUN/ledger/shards/I-of-N.lock           ShardLock of shard I of N: "pid <pid> on <host>, started ..."
//! RUN/ledger/shards/of-N.lock             held shared by every running shard of N
//! RUN/ledger/templates.sha256             the templates' fingerprint: "<hex>\n"
//! RUN/ledger/<segment>/<nnnnn>.log        one file per chunk segments/<segment>/<nnnnn>.csv
//! RUN/ledger/<segment>/<nnnnn>.feedback   what came back after sending (`campaign bounces --run`)
//! ```
//!
//! One file per chunk, so workers never share a file (each open file is also `flock`ed by
//! its writer) and hosts could later share a run chunk by chunk. See [`ledger_path`].
//!
//! # File format (version 3)
//!
//! UTF-8 text, one record per line, each line ending in `\n` (LF). Fields are separated by
//! one TAB; the first field is a one-letter record kind. Field values never contain TAB, CR,
//! LF or NUL: in free-text fields every ASCII control character (U+0000-U+001F, U+007F) is
//! written as a space. `<session>` identifies one `send` process (see [`Session`]); it is
//! non-empty. `<code>` is the SMTP reply code, a decimal number.
//!
//! A file is a series of *sections*, each opened by an `H` line naming the session that
//! appends after it and the format it writes; only one process appends at a time (the file
//! is `flock`ed), so every record belongs to the section it is in. Format 3 keeps a
//! finished send to about 45 bytes per donor by not repeating what the section already says,
//! and a line refers only to the `H` and `A` lines before it, which are durable before any
//! line after them is written (each `A` is fsynced before its keys are used): a power cut
//! that loses other lines loses only those lines.
//!
//! * `<ms>`: the record's time, as milliseconds after the section's last `A` line (the `H`
//!   line before any), negative if the wall clock stepped back; for an `A` line, after the
//!   `A` (or `H`) line before it.
//! * `<key>`: a [`RecipientKey`] as 22 URL-safe base64 characters (no padding) of its 16
//!   bytes, big-endian. `<ref>` names a key: `<key>`, or `#<n>`, the n-th key (from 0) of
//!   the section's last `A` line.
//! * An `S` reply is written as `<n>:<rest>`: the first `n` bytes of the section's previous
//!   `S` reply (none before the first), then `rest`; consecutive replies differ only in the
//!   queue id. Where lines were lost before it (NUL lines, below), the lost part reads as
//!   `(start lost in a power cut)…`.
//!
//! | Record | Fields after the kind | Meaning |
//! |---|---|---|
//! | `H` | `<session> <boot_id or -> <ts> <pid> <format>` | session (started at RFC 3339 `ts`) starts appending here |
//! | `A` | `<ms> <key> <key> ...` (keys separated by one space) | attempts reserved; fsynced before any key is sent |
//! | `T` | `<ref> <ms>` | transmitting: written right before the body is sent |
//! | `S` | `<ref> <ms> <code> <reply>` | accepted by the server (reply has the queue id) |
//! | `F` | `<ref> <ms> <code> <text> <suppress>` | failed for good; suppress is `0` or `1` |
//! | `D` | `<ref> <ms> <code or -> <text>` | deferred: transient failure, retry later |
//! | `U` | `<ref> <ms> <text>` | outcome unknown (e.g. connection lost after the body) |
//! | `R` | `<ref> <ms>` | reservation released unused |
//! | `X` | `<ref> <ms> <text>` | on a list given to `send` after segment ran: never sent |
//! | `B` | `<ref> <ms> <kind> <status or -> <text>` | feedback file only: `bounce`, `complaint` or `unsubscribe` came back |
//!
//! Example (`→` is a TAB):
//!
//! ```text
//! H→20261129T234000.123Z-4242→0b7e4d6c-2a40-4d4f-9d7e-6f1e2b3c4d5e→2026-11-29T23:40:00.123Z→4242→3
//! A→7→bxwKDo87Sx2cLnpbPR8OnA 3q2-7wAAAAAAAAAAAAAAAQ
//! T→#0→1
//! S→#0→59→250→0:2.0.0 Ok: queued as 4XyZ
//! T→#1→59
//! S→#1→100→250→22:zA
//! ```
//!
//! **Formats 1 and 2**, still read (and any section of a file whose `H` names them), write
//! every record whole: `<kind> <session> <key as 32 lowercase hex digits> <RFC 3339 ts>`
//! then the same fields as above after `<ms>` (`S` its reply in full), one `A` line per key.
//! Format 1's `H` has no `<format>` field, and it has no `X` or `B` records. An `H` naming a
//! format above the reader's is malformed: the reader is too old to decide who was mailed.
//! Lines before any `H` (a feedback file of format 2) read as format 2.
//!
//! `boot_id` is the kernel's boot id (`/proc/sys/kernel/random/boot_id`, `-` where there is
//! none). A batch's keys are reserved with one `A` line, one write and one fsync (group
//! commit). `T`, `S`, `F`, `D`, `U` and `R` are written with one `write(2)` each and no fsync:
//! they survive a process crash through the page cache and become power-cut durable at the
//! next fsync (the next batch's reservation, or closing the chunk). The one exception: an `S`
//! whose writer is about to write the next `T` without waiting for anything goes out in the
//! same `write(2)` as that `T` ([`ChunkLedger::sent_with_next`]).
//!
//! ## Reading: the state of a key
//!
//! Records are folded in file order; a key never mentioned is [`State::Pending`].
//!
//! * `S` → [`State::Sent`], `F` → [`State::Failed`], `U` → [`State::Unknown`],
//!   `X` → [`State::Suppressed`],
//!   `D` → [`State::Deferred`] whose `attempts` counts every `D` of the key in the file, across
//!   sessions. An outcome also closes the key's open reservation, if any.
//! * `A` opens a reservation. While it is open the key is:
//!   * [`State::Unknown`] if a `T` followed it: the body may have gone out;
//!   * otherwise, if the reserving session's `H` line has the same boot id as the reader's
//!     current boot, the state from before the reservation (Pending or Deferred): the process
//!     died but the machine did not, so the page cache kept every `T` it wrote, and there is
//!     none;
//!   * otherwise (another boot, no boot id on either side, or no `H` line for the session)
//!     [`State::Unknown`]: a `T` may have been lost with the page cache.
//! * `R` closes the reservation: back to the state from before it. An `R` after a `T`
//!   cannot undo a transmission, so that key becomes [`State::Unknown`].
//! * A `T` with no open reservation counts as reservation and transmission together.
//! * A second `A` while one is open first settles the older one as above.
//!
//! * The feedback file is folded after the ledger. A `B` sets the key's
//!   [`Entry::feedback`]; it also settles an Unknown key (or an open reservation) as
//!   [`State::Sent`], since a report about the message proves the relay took it.
//!
//! [`ChunkLedger::open`] settles reservations left open by earlier sessions by appending an
//! `R` (never transmitted) or a `U` (may have been) for each, then fsyncs, so the conclusion
//! drawn on this boot survives later reboots.
//!
//! ## Damage
//!
//! * A last line without its `\n` is a torn write (a crash mid-append, or a reader racing a
//!   writer): it is ignored, and [`ChunkLedger::open`] cuts it off before appending.
//! * A line of NUL bytes alone is ignored: some file systems leave zeros in place of data
//!   that was not yet fsynced at a power cut, and the writer never writes NUL. A line with
//!   NUL bytes among other bytes is malformed (below).
//!
//! Neither can hide a sent recipient: both only affect unsynced data, and every `A` is synced
//! before its key is sent. Any other malformed line (unknown kind, wrong number of fields,
//! bad key, timestamp or number, invalid UTF-8, an empty line, a session restarted with
//! another boot id) is a [`LedgerError::Malformed`] naming the file and line: the ledger
//! decides who gets mailed, so it is never guessed at.
//!
//! [`RecipientKey`]: crate::email::RecipientKey

mod cap;
mod feedback;
mod fingerprint;
mod lock;
mod record;
mod states;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jiff::Timestamp;

pub use cap::CapClaims;
pub use feedback::{Report, record_feedback};
pub use fingerprint::{check_templates, record_templates};
pub use lock::{Holder, LockMode, RunLock, ShardLock, holders};
pub use record::FeedbackKind;
pub use states::ChunkStates;
pub use writer::ChunkLedger;

use crate::email::RecipientKey;
use crate::rundir::{LEDGER_DIR, SEGMENTS_DIR};

/// Where the kernel publishes the id of the current boot (Linux).
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// A recipient's delivery state, folded from its ledger records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not sent yet (or a reservation provably never transmitted): send it.
    Pending,
    /// Accepted by the server: never send again.
    Sent,
    /// Refused for good: never send again.
    Failed,
    /// Failed transiently `attempts` times: retry later.
    Deferred {
        /// Number of `D` records for the key, across sessions.
        attempts: u32,
    },
    /// May or may not have been delivered: never send again without a human decision.
    Unknown,
    /// On a suppression list given to `send` after segment ran (an unsubscribe, a bounce
    /// from another campaign): never sent in this run.
    Suppressed,
}

impl State {
    /// Whether `send` may (re)try this recipient.
    pub fn is_sendable(self) -> bool {
        matches!(self, State::Pending | State::Deferred { .. })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Pending => f.write_str("pending"),
            State::Sent => f.write_str("sent"),
            State::Failed => f.write_str("failed"),
            State::Deferred { attempts: 1 } => f.write_str("deferred (1 attempt)"),
            State::Deferred { attempts } => write!(f, "deferred ({attempts} attempts)"),
            State::Unknown => f.write_str("unknown"),
            State::Suppressed => f.write_str("suppressed"),
        }
    }
}

/// Last known details of a key, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The folded state.
    pub state: State,
    /// SMTP reply code of the last outcome, if it had one.
    pub code: Option<u16>,
    /// Server reply or error text of the last outcome (or why the state is Unknown); empty
    /// if none.
    pub text: String,
    /// When the record that decided `state` was written; `None` for a never-touched key.
    pub at: Option<Timestamp>,
    /// For [`State::Failed`]: the address should be added to the suppression list.
    pub suppress: bool,
    /// What came back after the message was accepted (a later bounce, a complaint), from the
    /// chunk's feedback file; the last such record.
    pub feedback: Option<Feedback>,
}

/// A `B` record's content: what a donor's mailbox or provider reported after acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// Bounce, complaint or unsubscribe.
    pub kind: FeedbackKind,
    /// The enhanced status code of a bounce (`5.1.1`), if the report had one.
    pub status: Option<String>,
    /// The diagnostic or a short description.
    pub text: String,
    /// When it was recorded.
    pub at: Timestamp,
}

impl Entry {
    /// The details of a key with no outcome yet.
    pub(crate) fn pending() -> Entry {
        Entry {
            state: State::Pending,
            code: None,
            text: String::new(),
            at: None,
            suppress: false,
            feedback: None,
        }
    }
}

/// This process's identity in ledger files.
#[derive(Debug, Clone)]
pub struct Session {
    /// Unique id written in every record: start time (UTC, milliseconds), pid and a random
    /// part, e.g. `20261129T234000.123Z-4242-9f3c01ab` (in containers the pid is often 1, so
    /// time and pid alone can repeat across hosts). Older ledgers have ids without the random
    /// part; any token reads. Must be non-empty and free of control characters.
    pub id: String,
    /// The boot id when the session started; `None` where the system has none.
    pub boot_id: Option<String>,
    /// The process id.
    pub pid: u32,
    /// When the session started (truncated to milliseconds, as written).
    pub started: Timestamp,
}

impl Session {
    /// This process's session, started at `now`.
    pub fn new(now: Timestamp) -> Session {
        let started = to_millis(now);
        let pid = std::process::id();
        Session {
            id: format!(
                "{}-{pid}-{:08x}",
                started.strftime("%Y%m%dT%H%M%S%.3fZ"),
                random_u32()
            ),
            boot_id: Session::current_boot_id(),
            pid,
            started,
        }
    }

    /// The kernel's id of the current boot, or `None` where there is none (not Linux, no
    /// `/proc`). Read once per process.
    pub fn current_boot_id() -> Option<String> {
        static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
        BOOT_ID
            .get_or_init(|| {
                let text = std::fs::read_to_string(BOOT_ID_PATH).ok()?;
                let id = text.trim();
                record::is_token(id).then(|| id.to_owned())
            })
            .clone()
    }
}

/// 32 random bits from the standard library's per-process hash keys (seeded by the operating
/// system), enough to tell apart sessions started in the same millisecond with the same pid.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Timestamp::now().as_nanosecond() as u128);
    h.finish() as u32
}

/// Why the ledger could not be read, written or locked. Messages are meant for an operator.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A file system operation failed.
    #[error("delivery ledger {}: {cause}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error: in the message, not chained, so it is printed once.
        cause: std::io::Error,
    },
    /// A complete line does not follow the format.
    #[error(
        "delivery ledger {} line {line}: {reason}. The ledger records who was already mailed, so \
         sending stops instead of guessing; inspect that line (the format is documented in the \
         ledger module) and keep a copy of the file before changing anything",
        path.display()
    )]
    Malformed {
        /// The ledger file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process (or worker) holds the lock.
    #[error(
        "{} is held by {holder}; another `campaign send` is working on this run. Wait for it to \
         finish (or stop it) and run again",
        path.display()
    )]
    Locked {
        /// The locked file.
        path: PathBuf,
        /// Who holds it, as far as known (the lock file's content).
        holder: String,
    },
    /// The templates or `[message]` settings differ from the ones sending started with.
    #[error(
        "the templates or [message] settings changed after this run started sending ({} records the old fingerprint); part of the run already got the old message. Restore the old templates to finish this run, or segment a new run for the new message (it will re-mail donors already sent to unless you pass their addresses to --suppress)",
        path.display()
    )]
    TemplatesChanged {
        /// The fingerprint file.
        path: PathBuf,
    },
    /// The caller passed something that cannot be written to a ledger (a bug, not an
    /// operator problem).
    #[error("delivery ledger: {reason}")]
    Invalid {
        /// What was wrong.
        reason: String,
    },
}

impl LedgerError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: &Path, cause: std::io::Error) -> LedgerError {
        LedgerError::Io {
            path: path.to_owned(),
            cause,
        }
    }
}

/// The ledger file of a chunk: `segments/<segment>/<nnnnn>.csv` → `RUN/ledger/<segment>/<nnnnn>.log`.
///
/// `chunk_file` is the manifest's run-relative path with `/` separators. A path not under
/// `segments/` keeps all its components; a final `.csv` is replaced by `.log`, any other name
/// gets `.log` appended. This only maps names: [`ChunkLedger::open`] and
/// [`ChunkStates::read`] also refuse paths that would leave the ledger directory.
pub fn ledger_path(run: &Path, chunk_file: &str) -> PathBuf {
    let rel = chunk_file
        .strip_prefix(SEGMENTS_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(chunk_file);
    let rel = rel.strip_suffix(".csv").unwrap_or(rel);
    let mut path = run.join(LEDGER_DIR);
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_some() {
            path.push(part);
        } else {
            path.push(format!("{part}.log"));
        }
    }
    path
}

/// Every record about `key` in the chunk's ledger and feedback file, in file order, each as
/// `<timestamp> <what happened>` in words: for a person (`campaign explain`). Lines that do
/// not parse are skipped here; reading the chunk's states reports them.
pub fn history(
    run: &Path,
    chunk_file: &str,
    key: RecipientKey,
) -> Result<Vec<String>, LedgerError> {
    check_chunk_file(chunk_file)?;
    let mut out = Vec::new();
    for path in [ledger_path(run, chunk_file), feedback_path(run, chunk_file)] {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LedgerError::io(&path, e)),
        };
        let mut decoder = record::Decoder::new();
        for line in text.lines() {
            let _ = decoder.line(line, &mut |r| {
                out.extend(record::describe(r, key));
                Ok(())
            });
        }
    }
    Ok(out)
}

/// The feedback file of a chunk: its [`ledger_path`] with `.feedback` for `.log`.
pub fn feedback_path(run: &Path, chunk_file: &str) -> PathBuf {
    ledger_path(run, chunk_file).with_extension("feedback")
}

/// Checks that `chunk_file` maps to a file inside `RUN/ledger/`.
fn check_chunk_file(chunk_file: &str) -> Result<(), LedgerError> {
    let safe = !chunk_file.is_empty()
        && !chunk_file.contains(['\\', '\0', ':'])
        && chunk_file
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if safe {
        Ok(())
    } else {
        Err(LedgerError::Invalid {
            reason: format!(
                "chunk file {chunk_file:?} is not a relative path inside the run directory"
            ),
        })
    }
}

/// `now` truncated to whole milliseconds: the precision written, so that what is kept in
/// memory equals what a later read gives back.
fn to_millis(now: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)
}

/// Makes a directory's entries (a newly created file or subdirectory) durable.
fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LedgerError::io(dir, e))
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened as files elsewhere; their metadata is journaled.
        let _ = dir;
        Ok(())
    }
}
