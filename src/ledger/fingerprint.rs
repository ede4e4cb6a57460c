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
/// lock.
pub fn record_templates(run: &Path, fingerprint: &str) -> Result<(), LedgerError> {
    check_templates(run, fingerprint)?;
    let path = fingerprint_path(run);
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(LedgerError::io(&path, e)),
    };
    file.write_all(format!("{fingerprint}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| LedgerError::io(&path, e))?;
    sync_dir(path.parent().unwrap_or(run))
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
