//! The run directory's layout and its all-or-nothing creation.
//!
//! Owns the names of things inside a run directory and the rule that a run appears complete
//! or not at all: `segment` builds in a hidden staging directory beside the target and renames
//! it into place as its last step, so a crash or an error leaves no directory at the target
//! path. It never writes a run's contents itself.
//!
//! Layout:
//! ```text
//! RUN/manifest.json              written last; see crate::manifest
//! RUN/segments/<segment>/00001.csv
//! RUN/dropped/{rejected,duplicate,suppressed,unmatched}.csv
//! RUN/ledger/                    created by `send`; its presence means sending has started
//! RUN/ledger/lock                the lock a `send` holds on the run
//! RUN/ledger/templates.sha256     the templates' fingerprint when sending started
//! RUN/ledger/halt                why a send halted the run; every send stops until cleared
//! RUN/ledger/shards/, cap/        shard locks and daily-cap claims; see crate::ledger
//! RUN/ledger/<segment>/00001.log  a chunk's delivery ledger; see crate::ledger
//! RUN/ledger/<segment>/00001.feedback  bounces and complaints recorded by `bounces --run`
//! RUN/previews/<segment>/NNN.eml  written by `send --dry-run`
//! RUN/previews/failures.csv       donors a dry run could not render
//! RUN/report.json                 the last send's summary (or `campaign report`'s)
//! RUN/reports/shard-I-of-N.json   the last summary of each `send --shard I/N`
//! RUN/failed.csv                  donors who failed for good, from the ledgers
//! RUN/unknown.csv                 donors whose outcome is unknown, from the ledgers
//! RUN/suppressed.csv              donors a `send --suppress` list stopped, from the ledgers
//! RUN/suppress-bounced.txt        addresses that bounced or complained, for `--suppress`
//! ```
//!
//! Every name inside a run is a constant here; other modules join them, never spell them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The directory of chunk files, one subdirectory per segment.
pub const SEGMENTS_DIR: &str = "segments";
/// The directory of dropped-row files.
pub const DROPPED_DIR: &str = "dropped";
/// The delivery ledger's directory; once it exists the run must never be replaced.
pub const LEDGER_DIR: &str = "ledger";
/// Inside [`LEDGER_DIR`]: why a send halted the run (every send stops until it is cleared).
pub const HALT_MARKER: &str = "halt";
/// Per-shard reports, `shard-I-of-N.json`.
pub const REPORTS_DIR: &str = "reports";
/// Inside [`LEDGER_DIR`]: the lock a `send` holds on the run.
pub const RUN_LOCK: &str = "lock";
/// Inside [`LEDGER_DIR`]: the fingerprint of the templates sending started with.
pub const TEMPLATES_FINGERPRINT: &str = "templates.sha256";
/// The dry run's preview directory, one subdirectory per segment.
pub const PREVIEWS_DIR: &str = "previews";
/// Inside [`PREVIEWS_DIR`]: donors whose message a dry run could not render.
pub const RENDER_FAILURES: &str = "failures.csv";
/// The summary of the last `send`.
pub const REPORT_JSON: &str = "report.json";
/// Donors who failed for good, rewritten from the ledgers after every send.
pub const FAILED_CSV: &str = "failed.csv";
/// Donors whose outcome is unknown, rewritten from the ledgers after every send.
pub const UNKNOWN_CSV: &str = "unknown.csv";
/// Donors a suppression list given to `send` stopped, rewritten from the ledgers after every
/// send.
pub const SUPPRESSED_CSV: &str = "suppressed.csv";
/// Addresses that bounced for good, in the format `--suppress` reads.
pub const SUPPRESS_BOUNCED: &str = "suppress-bounced.txt";

/// Why an existing run directory may not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// It exists and `--force` was not given.
    #[error(
        "{} already exists; pick another --out, or add --force to replace it (only possible before sending has started)",
        .0.display()
    )]
    Exists(PathBuf),
    /// It has a ledger: donors may already have been mailed.
    #[error(
        "{} has a delivery ledger: sending has started, and replacing it could mail donors twice. Keep it, and segment into a new directory",
        .0.display()
    )]
    Sending(PathBuf),
    /// It is not a run directory.
    #[error(
        "{} exists and is not a campaign run (no {MANIFEST}); refusing to replace it even with --force",
        .0.display()
    )]
    NotARun(PathBuf),
}

