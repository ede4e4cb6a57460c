//! A suppression list appended to: the endpoint's `--out FILE`, and `campaign bounces --out`.
//!
//! Owns opening such a file and appending addresses to it durably. It never reads the list
//! back, never removes or deduplicates entries (a donor who clicks twice is listed twice, which
//! `--suppress` ignores; `campaign bounces` leaves out what the list holds before it appends),
//! and never writes anything but whole lines of normalised addresses, and a comment line
//! opening a file it creates when asked.
//!
//! # Format
//!
//! The plain list `campaign segment --suppress` and `campaign send --suppress` read: UTF-8,
//! one normalised address (trimmed, lowercased: [`crate::email::normalise`]) per line, each
//! ending in `\n`, in the order the unsubscribes arrived. The file is created mode 0600 (it
//! holds donors' addresses).
//!
//! # Whole lines
//!
//! Each address, or each set of them, is appended by one `write(2)` on a descriptor opened
//! `O_APPEND`, while this process holds a mutex and an exclusive `flock` on the file, and is
//! `fsync`ed before [`SuppressionList::append`] returns. So concurrent requests, and two servers given the same
//! file, never interleave lines, and an unsubscribe answered 200 survives a power cut. The
//! file is opened anew for each address: a list moved away or deleted by an operator is
//! recreated rather than written into a file nobody reads.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why an address could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file could not be opened, locked, written or synced.
    #[error("cannot append to the suppression list {}: {cause}; check the disk and the file's permissions", path.display())]
    Io {
        /// The list.
        path: PathBuf,
        /// The cause: in the message, not chained, so it is printed once.
        cause: std::io::Error,
    },
    /// `--out` names something that is not a regular file.
    #[error("the suppression list {} is not a regular file; give --out a file path", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A line break in what should be an address (a bug: addresses are validated first).
    #[error("internal: refusing to append a value with a line break to {}", path.display())]
    LineBreak {
        /// The list.
        path: PathBuf,
    },
}

/// The `--out` file, appended to line by line.
#[derive(Debug)]
pub struct SuppressionList {
    path: PathBuf,
    /// One writer at a time within this process; `flock` does the same across processes.
    lock: Mutex<()>,
}

impl SuppressionList {
    /// Opens (creating it if missing) the list, so that a path that cannot be written is
    /// refused at start rather than at the first unsubscribe.
    ///
    /// # Errors
    /// When the file cannot be created or opened for appending, or is not a regular file.
    pub fn open(path: &Path) -> Result<SuppressionList, ListError> {
        let list = SuppressionList {
            path: path.to_owned(),
            lock: Mutex::new(()),
        };
        list.open_file()?;
        Ok(list)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, cause: std::io::Error) -> ListError {
        ListError::Io {
            path: self.path.clone(),
            cause,
        }
    }

    /// Opens the file for appending, creating it (and making its directory entry durable)
    /// when missing.
    fn open_file(&self) -> Result<File, ListError> {
        let existed = self.path.exists();
        let mut options = OpenOptions::new();
        // Read too: the last byte is checked before appending.
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(&self.path).map_err(|e| self.io(e))?;
        if !file.metadata().map_err(|e| self.io(e))?.is_file() {
            return Err(ListError::NotAFile {
                path: self.path.clone(),
            });
        }
        if !existed {
            // The new name must survive a crash as well as the line written into it.
            let dir = match self.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io(e))?;
        }
        Ok(file)
    }

    /// Appends `address` (already normalised) as one line and syncs the file.
    ///
    /// Blocking (it waits for the disk): call it off the async threads.
    ///
    /// # Errors
    /// When the file cannot be opened, locked, written or synced; the line may then be
    /// missing, never half-written by this process.
    pub fn append(&self, address: &str) -> Result<(), ListError> {
        self.append_all(&[address], None)
    }

    /// Appends `addresses` (already normalised), a line each, with one write and one sync.
    /// A list found empty gets `header` (a `#` comment, without its line break) first.
    ///
    /// # Errors
    /// As [`SuppressionList::append`]; none of the lines is then written by this process.
    pub fn append_all(&self, addresses: &[&str], header: Option<&str>) -> Result<(), ListError> {
        if addresses
            .iter()
            .chain(header.as_ref())
            .any(|a| a.contains(['\n', '\r']))
        {
            return Err(ListError::LineBreak {
                path: self.path.clone(),
            });
        }
        // A poisoned mutex only means another append panicked; the file is still whole.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.open_file()?;
        lock_exclusive(&file).map_err(|e| self.io(e))?;
        let mut text =
            String::with_capacity(addresses.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
        let len = file.metadata().map_err(|e| self.io(e))?.len();
        if len == 0 {
            if let Some(h) = header {
                text.push_str(h);
                text.push('\n');
            }
        } else if !ends_with_newline(&file, len).map_err(|e| self.io(e))? {
            // A list edited by hand may lack its final newline; without one the first
            // address would be glued to the last one and both would stop matching.
            text.push('\n');
        }
        for a in addresses {
            text.push_str(a);
            text.push('\n');
        }
        file.write_all(text.as_bytes()).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        // Closing the file releases the flock.
        Ok(())
    }
}

/// Whether the file, `len` bytes long, is empty or ends in `\n`.
fn ends_with_newline(file: &File, len: u64) -> std::io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt as _;
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        Ok(last[0] == b'\n')
    }
    #[cfg(not(unix))]
    {
        Ok(true)
    }
}

/// An exclusive `flock`, so a second server on the same file waits its turn.
#[cfg(target_os = "linux")]
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive).map_err(Into::into)
}

/// Elsewhere `O_APPEND` writes of one short line are still whole; only the mutex orders them.
#[cfg(not(target_os = "linux"))]
fn lock_exclusive(_file: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_whole_lines_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unsubscribed.txt");
        let list = SuppressionList::open(&path).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let list = &list;
                s.spawn(move || {
                    for i in 0..25 {
                        list.append(&format!("donor-{t}-{i}@example.org")).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 200);
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 200);
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("donor-") && l.ends_with("@example.org"))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_list_without_its_last_newline_gets_one_and_a_removed_list_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "old@example.org").unwrap();
        let list = SuppressionList::open(&path).unwrap();
        list.append("new@example.org").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old@example.org\nnew@example.org\n"
        );
        std::fs::remove_file(&path).unwrap();
        list.append("after@example.org").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "after@example.org\n"
        );
        assert!(matches!(
            list.append("a@example.org\nb@example.org"),
            Err(ListError::LineBreak { .. })
        ));
    }

    #[test]
    fn a_directory_or_missing_parent_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let e = SuppressionList::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("regular file") || e.contains("Is a directory"),
            "{e}"
        );
        let e = SuppressionList::open(&dir.path().join("no/such/list.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot append") && e.contains("list.txt"), "{e}");
    }
}
