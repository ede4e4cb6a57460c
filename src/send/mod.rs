//! The worker step: deliver a run's messages with a durable ledger, retries and resume.
//!
//! The loop, in rooms: a work source hands out leases and holds the budget ([`plan`]), each
//! worker renders, reserves, sends through its transport and records ([`worker`]), a shared
//! pacer spaces message starts ([`pacing`]), and the ledgers are summed up into the status and
//! the report files afterwards ([`reports`]). This module owns the options, the state all
//! workers share (halt, counts, progress) and [`send`], which runs them.
//!
//! It never builds messages ([`crate::prepare`]), never speaks SMTP ([`crate::transport`]),
//! never decides the ledger format ([`crate::ledger`]), never draws progress (it emits
//! [`crate::progress`] events) and never reads the clock except through [`Clock`].
//!
//! Workers are the threads of a dedicated rayon pool; each owns one transport and takes
//! leases, so a chunk's ledger has one writer per lease (slices of a chunk share it).

mod breaker;
pub mod halt;
mod overview;
mod pacing;
pub mod plan;
mod reports;
mod retry;
mod shard;
mod suppression;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::campaign::{Rate, SendSettings};
use crate::clock::Clock;
use crate::prepare::Preparer;
use crate::progress::{Event, Progress};
use crate::run::{OpenedRun, Selection};
use crate::rundir::{REPORT_JSON, REPORTS_DIR};
use crate::transport::Transport;

pub use overview::{Deferred, LastReport, Overview, RunState, overview};
pub use pacing::PacingReport;
pub use plan::{Budget, InProcessPlan, Lease, PlanError, PlanOptions, WorkSource};
pub use reports::{Reason, RunReport, SegmentStatus, status, whole_run};
pub use shard::Shard;
pub use suppression::SuppressionWatch;

use breaker::Breaker;
use pacing::Pacer;
use reports::Summaries;
use retry::RetryQueue;

/// What to do with donors whose last attempt has an unknown outcome (the process or the
/// connection died after the message body was sent, so the server may have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknown {
    /// Leave them out and list them in `unknown.csv` (nobody gets two messages).
    Skip,
    /// Send them again (a donor may get the message twice).
    Resend,
}

/// Settings of one `send`.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Worker threads, one SMTP connection each.
    pub concurrency: usize,
    /// Global rate limit across workers.
    pub rate: Option<Rate>,
    /// Policy for unknown outcomes.
    pub on_unknown: OnUnknown,
    /// Attempts per donor within this process before leaving them deferred.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, plus up to 50% jitter.
    pub retry_delay: Duration,
    /// How long the process waits, once no other work is left, for retries to fall due;
    /// donors due later stay deferred for the next run.
    pub max_wait: Duration,
    /// Halt after this many donors in a row failed alike by the relay (the circuit breaker).
    pub halt_after: usize,
    /// Recipients reserved per ledger fsync (group commit).
    pub batch: usize,
}

impl SendOptions {
    /// Recipients reserved per ledger fsync.
    pub const BATCH: usize = 32;

    /// Waiting for retries at the end of a run, when neither flags nor table say.
    pub const MAX_WAIT: Duration = Duration::from_secs(300);

    /// The circuit breaker's threshold, when neither flags nor table say.
    pub const HALT_AFTER: usize = 20;

    /// The options from `flags` where given, else the campaign's `[send]` table, else the
    /// defaults (8 connections, 3 attempts, 30 s first retry, 5 min waiting for retries).
    pub fn new(flags: &SendSettings, table: &SendSettings, on_unknown: OnUnknown) -> SendOptions {
        SendOptions {
            concurrency: flags.concurrency.or(table.concurrency).unwrap_or(8).max(1),
            rate: flags.rate.or(table.rate),
            on_unknown,
            max_attempts: flags
                .max_attempts
                .or(table.max_attempts)
                .unwrap_or(3)
                .max(1),
            retry_delay: flags
                .retry_delay
                .or(table.retry_delay)
                .unwrap_or(Duration::from_secs(30)),
            max_wait: flags.max_wait.or(table.max_wait).unwrap_or(Self::MAX_WAIT),
            halt_after: flags
                .halt_after
                .or(table.halt_after)
                .unwrap_or(Self::HALT_AFTER),
            batch: Self::BATCH,
        }
    }
}

