//! One `send` per run at a time ([`RunLock`]).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::{LedgerError, sync_dir, to_millis};
use crate::rundir::{LEDGER_DIR, RUN_LOCK};

/// Prevents two `send` processes on one run (cron overlap): an exclusive lock on
/// `RUN/ledger/lock`, held until drop.
///
/// The lock is the operating system's (`flock` on Unix), so it disappears with the process:
/// a crashed `send` never leaves a stale lock behind. The file's content is informational
/// only, the holder's `pid <pid>, started <RFC 3339>` line, shown to whoever is refused.
#[derive(Debug)]
pub struct RunLock {
    /// Kept open: closing it releases the lock.
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the run's lock, creating `RUN/ledger/` if needed (which marks the run as
    /// sending; see [`crate::rundir`]). Fails with [`LedgerError::Locked`] at once, without
    /// waiting, when another process holds it.
    pub fn acquire(run: &Path) -> Result<RunLock, LedgerError> {
        let dir = run.join(LEDGER_DIR);
        // `create_dir`, not `create_dir_all`: a mistyped run path must not be created.
        match fs::create_dir(&dir) {
            Ok(()) => sync_dir(run)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(LedgerError::io(&dir, e)),
        }
        let path = dir.join(RUN_LOCK);
        let io = |e| LedgerError::io(&path, e);
        // Not truncated on open: the content belongs to whoever holds the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder may be rewriting it right now; the content is only a hint.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("another process ({holder})")
                };
                return Err(LedgerError::Locked { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let info = format!(
            "pid {}, started {:.3}\n",
            std::process::id(),
            to_millis(Timestamp::now())
        );
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(info.as_bytes()).map_err(io)?;
        Ok(RunLock { file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first is just explicit.
        let _ = self.file.unlock();
    }
}