/// Checks whether `target` may be created or replaced.
pub fn check_replace(target: &Path, force: bool) -> Result<(), ReplaceError> {
    match fs::symlink_metadata(target) {
        Err(_) => Ok(()),
        Ok(_) if !force => Err(ReplaceError::Exists(target.to_owned())),
        Ok(_) if target.join(LEDGER_DIR).exists() => Err(ReplaceError::Sending(target.to_owned())),
        Ok(_) if !target.join(MANIFEST).is_file() => Err(ReplaceError::NotARun(target.to_owned())),
        Ok(_) => Ok(()),
    }
}

/// A run being built. Dropping it without [`Staging::commit`] removes everything it wrote.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    force: bool,
    committed: bool,
}

fn sibling(target: &Path, tag: &str) -> Result<PathBuf> {
    let name = target
        .file_name()
        .with_context(|| format!("{} does not name a directory", target.display()))?;
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(format!(".{tag}-{}", std::process::id()));
    Ok(target.with_file_name(hidden))
}

impl Staging {
    /// Creates a hidden staging directory beside `target`, after checking `target` may be
    /// created (or, with `force`, replaced).
    pub fn create(target: &Path, force: bool) -> Result<Staging> {
        check_replace(target, force)?;
        let parent = parent_of(target);
        if !parent.is_dir() {
            bail!(
                "the parent directory of {} does not exist; create {} first",
                target.display(),
                parent.display()
            );
        }
        remove_dead_staging(target);
        let dir = sibling(target, "partial")?;
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale staging directory {}", dir.display()))?;
        }
        fs::create_dir(&dir)
            .with_context(|| format!("creating staging directory {}", dir.display()))?;
        Ok(Staging {
            dir,
            target: target.to_owned(),
            force,
            committed: false,
        })
    }

    /// Where to write the run's files.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves the finished run into place. The caller has written every file and synced the
    /// manifest.
    ///
    /// Replacing a run swaps the two directories in one atomic rename (Linux's
    /// `RENAME_EXCHANGE`), so a crash at any point leaves the old run or the new one whole at
    /// the target; the old one, then in the staging directory, is removed after, or by the
    /// next `segment` if this process died first. Where the swap is not supported the old run
    /// is moved aside first, and [`recover`] puts it back if the process dies between the two
    /// renames.
    pub fn commit(mut self) -> Result<()> {
        // Sending may have started on the old run while we were segmenting: check again.
        check_replace(&self.target, self.force)?;
        sync_dir(&self.dir)?;
        let parent = parent_of(&self.target).to_owned();
        if self.target.exists() {
            fault_point("segment-before-swap");
            if exchange(&self.dir, &self.target)? {
                // The target is the new run; the staging directory now holds the old one,
                // which dropping `self` removes.
                sync_dir(&parent)?;
                fault_point("segment-after-swap");
                return Ok(());
            }
            let old = sibling(&self.target, REPLACED)?;
            fs::rename(&self.target, &old)
                .with_context(|| format!("moving the old run {} aside", self.target.display()))?;
            fault_point("segment-between-renames");
            fs::rename(&self.dir, &self.target)
                .with_context(|| format!("moving the new run into {}", self.target.display()))?;
            self.committed = true;
            sync_dir(&parent)?;
            fs::remove_dir_all(&old)
                .with_context(|| format!("removing the replaced run at {}", old.display()))?;
        } else {
            fs::rename(&self.dir, &self.target)
                .with_context(|| format!("moving the new run into {}", self.target.display()))?;
            self.committed = true;
            sync_dir(&parent)?;
        }
        Ok(())
    }
}

/// The directory holding `target` (`.` for a bare name).
fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The tag of an old run moved aside while its replacement moves in.
const REPLACED: &str = "replaced";

/// Swaps two directories atomically; `false` where the system or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => Ok(false),
        Err(e) => Err(std::io::Error::from(e))
            .with_context(|| format!("swapping the new run into {}", b.display())),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> Result<bool> {
    Ok(false)
}

