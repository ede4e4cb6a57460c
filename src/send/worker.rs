//! One worker: a transport of its own, leases from the work source, and for each lease the
//! donors still to send, in batches: render, reserve in the ledger, hand the batch to the
//! transport, record each outcome. A deferred donor goes to the shared retry schedule and
//! the worker goes on; it takes retries as they fall due, and waits for them only when no
//! other work is left, within the run's bound (`--max-wait`).
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

use crate::email::RecipientKey;
use crate::ledger::State;
use crate::prepare::{Prepared, Workspace};
use crate::run;
use crate::transport::{Journal, Outbound, Outcome, Transport, reply};

use super::plan::{Lease, SharedLedger, lock};
use super::retry::{Pending, Retry};
use super::{OnUnknown, Shared, Stop};

/// A worker thread's state.
pub(super) struct Worker<'s, 'a> {
    sh: &'s Shared<'a>,
    transport: Box<dyn Transport>,
    ws: Workspace,
    pause: Pause,
}

/// This worker's wait before reopening a connection the relay closed with 421: only this
/// connection waits, the others go on. Doubles from a quarter of a second to 30 s while the
/// relay keeps closing, and resets when a message is accepted.
struct Pause {
    until: Option<Duration>,
    delay: Duration,
}

impl Pause {
    const FIRST: Duration = Duration::from_millis(250);
    const LONGEST: Duration = Duration::from_secs(30);
}

