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

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;

use crate::clock::Clock;
use crate::email::RecipientKey;
use crate::ledger::{
    self, CapClaims, ChunkLedger, ChunkStates, LedgerError, LockMode, RunLock, Session, ShardLock,
    State,
};
use crate::manifest::Manifest;
use crate::run::{OpenedRun, Selection};

use super::Stop;
use super::reports::{ChunkSummary, Summaries};
use super::shard::Shard;

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
    /// Opens the lease's ledger for writing, before anything of it is reserved; `false` when
    /// another process holds it (the source tries the chunk again later).
    fn open(&self, lease: &mut Lease) -> Result<bool>;
    /// The lease is finished (or abandoned): its ledger is synced once nothing holds it.
    fn done(&self, lease: Lease) -> Result<()>;
    /// Keeps the ledger of the lease's chunk open after the lease is done: a retry of one of
    /// its donors is scheduled. Each call is matched by one [`WorkSource::release`].
    fn retain(&self, segment: usize, chunk: usize, ledger: &SharedLedger);
    /// A retry of the chunk's is settled; the ledger is synced once nothing holds it.
    fn release(&self, segment: usize, chunk: usize) -> Result<()>;
    /// Takes up to `n` messages from the budget; 0 when it is spent.
    fn take_budget(&self, n: u64) -> Result<u64>;
    /// Gives back messages taken but not started.
    fn give_back(&self, n: u64) -> Result<()>;
    /// True when no more messages may be started.
    fn spent(&self) -> bool;
}

/// One slice of a chunk, before it is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    clock: &'a dyn Clock,
    session: Session,
    jobs: Vec<Job>,
    next: AtomicUsize,
    /// Chunks whose ledger another process held, with when to try again and how often they
    /// were tried.
    busy: Mutex<VecDeque<(Job, Duration, u32)>>,
    /// Ledgers open for writing, with how many leases and retries still hold each.
    open: Mutex<HashMap<(usize, usize), (SharedLedger, usize)>>,
    /// What `--limit` leaves.
    budget: AtomicU64,
    /// The day's cap, claimed from by every process of the run.
    cap: Option<CapClaims>,
    cap_spent: AtomicBool,
    summaries: Mutex<Summaries>,
    _shard: Option<ShardLock>,
    _lock: RunLock,
}

/// How a plan is made.
#[derive(Debug, Clone)]
pub struct PlanOptions<'f> {
    /// Worker threads (connections).
    pub workers: usize,
    /// Recipients reserved per fsync.
    pub batch: usize,
    /// The limits on messages started.
    pub budget: Budget,
    /// The templates' fingerprint, recorded when sending starts.
    pub fingerprint: &'f str,
    /// Only this shard's chunks, beside the other shards; `None` for the whole run, alone.
    pub shard: Option<Shard>,
    /// How long to wait for a held lock before giving up.
    pub lock_wait: Duration,
}

/// How often a chunk whose ledger another process holds is tried again before it is left for
/// a later run.
const BUSY_TRIES: u32 = 5;
/// The pause before trying such a chunk again.
const BUSY_PAUSE: Duration = Duration::from_secs(2);

/// What limits the number of messages a process may start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// `--limit`.
    pub limit: Option<u64>,
    /// At most this many per UTC day, counting earlier runs.
    pub daily_cap: Option<u64>,
}

