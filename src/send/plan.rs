//! Where a worker's next piece of work comes from: the [`WorkSource`] seam, and
//! [`InProcessPlan`], its first implementation, which spreads one process's selected chunks
//! over its workers.
//!
//! A [`Lease`] is a chunk, or a slice of one, with its ledger: first a read-only look (so a
//! re-run over a finished run writes and syncs nothing), opened for writing only when there is
//! work. The source also holds the budget of messages this process may still start
//! (`--limit`, the daily cap). The in-process plan owns the run's lock for as long as it
//! lives, and records the templates' fingerprint when it takes it. A source never renders,
//! never sends and never decides a donor's state.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;

use crate::clock::Clock;
use crate::email::RecipientKey;
use crate::ledger::{self, ChunkLedger, ChunkStates, LedgerError, RunLock, Session, State};
use crate::manifest::Manifest;
use crate::run::{OpenedRun, Selection};

use super::Stop;
use super::reports::{ChunkSummary, Summaries};

/// Why sending could not start on a run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Another `send` holds the run's lock.
    #[error(transparent)]
    Locked(LedgerError),
    /// The templates differ from the ones sending started with.
    #[error(transparent)]
    TemplatesChanged(LedgerError),
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl PlanError {
    fn from_ledger(e: LedgerError) -> PlanError {
        match e {
            e @ LedgerError::Locked { .. } => PlanError::Locked(e),
            e @ LedgerError::TemplatesChanged { .. } => PlanError::TemplatesChanged(e),
            e => PlanError::Ledger(e),
        }
    }
}

/// A chunk's ledger shared by the workers on its slices.
pub type SharedLedger = Arc<Mutex<ChunkLedger>>;

/// Locks a ledger; a poisoned lock only means another worker panicked mid-write, and the
/// ledger's own state is still consistent record by record.
pub(super) fn lock(l: &Mutex<ChunkLedger>) -> MutexGuard<'_, ChunkLedger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// A unit of work: some rows of one chunk, with that chunk's ledger.
pub struct Lease {
    /// The manifest's segment index.
    pub segment: usize,
    /// The chunk's index in its segment.
    pub chunk: usize,
    /// The rows of the chunk that are this lease's (0-based, data rows only).
    pub rows: Range<usize>,
    ledger: LeaseLedger,
}

enum LeaseLedger {
    /// A read-only look at the whole chunk's ledger.
    Preview(ChunkStates),
    /// Open for writing.
    Open(SharedLedger),
}

impl Lease {
    /// A donor's state, as the lease's ledger has it now.
    pub fn state(&self, key: RecipientKey) -> State {
        match &self.ledger {
            LeaseLedger::Preview(states) => states.state(key),
            LeaseLedger::Open(l) => lock(l).states().state(key),
        }
    }

    /// The ledger open for writing, if [`WorkSource::open`] opened it.
    pub(super) fn ledger(&self) -> Option<&SharedLedger> {
        match &self.ledger {
            LeaseLedger::Open(l) => Some(l),
            LeaseLedger::Preview(_) => None,
        }
    }
}

/// Where workers get their work, and the budget of messages they may start.
pub trait WorkSource: Sync {
    /// The next lease, or `None` when there is no more work.
    fn next_lease(&self) -> Result<Option<Lease>>;
    /// Opens the lease's ledger for writing, before anything of it is reserved.
    fn open(&self, lease: &mut Lease) -> Result<()>;
    /// The lease is finished (or abandoned): its ledger is synced once nothing holds it.
    fn done(&self, lease: Lease) -> Result<()>;
    /// Keeps the ledger of the lease's chunk open after the lease is done: a retry of one of
    /// its donors is scheduled. Each call is matched by one [`WorkSource::release`].
    fn retain(&self, segment: usize, chunk: usize, ledger: &SharedLedger);
    /// A retry of the chunk's is settled; the ledger is synced once nothing holds it.
    fn release(&self, segment: usize, chunk: usize) -> Result<()>;
    /// Takes up to `n` messages from the budget; 0 when it is spent.
    fn take_budget(&self, n: u64) -> u64;
    /// Gives back messages taken but not started.
    fn give_back(&self, n: u64);
    /// True when no more messages may be started.
    fn spent(&self) -> bool;
}