/// What limits a send's budget: `--limit` from the flags, the daily cap from the flags or
/// the table.
pub fn budget(limit: Option<u64>, flags: &SendSettings, table: &SendSettings) -> Budget {
    Budget {
        limit,
        daily_cap: flags.daily_cap.or(table.daily_cap),
    }
}

/// What this process did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionCounts {
    /// Messages accepted.
    pub sent: u64,
    /// Permanent failures (bounces and messages that could not be rendered).
    pub failed: u64,
    /// Deferred at the end of this process.
    pub deferred: u64,
    /// Unknown outcomes.
    pub unknown: u64,
    /// Donors skipped because an earlier attempt's outcome is unknown.
    pub skipped_unknown: u64,
    /// Donors not sent because a list given to `send` suppresses them.
    pub suppressed: u64,
}

/// Why the send loop stopped before finishing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "reason", rename_all = "snake_case")]
pub enum Stop {
    /// Ran to the end of the work.
    Finished,
    /// The server reported a problem with the sender (policy, authentication).
    Halted(String),
    /// The relay failed many donors in a row alike, for reasons that are not theirs.
    RelayFailing(String),
    /// SIGINT or SIGTERM.
    Interrupted,
    /// `--limit` reached.
    Limit,
    /// The daily cap reached.
    DailyCap,
}

/// The result of a `send`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SendReport {
    /// Why it stopped.
    pub stop: Stop,
    /// This process's counts.
    pub session: SessionCounts,
    /// The run's state after this process: the selected segments, of a shard its own chunks.
    pub segments: Vec<SegmentStatus>,
    /// How often the relay asked to slow down, and how slow it got.
    pub pacing: PacingReport,
    /// Seconds spent.
    pub seconds: f64,
    /// The shard (`I/N`) this process sent, if it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Donors still to do (deferred or pending) in this process's part of the run: the
    /// selected segments, and of them a shard's chunks only.
    pub remaining: u64,
}

impl SendReport {
    /// Donors still to do in this process's part of the run (see [`SendReport::remaining`]).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

/// What a send works with, besides its work source and transports.
pub struct Context<'a> {
    /// The opened run.
    pub run: &'a OpenedRun,
    /// The segments being sent.
    pub selection: &'a Selection,
    /// Renders each donor's message.
    pub preparer: &'a Preparer,
    /// The time.
    pub clock: &'a dyn Clock,
    /// Where progress events go.
    pub progress: &'a dyn Progress,
    /// Set by a signal handler: finish the messages in flight, start nothing new.
    pub stop: &'a AtomicBool,
    /// Suppression lists given to `send`, checked before each batch is reserved.
    pub suppressions: Option<&'a SuppressionWatch>,
    /// The shard this process sends, if it is one of several: it then writes only its own
    /// report, `RUN/reports/shard-I-of-N.json`.
    pub shard: Option<Shard>,
}

/// State shared by all workers.
struct Shared<'a> {
    run: &'a OpenedRun,
    preparer: &'a Preparer,
    opts: &'a SendOptions,
    clock: &'a dyn Clock,
    progress: &'a dyn Progress,
    stop: &'a AtomicBool,
    suppressions: Option<&'a SuppressionWatch>,
    source: &'a dyn WorkSource,
    pacer: Pacer<'a>,
    retries: RetryQueue,
    /// When a worker first found no lease left: the waiting for retries counts from here.
    idle_since: OnceLock<Duration>,
    breaker: Breaker,
    /// Why the run halts, once it does: [`Stop::Halted`] or [`Stop::RelayFailing`].
    halt: Mutex<Option<Stop>>,
    counts: Mutex<SessionCounts>,
}

