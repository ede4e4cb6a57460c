//! Progress as events: the library (segment, the dry run, send) says what it finished, the binary decides how to show it
//! (indicatif bars on a terminal; a remote worker would send the events instead).
//!
//! Owns the event type and the sink trait. It never draws anything.

/// Something the send or render loop finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `donors` more donors of segment `segment` (an index into the manifest's segments) are
    /// handled: sent, failed, unknown or skipped (send), or rendered or failed (dry run).
    Handled {
        /// The manifest's segment index.
        segment: usize,
        /// How many.
        donors: u64,
    },
    /// `segment` has read the export's first `bytes` bytes.
    Read {
        /// Bytes read so far.
        bytes: u64,
    },
}

/// Where events go. Called from worker threads, so it must be cheap and `Sync`.
pub trait Progress: Sync {
    /// One event.
    fn event(&self, event: Event);
}

/// Shows nothing (quiet, JSON output, or no terminal).
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event) {}
}