/// One slice of a chunk, before it is handed out.
#[derive(Debug, Clone, Copy)]
struct Job {
    seg: usize,
    chunk: usize,
    slice: usize,
    slices: usize,
}

/// The work of one process, planned at start: whole chunks, or for a run with fewer chunks
/// than twice the connections, chunks cut into slices (of at least one batch) so every
/// connection has work. Holds the run's lock.
pub struct InProcessPlan<'a> {
    run: &'a OpenedRun,
    session: Session,
    jobs: Vec<Job>,
    next: AtomicUsize,
    /// Ledgers open for writing, with how many leases and retries still hold each.
    open: Mutex<HashMap<(usize, usize), (SharedLedger, usize)>>,
    budget: AtomicU64,
    budget_reason: Stop,
    summaries: Mutex<Summaries>,
    _lock: RunLock,
}

/// What limits the number of messages a process may start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// `--limit`.
    pub limit: Option<u64>,
    /// At most this many per UTC day, counting earlier runs.
    pub daily_cap: Option<u64>,
}

impl<'a> InProcessPlan<'a> {
    /// Takes the run's lock (refused at once when another `send` holds it), records the
    /// templates' `fingerprint` (refused if sending started with other templates), and plans
    /// `selection` for `workers` connections with reservations of `batch`.
    pub fn new(
        run: &'a OpenedRun,
        selection: &Selection,
        workers: usize,
        batch: usize,
        budget: Budget,
        fingerprint: &str,
        clock: &dyn Clock,
    ) -> Result<InProcessPlan<'a>, PlanError> {
        let lock = RunLock::acquire(run.dir()).map_err(PlanError::from_ledger)?;
        ledger::record_templates(run.dir(), fingerprint).map_err(PlanError::from_ledger)?;
        let mut left = budget.limit.unwrap_or(u64::MAX);
        let mut budget_reason = Stop::Limit;
        if let Some(cap) = budget.daily_cap {
            let today = clock
                .now()
                .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .date();
            let sent_today = sent_on(run, today)?;
            let cap_left = cap.saturating_sub(sent_today);
            if cap_left < left {
                left = cap_left;
                budget_reason = Stop::DailyCap;
            }
        }
        Ok(InProcessPlan {
            run,
            session: Session::new(clock.now()),
            jobs: plan(&run.manifest, selection, workers.max(1), batch.max(1)),
            next: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            budget: AtomicU64::new(left),
            budget_reason,
            summaries: Mutex::new(Summaries::default()),
            _lock: lock,
        })
    }

    /// How many leases the plan hands out: more workers than this would have nothing to do.
    pub fn leases(&self) -> usize {
        self.jobs.len()
    }

    /// Why the budget ran out, when it did.
    pub(super) fn budget_reason(&self) -> Stop {
        self.budget_reason.clone()
    }

    /// Syncs ledgers still open (a halt or an error leaves some held) and hands over what
    /// was learned of each chunk worked on.
    pub(super) fn finish(&self) -> Result<Summaries> {
        let mut summaries =
            std::mem::take(&mut *self.summaries.lock().unwrap_or_else(|p| p.into_inner()));
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|p| p.into_inner()));
        for ((seg, chunk), (l, _)) in open {
            let mut l = lock(&l);
            l.sync()?;
            summaries.insert(seg, chunk, ChunkSummary::of(l.states()));
        }
        Ok(summaries)
    }

    fn summarise(&self, segment: usize, chunk: usize, states: &ChunkStates) {
        self.summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(segment, chunk, ChunkSummary::of(states));
    }
}

