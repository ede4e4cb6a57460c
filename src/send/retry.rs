//! Donors deferred in this process, waiting for their retry time, so a deferral never blocks
//! a worker: it goes on with other donors and takes a retry when one is due.
//!
//! Owns the schedule (ordered by due time on the clock's monotonic time) and nothing else: it
//! never decides who is retried or when (the worker computes the backoff) and never touches a
//! ledger, though each entry carries its chunk's open ledger.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::Duration;

use crate::csvio::OwnedRecord;
use crate::email::RecipientKey;

use super::plan::SharedLedger;

/// A donor still to be sent in this process.
pub(super) struct Pending {
    pub(super) key: RecipientKey,
    /// Attempts in this process.
    pub(super) tries: u32,
    /// When the relay last deferred it, on the clock's monotonic time: its backoff counts
    /// from then, not from when its batch was done.
    pub(super) deferred_at: Duration,
    /// The donor's row, kept so a retry renders it again.
    pub(super) row: OwnedRecord,
}

/// A scheduled retry.
pub(super) struct Retry {
    /// When it may be tried, on the clock's monotonic time.
    pub(super) due: Duration,
    pub(super) segment: usize,
    pub(super) chunk: usize,
    pub(super) ledger: SharedLedger,
    pub(super) pending: Pending,
    /// Ties broken by scheduling order, so the schedule is deterministic.
    seq: u64,
}

impl PartialEq for Retry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Retry {}
impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Retry {
    /// Reversed: the heap's top is the earliest due.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The schedule shared by all workers.
#[derive(Default)]
pub(super) struct RetryQueue {
    heap: Mutex<(BinaryHeap<Retry>, u64)>,
}

impl RetryQueue {
    pub(super) fn push(
        &self,
        due: Duration,
        segment: usize,
        chunk: usize,
        ledger: SharedLedger,
        pending: Pending,
    ) {
        let mut h = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        let seq = h.1;
        h.1 += 1;
        h.0.push(Retry {
            due,
            segment,
            chunk,
            ledger,
            pending,
            seq,
        });
    }

    /// Up to `max` retries due at `now`, earliest first.
    pub(super) fn take_due(&self, now: Duration, max: usize) -> Vec<Retry> {
        let mut h = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        while out.len() < max && h.0.peek().is_some_and(|r| r.due <= now) {
            out.extend(h.0.pop());
        }
        out
    }

    /// When the next retry is due, if any is scheduled.
    pub(super) fn next_due(&self) -> Option<Duration> {
        let h = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        h.0.peek().map(|r| r.due)
    }

    /// Everything still scheduled, for the end of the run.
    pub(super) fn drain(&self) -> Vec<Retry> {
        let mut h = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut h.0).into_vec()
    }
}
