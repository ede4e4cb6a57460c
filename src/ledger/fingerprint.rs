//! The fingerprint of the templates a run started sending with (`RUN/ledger/templates.sha256`).
//!
//! Half a run mailed with one message and half with another is a mistake nobody meant, so the
//! first real send records the fingerprint and every later send (and dry run) compares it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{LedgerError, sync_dir};
use crate::rundir::{LEDGER_DIR, TEMPLATES_FINGERPRINT};

fn fingerprint_path(run: &Path) -> PathBuf {
    run.join(LEDGER_DIR).join(TEMPLATES_FINGERPRINT)
}

/// Checks `fingerprint` is the one sending started with; a run that has not started sending
/// has none recorded and passes.
pub fn check_templates(run: &Path, fingerprint: &str) -> Result<(), LedgerError> {
    let path = fingerprint_path(run);
    match fs::read_to_string(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LedgerError::io(&path, e)),
        Ok(recorded) if recorded.trim() == fingerprint => Ok(()),
        Ok(_) => Err(LedgerError::TemplatesChanged { path }),
    }
}

/// Checks the fingerprint like [`check_templates`] and records it if none is, durably (file
/// and directory entry synced), before the first message leaves. Call it holding the run's
/// lock (shards hold it shared, so several may record at once).
pub fn record_templates(run: &Path, fingerprint: &str) -> Result<(), LedgerError> {
    check_templates(run, fingerprint)?;
    let path = fingerprint_path(run);
    if path.exists() {
        return Ok(());
    }
    // Written whole under a name of our own, then linked into place: a shard starting beside
    // this one sees no file or the whole file, never a half-written one, and of two shards
    // recording at once the second compares against the first.
    let tmp = crate::rundir::temporary_beside(&path);
    let io = |e| LedgerError::io(&tmp, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(format!("{fingerprint}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(path.parent().unwrap_or(run)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_templates(run, fingerprint),
        Err(e) => Err(LedgerError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_once_then_compared() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        fs::create_dir(run.join(LEDGER_DIR)).unwrap();
        check_templates(run, "aaa").unwrap();
        record_templates(run, "aaa").unwrap();
        record_templates(run, "aaa").unwrap();
        assert_eq!(fs::read_to_string(fingerprint_path(run)).unwrap(), "aaa\n");
        let e = check_templates(run, "bbb").unwrap_err();
        assert!(matches!(e, LedgerError::TemplatesChanged { .. }), "{e}");
        assert!(e.to_string().contains("templates.sha256"), "{e}");
        assert!(record_templates(run, "bbb").is_err());
    }
}