/// What became of a batch's donors that are not settled.
#[derive(Default)]
struct Unsettled {
    /// Deferred by the relay: to be retried or left deferred.
    deferred: Vec<Pending>,
    /// Never offered (the budget ran out, or the run is stopping): as they were.
    unsent: Vec<Pending>,
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
            pause: Pause {
                until: None,
                delay: Pause::FIRST,
            },
        }
    }

    /// Works until there is nothing left this process may do; closes the transport either
    /// way.
    pub(super) fn run(mut self) -> Result<()> {
        let result = self.work_all();
        self.transport.close();
        result
    }

    fn work_all(&mut self) -> Result<()> {
        let sh = self.sh;
        loop {
            // With the budget spent nothing more can be sent, retries included: they stay
            // deferred (a retry put back for want of budget would be taken again at once).
            if sh.halted() || sh.source.spent() {
                return Ok(());
            }
            let now = sh.clock.elapsed();
            let due = sh.retries.take_due(now, sh.opts.batch.max(1));
            if !due.is_empty() {
                self.retry(due)?;
                continue;
            }
            if let Some(lease) = sh.source.next_lease()? {
                self.work(lease)?;
                continue;
            }
            // Nothing but retries left: wait for the next one, within the run's bound.
            let Some(next) = sh.retries.next_due() else {
                return Ok(());
            };
            if next > sh.wait_deadline(now) {
                return Ok(());
            }
            // In short steps, so a signal or a halt is noticed.
            sh.clock
                .sleep(next.saturating_sub(now).min(Duration::from_millis(100)));
        }
    }

    /// Everyone in the lease who still needs a message, once each; the deferred go to the
    /// retry schedule.
    fn work(&mut self, mut lease: Lease) -> Result<()> {
        let sh = self.sh;
        let seg = lease.segment;
        let chunk = &sh.run.manifest.segments[seg].chunks[lease.chunk];
        let bytes = sh.run.read_chunk(chunk)?;
        // Only rows still to send are kept, parsed, so a retry can render them again.
        let mut pending: Vec<Pending> = Vec::new();
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
            match lease.state(key) {
                State::Sent | State::Failed | State::Suppressed => return Ok(()),
                State::Unknown if sh.opts.on_unknown == OnUnknown::Skip => {
                    sh.count(seg, |c| c.skipped_unknown += 1);
                    return Ok(());
                }
                State::Deferred { .. } | State::Pending | State::Unknown => {}
            }
            pending.push(Pending {
                key,
                tries: 0,
                deferred_at: Duration::ZERO,
                row: rec.to_owned_record(),
            });
            Ok(())
        })?;
        run::check_rows(sh.run.dir(), chunk, index as u64)?;
        if pending.is_empty() {
            return sh.source.done(lease);
        }
        if !sh.source.open(&mut lease)? {
            // Another process holds the chunk's ledger: the source tries it again later.
            return Ok(());
        }
        let ledger = Arc::clone(
            lease
                .ledger()
                .ok_or_else(|| anyhow!("internal: the lease's ledger was not opened"))?,
        );
        let mut rest = pending.into_iter();
        while !sh.halted() {
            let batch: Vec<Pending> = rest.by_ref().take(sh.opts.batch.max(1)).collect();
            if batch.is_empty() {
                break;
            }
            let left = self.send_batch(&ledger, seg, batch)?;
            for p in left.deferred {
                self.schedule(seg, lease.chunk, &ledger, p, false)?;
            }
            if !left.unsent.is_empty() {
                break;
            }
        }
        sh.source.done(lease)
    }

    /// Sends retries that are due, a batch per chunk.
    fn retry(&mut self, due: Vec<Retry>) -> Result<()> {
        let sh = self.sh;
        let mut by_chunk: HashMap<(usize, usize), (SharedLedger, Vec<Pending>)> = HashMap::new();
        let mut order = Vec::new();
        for r in due {
            let key = (r.segment, r.chunk);
            let entry = by_chunk.entry(key).or_insert_with(|| {
                order.push(key);
                (r.ledger, Vec::new())
            });
            entry.1.push(r.pending);
        }
        for key @ (seg, chunk) in order {
            let Some((ledger, batch)) = by_chunk.remove(&key) else {
                continue;
            };
            let offered = batch.len();
            let left = self.send_batch(&ledger, seg, batch)?;
            // Durable before the worker turns to other work (see the ledger's guarantee).
            lock(&ledger).sync()?;
            let kept = left.deferred.len() + left.unsent.len();
            for p in left.deferred {
                self.schedule(seg, chunk, &ledger, p, true)?;
            }
            // Not offered: back on the schedule as they were, still holding the ledger.
            let now = sh.clock.elapsed();
            for p in left.unsent {
                sh.retries.push(now, seg, chunk, Arc::clone(&ledger), p);
            }
            for _ in kept..offered {
                sh.source.release(seg, chunk)?;
            }
        }
        Ok(())
    }

    /// Schedules a deferred donor's next attempt, or leaves them deferred for the next run
    /// after `--max-attempts`. `held` says whether the donor already holds the ledger (a
    /// retry) or must take a hold (a first attempt).
    fn schedule(
        &self,
        seg: usize,
        chunk: usize,
        ledger: &SharedLedger,
        mut p: Pending,
        held: bool,
    ) -> Result<()> {
        let sh = self.sh;
        p.tries += 1;
        if p.tries >= sh.opts.max_attempts {
            sh.count(seg, |c| c.deferred += 1);
            if held {
                sh.source.release(seg, chunk)?;
            }
            return Ok(());
        }
        let backoff = sh.opts.retry_delay.as_secs_f64()
            * 2f64.powi(p.tries as i32 - 1)
            * (1.0 + jitter(p.key, p.tries));
        if !held {
            sh.source.retain(seg, chunk, ledger);
        }
        let due = p.deferred_at + Duration::from_secs_f64(backoff);
        sh.retries.push(due, seg, chunk, Arc::clone(ledger), p);
        Ok(())
    }

    /// Takes out of `batch` the donors a list given to `send` suppresses now, recording each
    /// as suppressed: the last check before their reservation.
    fn drop_suppressed(
        &self,
        ledger: &SharedLedger,
        seg: usize,
        batch: &mut Vec<Pending>,
    ) -> Result<()> {
        let sh = self.sh;
        let Some(watch) = sh.suppressions else {
            return Ok(());
        };
        let list = watch.at(sh.clock.elapsed())?;
        if list.is_empty() {
            return Ok(());
        }
        let mut kept = Vec::with_capacity(batch.len());
        for p in batch.drain(..) {
            match sh.preparer.suppressed(&p.row.record(), &list) {
                Some(why) => {
                    lock(ledger).suppressed(p.key, sh.clock.now(), why.reason())?;
                    sh.count(seg, |c| c.suppressed += 1);
                }
                None => kept.push(p),
            }
        }
        *batch = kept;
        Ok(())
    }

    /// Renders, reserves and sends one batch of a chunk's donors; returns those not settled.
    fn send_batch(
        &mut self,
        ledger: &SharedLedger,
        seg: usize,
        mut batch: Vec<Pending>,
    ) -> Result<Unsettled> {
        let sh = self.sh;
        if sh.halted_elsewhere() {
            return Ok(Unsettled {
                unsent: batch,
                ..Unsettled::default()
            });
        }
        self.drop_suppressed(ledger, seg, &mut batch)?;
        let allowed = sh.source.take_budget(batch.len() as u64)? as usize;
        let mut out = Unsettled {
            unsent: batch.split_off(allowed),
            ..Unsettled::default()
        };
        let segment = &sh.run.manifest.segments[seg];
        // Each batch is dated when it is prepared, seconds before it is sent.
        self.ws.set_date(sh.clock.now())?;
        let mut ready: Vec<(usize, Prepared)> = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            match sh.preparer.prepare(
                &segment.name,
                &segment.template,
                &p.row.record(),
                &mut self.ws,
            ) {
                Ok(prepared) => ready.push((i, prepared)),
                Err(e) => {
                    lock(ledger).failed(
                        p.key,
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
            pause: &mut self.pause,
            keys: &keys,
            deferred: Vec::new(),
            error: None,
        };
        let started = self.transport.send_batch(&outbound, &mut journal);
        let BatchJournal {
            deferred, error, ..
        } = journal;
        if let Some(e) = error {
            return Err(e);
        }
        // Nothing waits in the ledger while the next batch renders.
        lock(ledger).flush()?;
        if started < keys.len() {
            lock(ledger).release(&keys[started..], sh.clock.now())?;
            sh.source.give_back((keys.len() - started) as u64)?;
        }
        let mut batch: Vec<Option<Pending>> = batch.into_iter().map(Some).collect();
        for (r, at) in deferred {
            out.deferred.extend(batch[ready[r].0].take().map(|mut p| {
                p.deferred_at = at;
                p
            }));
        }
        for (i, _) in &ready[started..] {
            out.unsent.extend(batch[*i].take());
        }
        Ok(out)
    }
}

/// The ledger side of one batch, called by the transport as it goes.
struct BatchJournal<'j, 's, 'a> {
    sh: &'s Shared<'a>,
    ledger: &'j SharedLedger,
    seg: usize,
    pause: &'j mut Pause,
    /// The reserved keys, one per message offered.
    keys: &'j [RecipientKey],
    /// Messages deferred by the relay, to retry, and when.
    deferred: Vec<(usize, Duration)>,
    /// A ledger write failed: nothing more is sent, and the worker stops with this.
    error: Option<anyhow::Error>,
}

