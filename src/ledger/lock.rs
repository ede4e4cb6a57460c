//! Who may send from a run at once: one plain `send`, or any number of `send --shard`
//! processes of one shard count, one per shard ([`RunLock`], [`ShardLock`]).
//!
//! All of them are the operating system's `flock` locks on files under `RUN/ledger/`, so
//! they vanish with the process (a crashed `send` never leaves a stale lock) and, on a file
//! system whose locks reach every host (local disks, NFSv4, CephFS, Lustre with `flock`),
//! they fence processes on different hosts as well.
//!
//! [`holders`] tells who is sending now (for `status`) by taking each lock for an instant and
//! letting go; a `send` that starts in that instant waits a moment for it
//! ([`try_lock_patiently`]) instead of being refused.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::{LedgerError, sync_dir, to_millis};
use crate::rundir::{LEDGER_DIR, RUN_LOCK, hostname};

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

/// How a process holds the run's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// A plain `send`: alone on the run.
    Exclusive,
    /// A `send --shard`: beside the other shards, never beside a plain `send`.
    Shared,
}

impl RunLock {
    /// Takes the run's lock exclusively (see [`RunLock::acquire_as`]).
    pub fn acquire(run: &Path) -> Result<RunLock, LedgerError> {
        RunLock::acquire_as(run, LockMode::Exclusive)
    }

