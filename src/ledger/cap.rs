//! The daily cap across processes: every `send` of a run (one, or many shards on many hosts)
//! claims messages from the day's cap before it starts them, under one lock, so the run never
//! starts more than the cap in a UTC day, crashes included.
//!
//! ```text
//! RUN/ledger/cap/<YYYY-MM-DD>/lock                the lock a claim is made under
//! RUN/ledger/cap/<YYYY-MM-DD>/baseline.claims     messages sent that day before any claim
//! RUN/ledger/cap/<YYYY-MM-DD>/<session>.claims    one line per claim: "+N", or "-N" given back
//! ```
//!
//! Each session appends only to its own file; the day's use is the sum of every file. A claim
//! is synced before the messages it covers start, so a crash can leave part of a claim unused
//! (the cap is then not reached that day), never uncounted. The first claim of a day writes
//! the baseline from the ledgers' `S` records, so sends from before this file existed count.
//! It never reads or writes a chunk's ledger.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::civil::Date;

use super::{LedgerError, sync_dir};
use crate::rundir::LEDGER_DIR;

/// One session's claims on one day's cap.
#[derive(Debug)]
pub struct CapClaims {
    dir: PathBuf,
    own: PathBuf,
    cap: u64,
}

impl CapClaims {
    /// The claims of `session` on `day`'s `cap` in `run`.
    pub fn new(run: &Path, day: Date, session: &str, cap: u64) -> CapClaims {
        let dir = run
            .join(LEDGER_DIR)
            .join("cap")
            .join(day.strftime("%Y-%m-%d").to_string());
        CapClaims {
            own: dir.join(format!("{session}.claims")),
            dir,
            cap,
        }
    }

    /// Claims up to `want` messages; returns how many the day's cap still allowed (0 when it
    /// is spent). `sent_before` counts the day's messages from the ledgers, asked only by the
    /// day's first claim.
    pub fn claim(
        &self,
        want: u64,
        sent_before: &dyn Fn() -> Result<u64, LedgerError>,
    ) -> Result<u64, LedgerError> {
        if want == 0 {
            return Ok(0);
        }
        let _lock = self.lock()?;
        let baseline = self.dir.join("baseline.claims");
        if !baseline.exists() {
            let n = sent_before()?;
            write_synced(&baseline, &format!("+{n}\n"))?;
            sync_dir(&self.dir)?;
        }
        let used = self.used()?;
        let take = want.min(self.cap.saturating_sub(used));
        if take > 0 {
            self.append(&format!("+{take}\n"))?;
        }
        Ok(take)
    }

    /// Gives back `n` messages claimed but not started.
    pub fn give_back(&self, n: u64) -> Result<(), LedgerError> {
        if n == 0 {
            return Ok(());
        }
        let _lock = self.lock()?;
        self.append(&format!("-{n}\n"))
    }

    /// The day's messages claimed so far, by every session.
    pub fn used(&self) -> Result<u64, LedgerError> {
        let mut total: i128 = 0;
        for entry in fs::read_dir(&self.dir).map_err(|e| LedgerError::io(&self.dir, e))? {
            let path = entry.map_err(|e| LedgerError::io(&self.dir, e))?.path();
            if path.extension().is_none_or(|e| e != "claims") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|e| LedgerError::io(&path, e))?;
            for (i, line) in text.lines().enumerate() {
                let n = line
                    .strip_prefix('+')
                    .map(|n| n.parse::<i128>())
                    .or_else(|| {
                        line.strip_prefix('-')
                            .map(|n| n.parse::<i128>().map(|v| -v))
                    });
                match n {
                    Some(Ok(v)) => total += v,
                    _ => {
                        return Err(LedgerError::Malformed {
                            path,
                            line: i + 1,
                            reason: format!(
                                "{line:?} is not a claim (+N or -N); the daily cap cannot be kept without it"
                            ),
                        });
                    }
                }
            }
        }
        Ok(total.max(0) as u64)
    }

    fn lock(&self) -> Result<File, LedgerError> {
        fs::create_dir_all(&self.dir).map_err(|e| LedgerError::io(&self.dir, e))?;
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LedgerError::io(&path, e))?;
        // Held for a read of small files and one fsync: waiting is short.
        f.lock().map_err(|e| LedgerError::io(&path, e))?;
        Ok(f)
    }

    fn append(&self, line: &str) -> Result<(), LedgerError> {
        let created = !self.own.exists();
        write_synced(&self.own, line)?;
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Appends `text` to `path` with one write, then syncs it.
fn write_synced(path: &Path, text: &str) -> Result<(), LedgerError> {
    let io = |e| LedgerError::io(path, e);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}