/// This host's name, for the lock files and temporary names a person or another host reads.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

/// A name beside `path` for writing it before it is renamed or linked into place, private to
/// this process on this host: hosts sharing a run each have their own process ids, and
/// containers often the same ones (a shard is pid 1 in every pod), so the pid alone would
/// let two writers share one temporary file.
pub fn temporary_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{}.tmp", host_in_names(), std::process::id()));
    path.with_file_name(name)
}

/// [`hostname`] as it goes into a file name: letters, digits and `-`, anything else `_`.
fn host_in_names() -> String {
    hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A crash point for tests: with `CAMPAIGN_FAULT=<name>` in the environment of a debug
/// build, the process aborts here, as a `kill -9` would stop it. Release builds have none.
fn fault_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var_os("CAMPAIGN_FAULT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

/// Puts back a run that a crashed `segment --force` moved aside and had not yet replaced
/// (see [`Staging::commit`]): when `target` is missing and the moved-aside run's process is
/// gone, it is renamed back. Called before a run is read or replaced.
pub fn recover(target: &Path) -> Result<()> {
    if fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    for (path, pid) in leftovers(target, REPLACED) {
        if !alive(pid) {
            fs::rename(&path, target).with_context(|| {
                format!(
                    "restoring the run {} from {}, where a segment that did not finish left it",
                    target.display(),
                    path.display()
                )
            })?;
            sync_dir(parent_of(target))?;
            return Ok(());
        }
    }
    Ok(())
}

/// Hidden siblings of `target` with `tag` (`.RUN.<tag>-PID`), with their process ids.
fn leftovers(target: &Path, tag: &str) -> Vec<(PathBuf, u32)> {
    let Some(name) = target.file_name() else {
        return Vec::new();
    };
    let prefix = format!(".{}.{tag}-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent_of(target)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<u32>()
                .ok()?;
            Some((e.path(), pid))
        })
        .collect()
}

/// Whether process `pid` runs; `true` where `/proc` cannot tell, so nothing is touched.
fn alive(pid: u32) -> bool {
    !Path::new("/proc/self").exists() || Path::new("/proc").join(pid.to_string()).exists()
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes staging directories of `target` left by processes that no longer run (a crash or
/// `kill -9`), so they do not pile up. Best effort, and only where `/proc` tells which
/// processes are alive; a staging directory of a live process is never touched.
fn remove_dead_staging(target: &Path) {
    for (path, pid) in leftovers(target, "partial") {
        if !alive(pid) {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// Makes a directory's entries (new files, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary name stays beside its file, and names this host and process, so writers on
    /// two hosts with the same pid never share one.
    #[test]
    fn a_temporary_name_is_this_hosts_and_processes() {
        let t = temporary_beside(Path::new("/run/x/ledger/halt"));
        assert_eq!(t.parent(), Some(Path::new("/run/x/ledger")));
        let name = t.file_name().unwrap().to_str().unwrap();
        let host = host_in_names();
        assert!(!host.is_empty() && !host.contains(['/', '.']), "{host}");
        assert_eq!(name, format!("halt.{host}.{}.tmp", std::process::id()));
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("run");
        {
            let s = Staging::create(&target, false).unwrap();
            fs::write(s.path().join("x"), "y").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn replace_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("run");
        fs::create_dir(&target).unwrap();
        assert!(matches!(
            check_replace(&target, false),
            Err(ReplaceError::Exists(_))
        ));
        assert!(matches!(
            check_replace(&target, true),
            Err(ReplaceError::NotARun(_))
        ));
        fs::write(target.join(MANIFEST), "{}").unwrap();
        assert!(check_replace(&target, true).is_ok());
        fs::create_dir(target.join(LEDGER_DIR)).unwrap();
        assert!(matches!(
            check_replace(&target, true),
            Err(ReplaceError::Sending(_))
        ));
    }

    #[test]
    fn commit_replaces_an_unsent_run() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("run");
        fs::create_dir(&target).unwrap();
        fs::write(target.join(MANIFEST), "old").unwrap();
        let s = Staging::create(&target, true).unwrap();
        fs::write(s.path().join(MANIFEST), "new").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read_to_string(target.join(MANIFEST)).unwrap(), "new");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
