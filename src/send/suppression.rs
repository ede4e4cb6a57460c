//! The suppression lists a send honours on top of segment's: read at start and again every
//! [`SuppressionWatch::EVERY`] while the send runs, so an unsubscribe made mid-campaign stops
//! that donor's message if it has not left yet.
//!
//! Owns when the lists are re-read and which version workers see. It never decides what a
//! list means ([`crate::suppress`] does) and never writes the ledger (the worker records a
//! suppressed donor).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::suppress::Suppressions;

/// The lists given to `send --suppress` and `[send] suppress`, as last read.
pub struct SuppressionWatch {
    paths: Vec<PathBuf>,
    every: Duration,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    list: Arc<Suppressions>,
    /// The clock's elapsed time at which to read the lists again.
    next: Duration,
}

impl SuppressionWatch {
    /// How often the lists are read again during a send.
    pub const EVERY: Duration = Duration::from_secs(60);

    /// Reads every list now (`now` is the clock's elapsed time); the error names the file.
    pub fn load(paths: Vec<PathBuf>, every: Duration, now: Duration) -> Result<SuppressionWatch> {
        let list = Suppressions::load(&paths)?;
        Ok(SuppressionWatch {
            paths,
            every,
            loaded: Mutex::new(Loaded {
                list: Arc::new(list),
                next: now + every,
            }),
        })
    }

    /// The lists as first read (for the warnings about entries that are not addresses).
    pub fn current(&self) -> Arc<Suppressions> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&loaded.list)
    }

    /// The lists, read again first when the interval has passed. A list that can no longer be
    /// read stops the send: an unsubscribe it holds could not be honoured.
    pub fn at(&self, now: Duration) -> Result<Arc<Suppressions>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now >= loaded.next {
            let list = Suppressions::load(&self.paths).context(
                "reading the suppression lists again during the send (they are re-read every minute, so a list must stay readable while a send runs; replace it by renaming a new file over it)",
            )?;
            loaded.list = Arc::new(list);
            loaded.next = now + self.every;
        }
        Ok(Arc::clone(&loaded.list))
    }

    /// The files watched.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}