impl<'a> InProcessPlan<'a> {
    /// Takes the run's lock (exclusive, or shared and the shard's own with a shard), waiting
    /// up to `lock_wait`; records the templates' fingerprint (refused if sending started with
    /// other templates), and plans the selected chunks (a shard's only) for the workers.
    pub fn new(
        run: &'a OpenedRun,
        selection: &Selection,
        opts: &PlanOptions<'_>,
        clock: &'a dyn Clock,
    ) -> Result<InProcessPlan<'a>, PlanError> {
        let deadline = clock.elapsed() + opts.lock_wait;
        let (lock, shard_lock) = loop {
            match take_locks(run, opts.shard) {
                Err(LedgerError::Locked { .. }) if clock.elapsed() < deadline => {
                    clock.sleep(Duration::from_millis(250).min(deadline - clock.elapsed()));
                }
                r => break r.map_err(PlanError::from_ledger)?,
            }
        };
        ledger::record_templates(run.dir(), opts.fingerprint).map_err(PlanError::from_ledger)?;
        let session = Session::new(clock.now());
        let cap = opts.budget.daily_cap.map(|cap| {
            let today = clock
                .now()
                .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .date();
            CapClaims::new(run.dir(), today, &session.id, cap)
        });
        Ok(InProcessPlan {
            run,
            clock,
            session,
            jobs: plan(
                &run.manifest,
                selection,
                opts.shard,
                opts.workers.max(1),
                opts.batch.max(1),
            ),
            next: AtomicUsize::new(0),
            busy: Mutex::new(VecDeque::new()),
            open: Mutex::new(HashMap::new()),
            budget: AtomicU64::new(opts.budget.limit.unwrap_or(u64::MAX)),
            cap,
            cap_spent: AtomicBool::new(false),
            summaries: Mutex::new(Summaries::default()),
            _shard: shard_lock,
            _lock: lock,
        })
    }

    /// How many leases the plan hands out: more workers than this would have nothing to do.
    pub fn leases(&self) -> usize {
        self.jobs.len()
    }

    /// The chunks this plan sends, `(segment, chunk)`, in run order.
    pub(super) fn chunks(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = self.jobs.iter().map(|j| (j.seg, j.chunk)).collect();
        v.dedup();
        v
    }

    /// Why the budget ran out, when it did.
    pub(super) fn budget_reason(&self) -> Stop {
        if self.cap_spent.load(Ordering::Relaxed) {
            Stop::DailyCap
        } else {
            Stop::Limit
        }
    }

    /// Puts a chunk whose ledger another process holds aside, to try again later.
    fn set_aside(&self, job: Job, tries: u32) {
        if tries < BUSY_TRIES {
            self.busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back((job, self.clock.elapsed() + BUSY_PAUSE, tries + 1));
        }
    }

    /// The next job: the planned ones, then chunks set aside, once their pause is over.
    fn next_job(&self) -> Option<(Job, u32)> {
        if let Some(&job) = self.jobs.get(self.next.fetch_add(1, Ordering::Relaxed)) {
            return Some((job, 0));
        }
        let (job, at, tries) = self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()?;
        while self.clock.elapsed() < at {
            self.clock
                .sleep((at - self.clock.elapsed()).min(Duration::from_millis(100)));
        }
        Some((job, tries))
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
        loop {
            let Some((job, tries)) = self.next_job() else {
                return Ok(None);
            };
            match self.lease(job) {
                Err(LedgerError::Locked { .. }) => self.set_aside(job, tries),
                r => return Ok(Some(r?)),
            }
        }
    }

    fn open(&self, lease: &mut Lease) -> Result<bool> {
        if let LeaseLedger::Preview(_) = lease.ledger {
            let file = &self.run.manifest.segments[lease.segment].chunks[lease.chunk].file;
            let l = match ChunkLedger::open(self.run.dir(), file, &self.session) {
                Ok(l) => Arc::new(Mutex::new(l)),
                Err(LedgerError::Locked { .. }) => {
                    let job = Job {
                        seg: lease.segment,
                        chunk: lease.chunk,
                        slice: 0,
                        slices: 1,
                    };
                    self.set_aside(job, 0);
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((lease.segment, lease.chunk), (Arc::clone(&l), 1));
            lease.ledger = LeaseLedger::Open(l);
        }
        Ok(true)
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

    fn take_budget(&self, n: u64) -> Result<u64> {
        let mut cur = self.budget.load(Ordering::Relaxed);
        let taken = loop {
            let take = cur.min(n);
            if take == 0 {
                return Ok(0);
            }
            match self.budget.compare_exchange(
                cur,
                cur - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break take,
                Err(actual) => cur = actual,
            }
        };
        let Some(cap) = &self.cap else {
            return Ok(taken);
        };
        let claimed = if self.cap_spent.load(Ordering::Relaxed) {
            0
        } else {
            cap.claim(taken, &|| sent_on(self.run, cap_day(self)))?
        };
        if claimed < taken {
            self.budget.fetch_add(taken - claimed, Ordering::Relaxed);
            self.cap_spent.store(true, Ordering::Relaxed);
        }
        Ok(claimed)
    }

    fn give_back(&self, n: u64) -> Result<()> {
        if n > 0 {
            self.budget.fetch_add(n, Ordering::Relaxed);
            if let Some(cap) = &self.cap {
                cap.give_back(n)?;
            }
        }
        Ok(())
    }

    fn spent(&self) -> bool {
        self.budget.load(Ordering::Relaxed) == 0 || self.cap_spent.load(Ordering::Relaxed)
    }
}

impl InProcessPlan<'_> {
    /// The lease for `job`: a read-only look at a whole chunk, or a slice with the chunk's
    /// ledger open.
    fn lease(&self, job: Job) -> Result<Lease, LedgerError> {
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
        Ok(Lease {
            segment: job.seg,
            chunk: job.chunk,
            rows,
            ledger,
        })
    }
}

/// The locks a plan holds: the run's (shared by shards), and the shard's own.
fn take_locks(
    run: &OpenedRun,
    shard: Option<Shard>,
) -> Result<(RunLock, Option<ShardLock>), LedgerError> {
    match shard {
        None => Ok((RunLock::acquire_as(run.dir(), LockMode::Exclusive)?, None)),
        Some(s) => {
            let lock = RunLock::acquire_as(run.dir(), LockMode::Shared)?;
            let own = ShardLock::acquire(run.dir(), s.index, s.count)?;
            Ok((lock, Some(own)))
        }
    }
}

/// The UTC day the plan's cap is for: the day it was made.
fn cap_day(plan: &InProcessPlan<'_>) -> jiff::civil::Date {
    plan.session
        .started
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
}

/// The jobs, in run order: the selected segments' chunks (a shard's only).
fn plan(
    manifest: &Manifest,
    selection: &Selection,
    shard: Option<Shard>,
    workers: usize,
    batch: usize,
) -> Vec<Job> {
    // A chunk's position counts every segment's chunks, in manifest order.
    let mut first = Vec::with_capacity(manifest.segments.len());
    let mut position = 0;
    for s in &manifest.segments {
        first.push(position);
        position += s.chunks.len();
    }
    let mine = |seg: usize, chunk: usize| shard.is_none_or(|s| s.owns(first[seg] + chunk));
    let chunks: usize = selection
        .indexes()
        .iter()
        .map(|&s| {
            (0..manifest.segments[s].chunks.len())
                .filter(|&c| mine(s, c))
                .count()
        })
        .sum();
    let want = (2 * workers).div_ceil(chunks.max(1));
    let mut jobs = Vec::new();
    for &seg in selection.indexes() {
        for (chunk, c) in manifest.segments[seg].chunks.iter().enumerate() {
            if !mine(seg, chunk) {
                continue;
            }
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