impl WorkSource for InProcessPlan<'_> {
    fn next_lease(&self) -> Result<Option<Lease>> {
        let Some(&job) = self.jobs.get(self.next.fetch_add(1, Ordering::Relaxed)) else {
            return Ok(None);
        };
        let c = &self.run.manifest.segments[job.seg].chunks[job.chunk];
        let n = c.rows as usize;
        let rows = (job.slice * n / job.slices)..((job.slice + 1) * n / job.slices);
        // Slices of a shared chunk go straight to the shared ledger.
        let ledger = if job.slices == 1 {
            LeaseLedger::Preview(ChunkStates::read(self.run.dir(), &c.file)?)
        } else {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let l = match open.get(&(job.seg, job.chunk)) {
                Some((l, _)) => Arc::clone(l),
                None => {
                    let l = Arc::new(Mutex::new(ChunkLedger::open(
                        self.run.dir(),
                        &c.file,
                        &self.session,
                    )?));
                    open.insert((job.seg, job.chunk), (Arc::clone(&l), job.slices));
                    l
                }
            };
            LeaseLedger::Open(l)
        };
        Ok(Some(Lease {
            segment: job.seg,
            chunk: job.chunk,
            rows,
            ledger,
        }))
    }

    fn open(&self, lease: &mut Lease) -> Result<()> {
        if let LeaseLedger::Preview(_) = lease.ledger {
            let file = &self.run.manifest.segments[lease.segment].chunks[lease.chunk].file;
            let l = Arc::new(Mutex::new(ChunkLedger::open(
                self.run.dir(),
                file,
                &self.session,
            )?));
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((lease.segment, lease.chunk), (Arc::clone(&l), 1));
            lease.ledger = LeaseLedger::Open(l);
        }
        Ok(())
    }

    fn done(&self, lease: Lease) -> Result<()> {
        match &lease.ledger {
            LeaseLedger::Preview(states) => {
                self.summarise(lease.segment, lease.chunk, states);
                Ok(())
            }
            LeaseLedger::Open(l) => {
                // Durable now, though retries may keep the ledger open: the worker moves on
                // to another chunk, and a power cut must not take this one's outcomes with it.
                lock(l).sync()?;
                self.release(lease.segment, lease.chunk)
            }
        }
    }

    fn retain(&self, segment: usize, chunk: usize, ledger: &SharedLedger) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry((segment, chunk))
            .or_insert_with(|| (Arc::clone(ledger), 0))
            .1 += 1;
    }

    fn release(&self, segment: usize, chunk: usize) -> Result<()> {
        let key = (segment, chunk);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let last = match open.get_mut(&key) {
            Some((_, held)) => {
                *held -= 1;
                *held == 0
            }
            None => false,
        };
        if last && let Some((l, _)) = open.remove(&key) {
            drop(open);
            let mut l = lock(&l);
            l.sync()?;
            self.summarise(segment, chunk, l.states());
        }
        Ok(())
    }

    fn take_budget(&self, n: u64) -> u64 {
        let mut cur = self.budget.load(Ordering::Relaxed);
        loop {
            let take = cur.min(n);
            if take == 0 {
                return 0;
            }
            match self.budget.compare_exchange(
                cur,
                cur - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(actual) => cur = actual,
            }
        }
    }

    fn give_back(&self, n: u64) {
        if n > 0 {
            self.budget.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn spent(&self) -> bool {
        self.budget.load(Ordering::Relaxed) == 0
    }
}

/// The jobs, in run order.
fn plan(manifest: &Manifest, selection: &Selection, workers: usize, batch: usize) -> Vec<Job> {
    let chunks: usize = selection
        .indexes()
        .iter()
        .map(|&s| manifest.segments[s].chunks.len())
        .sum();
    let want = (2 * workers).div_ceil(chunks.max(1));
    let mut jobs = Vec::new();
    for &seg in selection.indexes() {
        for (chunk, c) in manifest.segments[seg].chunks.iter().enumerate() {
            let slices = want.min((c.rows as usize / batch).max(1));
            jobs.extend((0..slices).map(|slice| Job {
                seg,
                chunk,
                slice,
                slices,
            }));
        }
    }
    jobs
}

/// Messages accepted on `day` (UTC) across the run's ledgers.
fn sent_on(run: &OpenedRun, day: jiff::civil::Date) -> Result<u64, LedgerError> {
    let mut n = 0;
    for s in &run.manifest.segments {
        for c in &s.chunks {
            n += ChunkStates::read(run.dir(), &c.file)?.sent_on(day);
        }
    }
    Ok(n)
}