impl Shared<'_> {
    fn halted(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.halt.lock().map(|h| h.is_some()).unwrap_or(true)
    }

    /// The latest due time a retry may have and still be waited for.
    fn wait_deadline(&self, now: Duration) -> Duration {
        *self.idle_since.get_or_init(|| now) + self.opts.max_wait
    }

    fn halt(&self, why: Stop) {
        if let Ok(mut h) = self.halt.lock()
            && h.is_none()
        {
            *h = Some(why);
        }
    }

    /// Halts because of the relay, and tells every other send of the run through the halt
    /// marker. Failing to write the marker only leaves the others to find out themselves.
    fn halt_relay(&self, why: Stop) {
        let words = match &why {
            Stop::Halted(w) | Stop::RelayFailing(w) => w.clone(),
            other => format!("{other:?}"),
        };
        let _ = halt::write(self.run.dir(), &words, self.clock.now());
        self.halt(why);
    }

    /// Whether another send halted the run (its marker is there); halts this one too.
    fn halted_elsewhere(&self) -> bool {
        if !halt::present(self.run.dir()) {
            return false;
        }
        let words = halt::read(self.run.dir())
            .ok()
            .flatten()
            .unwrap_or_else(|| "(the marker could not be read)".into());
        self.halt(Stop::Halted(format!(
            "a send of this run halted it ({}): {words}",
            halt::path(self.run.dir()).display()
        )));
        true
    }

    /// Counts one donor of segment `seg` as handled in this process.
    fn count(&self, seg: usize, f: impl FnOnce(&mut SessionCounts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
        self.progress.event(Event::Handled {
            segment: seg,
            donors: 1,
        });
    }
}

/// Runs the send loop over `plan`'s work, and writes the reports while the plan still holds
/// the run's lock. `new_transport` makes one transport per worker.
pub fn send(
    cx: &Context<'_>,
    opts: &SendOptions,
    plan: &InProcessPlan<'_>,
    new_transport: &(dyn Fn() -> Box<dyn Transport> + Sync),
) -> Result<SendReport> {
    let started = cx.clock.elapsed();
    let shared = Shared {
        run: cx.run,
        preparer: cx.preparer,
        opts,
        clock: cx.clock,
        progress: cx.progress,
        stop: cx.stop,
        suppressions: cx.suppressions,
        source: plan,
        pacer: Pacer::new(opts.rate, cx.clock),
        retries: RetryQueue::default(),
        breaker: Breaker::new(opts.halt_after),
        idle_since: OnceLock::new(),
        halt: Mutex::new(None),
        counts: Mutex::new(SessionCounts::default()),
    };
    let workers = opts.concurrency.clamp(1, plan.leases().max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("send-{i}"))
        .build()
        .context("starting the worker threads")?;
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    pool.scope(|s| {
        for _ in 0..workers {
            s.spawn(|_| {
                if let Err(e) = worker::Worker::new(&shared, new_transport()).run() {
                    shared.halt(Stop::Halted(format!("{e:#}")));
                    if let Ok(mut errs) = errors.lock() {
                        errs.push(e);
                    }
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap_or_default().into_iter().next() {
        return Err(e);
    }
    // Retries not due within the run (or cut short by a stop) stay deferred for the next.
    for r in shared.retries.drain() {
        shared.count(r.segment, |c| c.deferred += 1);
        plan.release(r.segment, r.chunk)?;
    }
    let halt = shared.halt.into_inner().unwrap_or(None);
    let counts = shared.counts.into_inner().unwrap_or_default();
    let spent = plan.spent();
    let budget_reason = plan.budget_reason();
    let mut known: Summaries = plan.finish()?;
    let dir = cx.run.dir();
    // A shard reports its own part, and is done when its own chunks are, whatever the other
    // shards have left.
    let mine = plan.chunks();
    let part = cx.shard.map(|_| mine.as_slice());
    let segments = reports::status_of(dir, &cx.run.manifest, cx.selection, part, &mut known)?;
    let remaining = reports::remaining_in(dir, &cx.run.manifest, &mine, &mut known)?;
    let stop_reason = if let Some(h) = halt {
        h
    } else if cx.stop.load(Ordering::Relaxed) {
        Stop::Interrupted
    } else if remaining > 0 && spent {
        budget_reason
    } else {
        Stop::Finished
    };
    let report = SendReport {
        stop: stop_reason,
        session: counts,
        segments,
        pacing: shared.pacer.report(),
        seconds: (cx.clock.elapsed() - started).as_secs_f64(),
        shard: cx.shard.map(|s| s.to_string()),
        remaining,
    };
    match cx.shard {
        // Shards never write the same file: the whole run's files come from `campaign report`.
        Some(s) => reports::write_report(&dir.join(REPORTS_DIR).join(s.report_name()), &report)?,
        None => {
            reports::write_report(&dir.join(REPORT_JSON), &report)?;
            reports::write_lists(dir, &cx.run.manifest, &mut known)?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
