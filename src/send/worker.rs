//! One worker: a transport of its own, leases from the work source, and for each lease the
//! donors still to send, in batches: render, reserve in the ledger, hand the batch to the
//! transport, record each outcome, retry the deferred after a backoff.
//!
//! Owns the ledger's rule for the send path: a batch's reservations are synced before any of
//! it is offered to the transport, the transmit record is written before each body leaves
//! (the transport's journal call) and no body goes out whose record failed, and reservations
//! not used are released. It never picks its own work (the work source does) and never speaks
//! SMTP (the transport does).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::csvio::OwnedRecord;
use crate::email::RecipientKey;
use crate::ledger::State;
use crate::prepare::{Prepared, Workspace};
use crate::run;
use crate::transport::{Journal, Outbound, Outcome, Transport};

use super::plan::{Lease, SharedLedger, lock};
use super::{OnUnknown, Shared};

/// A donor still to be sent in this process.
struct Todo {
    /// Index into the lease's kept rows.
    row: usize,
    key: RecipientKey,
    attempts: u32,
    /// When it may be tried, on the clock's monotonic time.
    due: Duration,
}

/// A worker thread's state.
pub(super) struct Worker<'s, 'a> {
    sh: &'s Shared<'a>,
    transport: Box<dyn Transport>,
    ws: Workspace,
}

/// Deterministic jitter in [0, 0.5) from the key, so backoff spreads recipients apart
/// without a random source and a test run repeats exactly.
fn jitter(key: RecipientKey, attempt: u32) -> f64 {
    let x = (key.as_u128() as u64).rotate_left(attempt * 7) % 1000;
    x as f64 / 2000.0
}

impl<'s, 'a> Worker<'s, 'a> {
    pub(super) fn new(sh: &'s Shared<'a>, transport: Box<dyn Transport>) -> Self {
        Worker {
            sh,
            transport,
            ws: Workspace::default(),
        }
    }

    /// Works leases until there are none, the budget is spent, or the run halts; closes the
    /// transport either way.
    pub(super) fn run(mut self) -> Result<()> {
        let result = self.work_all();
        self.transport.close();
        result
    }

    fn work_all(&mut self) -> Result<()> {
        let sh = self.sh;
        while !(sh.halted() || sh.source.spent()) {
            let Some(lease) = sh.source.next_lease()? else {
                break;
            };
            self.work(lease)?;
        }
        Ok(())
    }

    /// Everyone in the lease who still needs a message, with retries.
    fn work(&mut self, mut lease: Lease) -> Result<()> {
        let sh = self.sh;
        let seg = lease.segment;
        let chunk = &sh.run.manifest.segments[seg].chunks[lease.chunk];
        let bytes = sh.run.read_chunk(chunk)?;
        // Only rows still to send are kept, parsed, so a retry can render them again.
        let mut rows: Vec<OwnedRecord> = Vec::new();
        let mut todo: Vec<Todo> = Vec::new();
        let now = sh.clock.elapsed();
        let mut index = 0;
        run::for_each_row(&bytes, |rec| {
            index += 1;
            if !lease.rows.contains(&(index - 1)) {
                return Ok(());
            }
            // Segment validated every address, so this is a damaged run, not a bad donor.
            let Some(key) = sh.preparer.key(rec) else {
                bail!(
                    "{}:{}: the row's address cannot be read; segment the export again",
                    chunk.file,
                    rec.line
                );
            };
            let attempts = match lease.state(key) {
                State::Sent | State::Failed => return Ok(()),
                State::Unknown if sh.opts.on_unknown == OnUnknown::Skip => {
                    sh.count(seg, |c| c.skipped_unknown += 1);
                    return Ok(());
                }
                State::Deferred { attempts } => attempts,
                State::Pending | State::Unknown => 0,
            };
            todo.push(Todo {
                row: rows.len(),
                key,
                attempts,
                due: now,
            });
            rows.push(rec.to_owned_record());
            Ok(())
        })?;
        if todo.is_empty() {
            return sh.source.done(lease);
        }
        sh.source.open(&mut lease)?;
        let ledger = Arc::clone(
            lease
                .ledger()
                .ok_or_else(|| anyhow!("internal: the lease's ledger was not opened"))?,
        );
        let mut attempts_here: HashMap<RecipientKey, u32> = HashMap::new();
        while !todo.is_empty() {
            if sh.halted() {
                break;
            }
            // Everything due now, in row order; retries wait for their backoff.
            let now = sh.clock.elapsed();
            let (mut due, later): (Vec<Todo>, Vec<Todo>) =
                todo.into_iter().partition(|t| t.due <= now);
            todo = later;
            if due.is_empty() {
                let next = todo.iter().map(|t| t.due).min().unwrap_or(now);
                // Sleep in short steps so a signal or a halt is noticed.
                sh.clock.sleep((next - now).min(Duration::from_millis(100)));
                continue;
            }
            due.sort_by_key(|t| t.row);
            for batch in due.chunks(sh.opts.batch.max(1)) {
                if sh.halted() {
                    break;
                }
                let allowed = sh.source.take_budget(batch.len() as u64) as usize;
                if allowed == 0 {
                    return sh.source.done(lease);
                }
                let batch = &batch[..allowed];
                for (i, attempts) in self.send_batch(&ledger, seg, &rows, batch)? {
                    let t = &batch[i];
                    let n = attempts_here.entry(t.key).or_insert(0);
                    *n += 1;
                    if *n < sh.opts.max_attempts {
                        let backoff = sh.opts.retry_delay.as_secs_f64()
                            * 2f64.powi(*n as i32 - 1)
                            * (1.0 + jitter(t.key, *n));
                        todo.push(Todo {
                            row: t.row,
                            key: t.key,
                            attempts,
                            due: sh.clock.elapsed() + Duration::from_secs_f64(backoff),
                        });
                    } else {
                        sh.count(seg, |c| c.deferred += 1);
                    }
                }
            }
        }
        // Anyone left waiting for a retry stays deferred for the next run.
        for _ in &todo {
            sh.count(seg, |c| c.deferred += 1);
        }
        sh.source.done(lease)
    }

