//! The halt marker, `RUN/ledger/halt`: a send that the relay halts (a 5.7.x refusal of the
//! sender, or the circuit breaker) writes the server's words there, and every send of the run,
//! on any host, stops before its next batch when it finds the file, and refuses to start while
//! it is there. A person clears it after fixing the cause (`send --clear-halt`).
//!
//! Owns the marker's file and format: a first line saying who halted and when, then the
//! reason. It never decides when to halt (the worker and breaker do).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use jiff::Timestamp;

use crate::rundir::{HALT_MARKER, LEDGER_DIR};

/// The marker's path in `run`.
pub fn path(run: &Path) -> PathBuf {
    run.join(LEDGER_DIR).join(HALT_MARKER)
}

/// The reason a marker holds, if there is one.
pub fn read(run: &Path) -> Result<Option<String>> {
    let p = path(run);
    match fs::read_to_string(&p) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Whether `run` has a marker: one `stat`, cheap enough before every batch.
pub fn present(run: &Path) -> bool {
    path(run).exists()
}

/// Writes the marker, whole (a temporary file renamed over it), unless one is there.
pub fn write(run: &Path, why: &str, now: Timestamp) -> Result<()> {
    let p = path(run);
    if p.exists() {
        return Ok(());
    }
    let (pid, host) = (std::process::id(), crate::rundir::hostname());
    let text = format!(
        "halted by process {pid} on {host} at {now:.0}: {why}\nFix the cause, then run `campaign send RUN --clear-halt` (or delete this file).\n"
    );
    super::reports::write_atomic(&p, text.as_bytes())
}

/// Removes the marker, if there is one.
pub fn clear(run: &Path) -> Result<bool> {
    let p = path(run);
    match fs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}
