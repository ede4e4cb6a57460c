//! Appending what came back after sending (bounces, complaints, unsubscribe replies) to a
//! chunk's feedback file, `RUN/ledger/<segment>/<nnnnn>.feedback`.
//!
//! A separate file from the chunk's ledger, so `campaign bounces --run` never contends with a
//! `send` for the ledger's lock: a mail alias may run it at any moment of a days-long send.
//! The file holds `H` and `B` records in the ledger's format; readers fold it on top of the
//! ledger ([`super::ChunkStates::read`]). Appends take the file's `flock` for the moment of
//! one write and one fsync, so two `bounces` processes never interleave. It never touches the
//! ledger file itself.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use jiff::Timestamp;

use super::record::{self, Event, FeedbackKind, Record};
use super::{LedgerError, Session, check_chunk_file, feedback_path, sync_dir, to_millis};
use crate::email::RecipientKey;

/// One report about a donor, to record.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The donor.
    pub key: RecipientKey,
    /// What came back.
    pub kind: FeedbackKind,
    /// A bounce's enhanced status code (`5.1.1`), if any.
    pub status: Option<&'a str>,
    /// The diagnostic, or a short description.
    pub text: &'a str,
}

/// Appends `reports` for the chunk `chunk_file` with one write, and syncs them before
/// returning. Waits for another process's append to finish (they are short).
pub fn record_feedback(
    run: &Path,
    chunk_file: &str,
    session: &Session,
    reports: &[Report<'_>],
    now: Timestamp,
) -> Result<(), LedgerError> {
    check_chunk_file(chunk_file)?;
    if reports.is_empty() {
        return Ok(());
    }
    let path = feedback_path(run, chunk_file);
    let io = |e| LedgerError::io(&path, e);
    fs::metadata(run).map_err(|e| LedgerError::io(run, e))?;
    let dir = path.parent().unwrap_or(run).to_owned();
    fs::create_dir_all(&dir).map_err(|e| LedgerError::io(&dir, e))?;
    let created = match fs::symlink_metadata(&path) {
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(e)),
    };
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    let at = to_millis(now);
    let mut buf = String::new();
    let mut encoder = record::Encoder::default();
    encoder.encode(
        &Record {
            session: &session.id,
            at,
            event: Event::Start {
                boot_id: session.boot_id.as_deref(),
                pid: session.pid,
                format: record::FORMAT,
            },
        },
        &mut buf,
    );
    for r in reports {
        let status = r.status.map(record::clean_token);
        let text = record::clean_text(r.text);
        encoder.encode(
            &Record {
                session: &session.id,
                at,
                event: Event::Feedback {
                    key: r.key,
                    kind: r.kind,
                    status: status.as_deref(),
                    text: &text,
                },
            },
            &mut buf,
        );
    }
    file.write_all(buf.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    if created {
        sync_dir(&dir)?;
    }
    Ok(())
}