impl BatchJournal<'_, '_, '_> {
    /// Writes message `i`'s outcome; with `hold`, an acceptance may wait in the ledger for
    /// the next message's transmit record ([`Journal::outcome_before_next`]).
    fn record(&mut self, i: usize, outcome: Outcome, hold: bool) -> Result<()> {
        let sh = self.sh;
        if let Some(fault) = sh.breaker.observe(reply::health(&outcome)) {
            let last = match &outcome {
                Outcome::Deferred {
                    code: Some(c),
                    text,
                    ..
                } => format!("{c} {text}"),
                Outcome::Deferred { text, .. } | Outcome::Unknown { text } => text.clone(),
                other => format!("{other:?}"),
            };
            sh.halt_relay(Stop::RelayFailing(format!(
                "{} donors in a row, {}; the last: {last}",
                sh.opts.halt_after,
                fault.describe()
            )));
        }
        let key = self.keys[i];
        let now = sh.clock.now();
        let mut ledger = lock(self.ledger);
        match outcome {
            Outcome::Accepted { reply } => {
                self.pause.delay = Pause::FIRST;
                if hold {
                    ledger.sent_with_next(key, now, 250, &reply)?;
                } else {
                    ledger.sent(key, now, 250, &reply)?;
                }
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
                if code == Some(421) {
                    // The relay closed this connection: reopen it only after a pause.
                    self.pause.until = Some(sh.clock.elapsed() + self.pause.delay);
                    self.pause.delay = (self.pause.delay * 2).min(Pause::LONGEST);
                }
                self.deferred.push((i, sh.clock.elapsed()));
            }
            Outcome::Unknown { text } => {
                ledger.unknown(key, now, &text)?;
                sh.count(self.seg, |c| c.unknown += 1);
            }
            Outcome::Halt { code, text } => {
                // Not this donor's fault: leave them deferred for the run after the fix.
                ledger.deferred(key, now, code, &text)?;
                sh.count(self.seg, |c| c.deferred += 1);
                sh.halt_relay(Stop::Halted(match code {
                    Some(c) => format!("{c} {text}"),
                    None => text,
                }));
            }
        }
        Ok(())
    }
}

impl Journal for BatchJournal<'_, '_, '_> {
    fn proceed(&mut self, _: usize) -> bool {
        let sh = self.sh;
        let ledger = self.ledger;
        // An outcome held for the next transmit record is written before any wait here, and
        // before a stop.
        let failed = std::cell::RefCell::new(None);
        let flush = || {
            if let Err(e) = lock(ledger).flush() {
                *failed.borrow_mut() = Some(e);
            }
        };
        let failed_now = || failed.borrow().is_some();
        let mut go = self.error.is_none();
        if go && let Some(until) = self.pause.until.take() {
            flush();
            loop {
                let now = sh.clock.elapsed();
                if now >= until || failed_now() {
                    break;
                }
                if sh.halted() {
                    go = false;
                    break;
                }
                sh.clock
                    .sleep((until - now).min(Duration::from_millis(100)));
            }
        }
        go = go
            && !failed_now()
            && !sh.halted()
            && sh.pacer.wait(&|| {
                flush();
                failed_now() || sh.halted()
            });
        if !go {
            flush();
        }
        if let Some(e) = failed.into_inner() {
            self.error.get_or_insert_with(|| {
                anyhow!("writing the ledger failed, so sending stopped: {e}")
            });
            return false;
        }
        go
    }

    fn may_start_now(&self, _: usize) -> bool {
        let sh = self.sh;
        self.pause.until.is_none() && self.error.is_none() && !sh.halted() && sh.pacer.is_open()
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
        if let Err(e) = self.record(i, outcome, false) {
            self.error = Some(e);
        }
    }

    fn outcome_before_next(&mut self, i: usize, outcome: Outcome) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.record(i, outcome, true) {
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