    /// Renders, reserves and sends one batch; returns the batch indexes to retry, with their
    /// attempt counts.
    fn send_batch(
        &mut self,
        ledger: &SharedLedger,
        seg: usize,
        rows: &[OwnedRecord],
        batch: &[Todo],
    ) -> Result<Vec<(usize, u32)>> {
        let sh = self.sh;
        let segment = &sh.run.manifest.segments[seg];
        let mut ready: Vec<(usize, Prepared)> = Vec::with_capacity(batch.len());
        for (i, t) in batch.iter().enumerate() {
            match sh.preparer.prepare(
                &segment.name,
                &segment.template,
                &rows[t.row].record(),
                &mut self.ws,
            ) {
                Ok(p) => ready.push((i, p)),
                Err(e) => {
                    lock(ledger).failed(
                        t.key,
                        sh.clock.now(),
                        0,
                        &format!("not rendered: {}", e.reason),
                        false,
                    )?;
                    sh.count(seg, |c| c.failed += 1);
                }
            }
        }
        let keys: Vec<RecipientKey> = ready.iter().map(|(i, _)| batch[*i].key).collect();
        lock(ledger).reserve(&keys, sh.clock.now())?;
        let outbound: Vec<Outbound<'_>> = ready
            .iter()
            .map(|(_, p)| Outbound {
                envelope: &p.envelope,
                message: &p.bytes,
            })
            .collect();
        let mut journal = BatchJournal {
            sh,
            ledger,
            seg,
            keys: &keys,
            ready: &ready,
            batch,
            retries: Vec::new(),
            error: None,
        };
        let started = self.transport.send_batch(&outbound, &mut journal);
        let BatchJournal { retries, error, .. } = journal;
        if let Some(e) = error {
            return Err(e);
        }
        if started < keys.len() {
            lock(ledger).release(&keys[started..], sh.clock.now())?;
            sh.source.give_back((keys.len() - started) as u64);
        }
        Ok(retries)
    }
}

/// The ledger side of one batch, called by the transport as it goes.
struct BatchJournal<'j, 's, 'a> {
    sh: &'s Shared<'a>,
    ledger: &'j SharedLedger,
    seg: usize,
    /// The reserved keys, one per message offered.
    keys: &'j [RecipientKey],
    /// Each message's index in `batch`.
    ready: &'j [(usize, Prepared)],
    batch: &'j [Todo],
    retries: Vec<(usize, u32)>,
    /// A ledger write failed: nothing more is sent, and the worker stops with this.
    error: Option<anyhow::Error>,
}

impl BatchJournal<'_, '_, '_> {
    fn record(&mut self, i: usize, outcome: Outcome) -> Result<()> {
        let sh = self.sh;
        let key = self.keys[i];
        let now = sh.clock.now();
        let mut ledger = lock(self.ledger);
        match outcome {
            Outcome::Accepted { reply } => {
                ledger.sent(key, now, 250, &reply)?;
                sh.count(self.seg, |c| c.sent += 1);
            }
            Outcome::Bounced {
                code,
                text,
                suppress,
            } => {
                ledger.failed(key, now, code, &text, suppress)?;
                sh.count(self.seg, |c| c.failed += 1);
            }
            Outcome::Deferred {
                code,
                text,
                throttle,
            } => {
                ledger.deferred(key, now, code, &text)?;
                if throttle {
                    sh.pacer.slow_down();
                }
                let b = self.ready[i].0;
                self.retries.push((b, self.batch[b].attempts + 1));
            }
            Outcome::Unknown { text } => {
                ledger.unknown(key, now, &text)?;
                sh.count(self.seg, |c| c.unknown += 1);
            }
            Outcome::Halt { code, text } => {
                // Not this donor's fault: leave them deferred for the run after the fix.
                ledger.deferred(key, now, code, &text)?;
                sh.halt(match code {
                    Some(c) => format!("{c} {text}"),
                    None => text,
                });
            }
        }
        Ok(())
    }
}

impl Journal for BatchJournal<'_, '_, '_> {
    fn proceed(&mut self, _: usize) -> bool {
        if self.error.is_some() || self.sh.halted() {
            return false;
        }
        self.sh.pacer.wait();
        true
    }

    fn transmitting(&mut self, i: usize) -> std::io::Result<()> {
        lock(self.ledger)
            .transmitting(self.keys[i], self.sh.clock.now())
            .inspect_err(|e| {
                self.error = Some(anyhow!(
                    "writing the ledger failed, so sending stopped: {e}"
                ));
            })
    }

    fn outcome(&mut self, i: usize, outcome: Outcome) {
        // After a failed transmit record the outcome is the transport's halt for it; the
        // worker stops with the ledger's error instead.
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.record(i, outcome) {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let k = crate::email::Address::parse("a@example.org").unwrap().key();
        assert_eq!(jitter(k, 1), jitter(k, 1));
        for a in 1..10 {
            let j = jitter(k, a);
            assert!((0.0..0.5).contains(&j));
        }
    }
}