    /// Takes the run's lock, creating `RUN/ledger/` if needed (which marks the run as
    /// sending; see [`crate::rundir`]). Fails with [`LedgerError::Locked`] at once, without
    /// waiting, when another process holds it in a way that excludes `mode`.
    pub fn acquire_as(run: &Path, mode: LockMode) -> Result<RunLock, LedgerError> {
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
        match try_lock_patiently(&file, mode) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = holder_line(&mut file);
                let holder = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("another process ({holder})")
                };
                return Err(LedgerError::Locked { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        if mode == LockMode::Shared {
            // Shards share the file: its content names the last plain send, if any.
            return Ok(RunLock { file, path });
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

/// A shard's own locks: exclusive on `RUN/ledger/shards/I-of-N.lock` (one process per shard;
/// a scheduler may start two for one index) and shared on `RUN/ledger/shards/of-N.lock`,
/// which a shard of another count finds held and is refused (a run's chunks are dealt out by
/// one count at a time).
#[derive(Debug)]
pub struct ShardLock {
    _own: File,
    _count: File,
}

/// The directory of the shard locks, inside the ledger directory.
const SHARDS_DIR: &str = "shards";

impl ShardLock {
    /// Takes shard `index` of `count`; the run's lock must already be held shared.
    pub fn acquire(run: &Path, index: u32, count: u32) -> Result<ShardLock, LedgerError> {
        let dir = run.join(LEDGER_DIR).join(SHARDS_DIR);
        fs::create_dir_all(&dir).map_err(|e| LedgerError::io(&dir, e))?;
        let open = |name: &str| -> Result<(File, PathBuf), LedgerError> {
            let path = dir.join(name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| LedgerError::io(&path, e))?;
            Ok((file, path))
        };
        let (count_file, count_path) = open(&format!("of-{count}.lock"))?;
        match count_file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: count_path,
                    holder: format!(
                        "a shard of another shard count checking this one (shards of {count} are starting beside another count)"
                    ),
                });
            }
            Err(TryLockError::Error(e)) => return Err(LedgerError::io(&count_path, e)),
        }
        // Taken our count first, then look for another: of two counts starting at once, at
        // least one sees the other.
        for entry in fs::read_dir(&dir).map_err(|e| LedgerError::io(&dir, e))? {
            let entry = entry.map_err(|e| LedgerError::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(other) = name
                .strip_prefix("of-")
                .and_then(|n| n.strip_suffix(".lock"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if other == count {
                continue;
            }
            let path = entry.path();
            let f = File::open(&path).map_err(|e| LedgerError::io(&path, e))?;
            match f.try_lock() {
                Ok(()) => {
                    let _ = f.unlock();
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LedgerError::Locked {
                        path,
                        holder: format!(
                            "shards of {other} (a run is sent with one shard count at a time; wait for them to finish, then send with --shard I/{count})"
                        ),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(LedgerError::io(&path, e)),
            }
        }
        let (mut own, own_path) = open(&format!("{index}-of-{count}.lock"))?;
        match try_lock_patiently(&own, LockMode::Exclusive) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: own_path,
                    holder: format!(
                        "another process for shard {index}/{count} ({})",
                        holder_line(&mut own)
                    ),
                });
            }
            Err(TryLockError::Error(e)) => return Err(LedgerError::io(&own_path, e)),
        }
        let info = format!(
            "pid {} on {}, started {:.3}\n",
            std::process::id(),
            hostname(),
            to_millis(Timestamp::now())
        );
        let io = |e| LedgerError::io(&own_path, e);
        own.set_len(0).map_err(io)?;
        own.seek(SeekFrom::Start(0)).map_err(io)?;
        own.write_all(info.as_bytes()).map_err(io)?;
        Ok(ShardLock {
            _own: own,
            _count: count_file,
        })
    }
}

/// A `flock` that is retried for a moment when held: [`holders`] (a `status`) holds each
/// lock for an instant, and a `send` starting then must not take it for another send.
fn try_lock_patiently(file: &File, mode: LockMode) -> Result<(), TryLockError> {
    let mut tries = 0;
    loop {
        match try_lock_as(file, mode) {
            Err(TryLockError::WouldBlock) if tries < PATIENCE => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// One `flock` attempt in `mode`, without waiting.
fn try_lock_as(file: &File, mode: LockMode) -> Result<(), TryLockError> {
    match mode {
        LockMode::Exclusive => file.try_lock(),
        LockMode::Shared => file.try_lock_shared(),
    }
}

/// The holder's line in a lock file, trimmed; empty when unwritten. The holder may be
/// rewriting it right now, so the content is only a hint and a failed read gives what was read.
fn holder_line(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    holder.trim().to_owned()
}

/// How many 10 ms waits [`try_lock_patiently`] makes: far longer than a probe holds a lock.
const PATIENCE: u32 = 5;

/// A process sending from a run now, as its lock file describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// `None` for a plain `send`; `I/N` for a shard.
    pub shard: Option<String>,
    /// The lock file's line: `pid <pid>[ on <host>], started <time>`, or empty if unwritten.
    pub holder: String,
}

/// Who is sending from `run` now: a plain `send` or each running shard. Reads without
/// creating anything; a run that never sent has no holders.
pub fn holders(run: &Path) -> Result<Vec<Holder>, LedgerError> {
    let dir = run.join(LEDGER_DIR);
    let mut out = Vec::new();
    if let Some(holder) = probe(&dir.join(RUN_LOCK), LockMode::Shared)? {
        out.push(Holder {
            shard: None,
            holder,
        });
    }
    let shards = dir.join(SHARDS_DIR);
    let entries = match fs::read_dir(&shards) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LedgerError::io(&shards, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LedgerError::io(&shards, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let shard = name
            .strip_suffix(".lock")
            .and_then(|n| n.split_once("-of-"))
            .and_then(|(i, n)| Some((i.parse::<u32>().ok()?, n.parse::<u32>().ok()?)));
        if let Some(shard) = shard {
            names.push((shard, entry.path()));
        }
    }
    names.sort();
    for ((index, count), path) in names {
        if let Some(holder) = probe(&path, LockMode::Exclusive)? {
            out.push(Holder {
                shard: Some(format!("{index}/{count}")),
                holder,
            });
        }
    }
    Ok(out)
}

/// The lock file's content if another process holds the lock against `mode`; the lock is
/// let go at once when it is free.
fn probe(path: &Path, mode: LockMode) -> Result<Option<String>, LedgerError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LedgerError::io(path, e)),
    };
    match try_lock_as(&file, mode) {
        Ok(()) => {
            let _ = file.unlock();
            Ok(None)
        }
        Err(TryLockError::WouldBlock) => Ok(Some(holder_line(&mut file))),
        Err(TryLockError::Error(e)) => Err(LedgerError::io(path, e)),
    }
}
