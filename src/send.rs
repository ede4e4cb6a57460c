//! The worker step: deliver a run's messages with a durable ledger, retries and resume.
//!
//! Owns the send loop: which donors of a chunk still need a message (from the chunk's
//! ledger), pacing (a global rate limit, a daily cap that holds across runs), retries with
//! backoff within a run, halting on sender problems, stopping cleanly on a signal, and the
//! reports derived from the ledgers afterwards (`report.json`, `failed.csv`,
//! `suppress-bounced.txt`, `unknown.csv`). It never builds messages ([`crate::prepare`]),
//! never speaks SMTP ([`crate::deliver`]) and never decides the ledger format
//! ([`crate::ledger`]).
//!
//! Workers are the threads of a dedicated rayon pool; each owns one connection and takes
//! whole chunks, so a chunk's ledger file has one writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;

use crate::csvio::OwnedRecord;
use crate::deliver::{Outcome, Transport};
use crate::email::RecipientKey;
use crate::ledger::{ChunkLedger, ChunkStates, Session, State};
use crate::manifest::Manifest;
use crate::prepare::{self, Preparer, Workspace};

/// A global message rate, parsed from `50/s`, `3000/min` or `100000/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
}

impl Rate {
    /// Messages per second.
    pub fn per_second(self) -> f64 {
        self.per_second
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || {
            format!("{s:?} is not a rate; write messages per unit, like 50/s, 3000/min or 100000/h")
        };
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        if !(n.is_finite() && n > 0.0) {
            return Err(bad());
        }
        Ok(Rate {
            per_second: n / secs,
        })
    }
}

/// What to do with donors whose last attempt has an unknown outcome (the process or the
/// connection died after the message body was sent, so the server may have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnUnknown {
    /// Leave them out and list them in `unknown.csv` (nobody gets two messages).
    Skip,
    /// Send them again (a donor may get the message twice).
    Resend,
}

/// Settings of one `send`.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The run directory.
    pub run: PathBuf,
    /// Worker threads, one SMTP connection each.
    pub concurrency: usize,
    /// Global rate limit across workers.
    pub rate: Option<Rate>,
    /// Send at most this many messages in this process.
    pub limit: Option<u64>,
    /// Only these segments (all when empty).
    pub segments: Vec<String>,
    /// Policy for unknown outcomes.
    pub on_unknown: OnUnknown,
    /// At most this many messages per UTC day, counting earlier runs of this run directory.
    pub daily_cap: Option<u64>,
    /// Attempts per donor within this process before leaving them deferred.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, plus up to 50% jitter.
    pub retry_delay: Duration,
    /// Recipients reserved per ledger fsync (group commit).
    pub batch: usize,
    /// The envelope sender (MAIL FROM).
    pub envelope_from: String,
}

/// Progress bars for a terminal: one for the run, one per segment (indexed like the
/// manifest's segments; `None` for segments not being sent).
pub struct Progress {
    /// The whole send.
    pub overall: indicatif::ProgressBar,
    /// Each segment.
    pub segments: Vec<Option<indicatif::ProgressBar>>,
}

/// Per-segment totals, from the ledgers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SegmentStatus {
    /// The segment.
    pub segment: String,
    /// Donors in it.
    pub donors: u64,
    /// Accepted by the server.
    pub sent: u64,
    /// Permanently failed.
    pub failed: u64,
    /// Failed transiently; a re-run retries them.
    pub deferred: u64,
    /// Outcome unknown (see `--on-unknown`).
    pub unknown: u64,
    /// Not attempted yet.
    pub pending: u64,
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
}

/// Why the send loop stopped before finishing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "reason", rename_all = "snake_case")]
pub enum Stop {
    /// Ran to the end of the work.
    Finished,
    /// The server reported a problem with the sender (policy, authentication).
    Halted(String),
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
    /// The whole run's state after this process.
    pub segments: Vec<SegmentStatus>,
    /// Seconds spent.
    pub seconds: f64,
}

impl SendReport {
    /// Donors in the selected segments still to do (deferred or pending).
    pub fn remaining(&self) -> u64 {
        self.segments.iter().map(|s| s.deferred + s.pending).sum()
    }
}

/// Shared pacing: a global minimum interval between message starts, which throttling
/// replies widen.
struct Pacer {
    interval_ns: AtomicU64,
    next: Mutex<Instant>,
    started: Instant,
    sent: AtomicU64,
}

impl Pacer {
    fn new(rate: Option<Rate>) -> Pacer {
        let interval_ns = rate.map_or(0, |r| (1e9 / r.per_second) as u64);
        Pacer {
            interval_ns: AtomicU64::new(interval_ns),
            next: Mutex::new(Instant::now()),
            started: Instant::now(),
            sent: AtomicU64::new(0),
        }
    }

    /// Waits for this message's slot.
    fn wait(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let interval = self.interval_ns.load(Ordering::Relaxed);
        if interval == 0 {
            return;
        }
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + Duration::from_nanos(interval);
            slot
        };
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        }
    }

    /// Halves the rate after a throttling reply (from the observed rate when unlimited).
    fn slow_down(&self) {
        let current = self.interval_ns.load(Ordering::Relaxed);
        let base = if current == 0 {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = (self.sent.load(Ordering::Relaxed) as f64 / secs).max(1.0);
            (1e9 / rate) as u64
        } else {
            current
        };
        // Never slower than one message every 10 s: the relay will recover.
        let slower = (base.saturating_mul(2)).min(10_000_000_000);
        self.interval_ns.store(slower, Ordering::Relaxed);
    }
}

/// State shared by all workers.
struct Shared<'a> {
    opts: &'a SendOptions,
    manifest: &'a Manifest,
    preparer: &'a Preparer,
    session: Session,
    pacer: Pacer,
    next_job: AtomicUsize,
    jobs: Vec<Job>,
    /// Open chunk ledgers, shared by the workers on slices of the same chunk, with the number
    /// of slices still to finish.
    ledgers: Mutex<HashMap<(usize, usize), OpenLedger>>,
    /// Messages this process may still start (limit and daily cap), `u64::MAX` when unbounded.
    budget: AtomicU64,
    budget_reason: Stop,
    stop: &'a AtomicBool,
    halt: Mutex<Option<String>>,
    counts: Mutex<SessionCounts>,
    progress: Option<&'a Progress>,
}

impl Shared<'_> {
    fn halted(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.halt.lock().map(|h| h.is_some()).unwrap_or(true)
    }

    fn halt(&self, reason: String) {
        if let Ok(mut h) = self.halt.lock()
            && h.is_none()
        {
            *h = Some(reason);
        }
    }

    /// Takes up to `n` messages from the budget.
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

    /// Counts one donor of segment `seg` as handled in this process.
    /// The chunk's ledger, opened by the first worker on one of its slices.
    fn ledger(&self, job: &Job) -> Result<Arc<Mutex<ChunkLedger>>> {
        let mut map = self.ledgers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((l, _)) = map.get(&(job.seg, job.chunk)) {
            return Ok(Arc::clone(l));
        }
        let file = &self.manifest.segments[job.seg].chunks[job.chunk].file;
        let l = Arc::new(Mutex::new(ChunkLedger::open(
            &self.opts.run,
            file,
            &self.session,
        )?));
        map.insert((job.seg, job.chunk), (Arc::clone(&l), job.slices));
        Ok(l)
    }

    /// One slice of the chunk is done; the last one syncs and closes the chunk's ledger.
    fn slice_done(&self, job: &Job) -> Result<()> {
        let mut map = self.ledgers.lock().unwrap_or_else(|p| p.into_inner());
        let last = match map.get_mut(&(job.seg, job.chunk)) {
            Some((_, left)) => {
                *left -= 1;
                *left == 0
            }
            None => false,
        };
        if last && let Some((l, _)) = map.remove(&(job.seg, job.chunk)) {
            lock(&l).sync()?;
        }
        Ok(())
    }

    fn count(&self, seg: usize, f: impl FnOnce(&mut SessionCounts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
        if let Some(p) = self.progress {
            p.overall.inc(1);
            if let Some(Some(pb)) = p.segments.get(seg) {
                pb.inc(1);
            }
        }
    }
}

/// A unit of work: one slice of a chunk's rows. Small runs split chunks so every connection
/// has work; the slices of a chunk share its ledger.
#[derive(Debug, Clone, Copy)]
struct Job {
    seg: usize,
    chunk: usize,
    slice: usize,
    slices: usize,
}

/// A chunk's ledger shared by the workers on its slices, and how many slices are left.
type OpenLedger = (Arc<Mutex<ChunkLedger>>, usize);

/// Locks a ledger; a poisoned lock only means another worker panicked mid-write, and the
/// ledger's own state is still consistent record by record.
fn lock(l: &Mutex<ChunkLedger>) -> std::sync::MutexGuard<'_, ChunkLedger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a slice reads its donors' states: a read-only look at a whole chunk's ledger (opened
/// for writing only if there is work), or the ledger shared by a chunk's slices.
enum LedgerView {
    Preview(ChunkStates),
    Open(Arc<Mutex<ChunkLedger>>),
}

impl LedgerView {
    fn state(&self, key: RecipientKey) -> State {
        match self {
            LedgerView::Preview(states) => states.state(key),
            LedgerView::Open(l) => lock(l).states().state(key),
        }
    }
}

/// A donor still to be sent in this process.
struct Todo {
    row: usize,
    key: RecipientKey,
    attempts: u32,
    due: Instant,
}

/// Deterministic jitter in [0, 0.5) from the key, so backoff spreads recipients apart
/// without a random source and a test run repeats exactly.
fn jitter(key: RecipientKey, attempt: u32) -> f64 {
    let x = (key.as_u128() as u64).rotate_left(attempt * 7) % 1000;
    x as f64 / 2000.0
}

/// Processes one chunk: everyone in it who still needs a message, with retries.
fn work_slice(
    sh: &Shared<'_>,
    transport: &mut dyn Transport,
    ws: &mut Workspace,
    job: &Job,
) -> Result<()> {
    let seg = job.seg;
    let segment = &sh.manifest.segments[seg];
    let chunk_ref = &segment.chunks[job.chunk];
    let bytes = prepare::read_chunk(&sh.opts.run, chunk_ref)?;
    // A whole chunk is first judged from a read-only view of its ledger, so a re-run over a
    // finished run (cron) neither writes nor syncs anything for chunks with no work left.
    // Slices of a shared chunk go straight to the shared ledger.
    let view = match job.slices {
        1 => LedgerView::Preview(ChunkStates::read(&sh.opts.run, &chunk_ref.file)?),
        _ => LedgerView::Open(sh.ledger(job)?),
    };
    let n = chunk_ref.rows as usize;
    let mine = (job.slice * n / job.slices)..((job.slice + 1) * n / job.slices);
    let mut index = 0;

    // Rows of the chunk, kept parsed so a retry can render them again.
    let mut rows: Vec<OwnedRecord> = Vec::new();
    let mut todo: Vec<Todo> = Vec::new();
    let now = Instant::now();
    prepare::for_each_row(&bytes, |rec| {
        index += 1;
        if !mine.contains(&(index - 1)) {
            return Ok(());
        }
        let row = rows.len();
        rows.push(rec.to_owned_record());
        match sh.preparer.key_of(rec) {
            // Segment validated every address, so this is a damaged run, not a bad donor.
            None => bail!(
                "{}:{}: the row's address cannot be read; segment the export again",
                chunk_ref.file,
                rec.line
            ),
            Some((key, _)) => match view.state(key) {
                State::Sent | State::Failed => {}
                State::Unknown if sh.opts.on_unknown == OnUnknown::Skip => {
                    sh.count(seg, |c| c.skipped_unknown += 1);
                }
                State::Deferred { attempts } => todo.push(Todo {
                    row,
                    key,
                    attempts,
                    due: now,
                }),
                State::Pending | State::Unknown => todo.push(Todo {
                    row,
                    key,
                    attempts: 0,
                    due: now,
                }),
            },
        }
        Ok(())
    })?;
    let ledger = match view {
        LedgerView::Preview(_) if todo.is_empty() => return Ok(()),
        LedgerView::Preview(_) => sh.ledger(job)?,
        LedgerView::Open(l) => l,
    };
    let mut attempts_here: HashMap<RecipientKey, u32> = HashMap::new();
    while !todo.is_empty() {
        if sh.halted() {
            break;
        }
        // Everything due now, in row order; retries wait for their backoff.
        let now = Instant::now();
        let (mut due, later): (Vec<Todo>, Vec<Todo>) = todo.into_iter().partition(|t| t.due <= now);
        todo = later;
        if due.is_empty() {
            let next = todo.iter().map(|t| t.due).min().unwrap_or(now);
            // Sleep in short steps so a signal or a halt is noticed.
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        due.sort_by_key(|t| t.row);
        for batch in due.chunks(sh.opts.batch.max(1)) {
            if sh.halted() {
                break;
            }
            let allowed = sh.take_budget(batch.len() as u64) as usize;
            if allowed == 0 {
                return sh.slice_done(job);
            }
            let batch = &batch[..allowed];
            let keys: Vec<RecipientKey> = batch.iter().map(|t| t.key).collect();
            lock(&ledger).reserve(&keys, Timestamp::now())?;
            for (i, t) in batch.iter().enumerate() {
                if sh.halted() {
                    lock(&ledger).release(&keys[i..], Timestamp::now())?;
                    sh.give_back((batch.len() - i) as u64);
                    break;
                }
                let retry = send_one(sh, transport, ws, &ledger, seg, &rows[t.row], t)?;
                if let Some(attempts) = retry {
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
                            due: Instant::now() + Duration::from_secs_f64(backoff),
                        });
                    } else {
                        sh.count(seg, |c| c.deferred += 1);
                    }
                }
            }
        }
    }
    // Anyone left waiting for a retry stays deferred for the next run.
    for _ in &todo {
        sh.count(seg, |c| c.deferred += 1);
    }
    sh.slice_done(job)
}

/// Sends one donor's message and records the outcome; `Some(attempts)` when it should be
/// retried.
fn send_one(
    sh: &Shared<'_>,
    transport: &mut dyn Transport,
    ws: &mut Workspace,
    ledger: &Mutex<ChunkLedger>,
    seg: usize,
    row: &OwnedRecord,
    t: &Todo,
) -> Result<Option<u32>> {
    let segment = &sh.manifest.segments[seg];
    let rec = row.record();
    let prepared = match sh.preparer.prepare(segment, &rec, ws) {
        Ok(p) => p,
        Err(e) => {
            lock(ledger).failed(
                t.key,
                Timestamp::now(),
                0,
                &format!("not rendered: {}", e.reason),
                false,
            )?;
            sh.count(seg, |c| c.failed += 1);
            return Ok(None);
        }
    };
    sh.pacer.wait();
    let mut ledger_err = None;
    let outcome = transport.send(
        &sh.opts.envelope_from,
        &prepared.to,
        &prepared.bytes,
        &mut || {
            lock(ledger)
                .transmitting(t.key, Timestamp::now())
                .inspect_err(|e| {
                    ledger_err = Some(e.to_string());
                })
        },
    );
    if let Some(e) = ledger_err {
        bail!("writing the ledger failed, so sending stopped: {e}");
    }
    let now = Timestamp::now();
    match outcome {
        Outcome::Accepted { reply } => {
            lock(ledger).sent(t.key, now, 250, &reply)?;
            sh.count(seg, |c| c.sent += 1);
            Ok(None)
        }
        Outcome::Bounced {
            code,
            text,
            suppress,
        } => {
            lock(ledger).failed(t.key, now, code, &text, suppress)?;
            sh.count(seg, |c| c.failed += 1);
            Ok(None)
        }
        Outcome::Deferred {
            code,
            text,
            throttle,
        } => {
            lock(ledger).deferred(t.key, now, code, &text)?;
            if throttle {
                sh.pacer.slow_down();
            }
            Ok(Some(t.attempts + 1))
        }
        Outcome::Unknown { text } => {
            lock(ledger).unknown(t.key, now, &text)?;
            sh.count(seg, |c| c.unknown += 1);
            Ok(None)
        }
        Outcome::Halt { code, text } => {
            // Not this donor's fault: leave them deferred for the run after the fix.
            lock(ledger).deferred(t.key, now, code, &text)?;
            sh.halt(match code {
                Some(c) => format!("{c} {text}"),
                None => text,
            });
            Ok(None)
        }
    }
}

/// Runs the send loop. `new_transport` makes one transport per worker; `stop` is set by a
/// signal handler.
pub fn send(
    opts: &SendOptions,
    manifest: &Manifest,
    preparer: &Preparer,
    new_transport: &(dyn Fn() -> Box<dyn Transport> + Sync),
    stop: &AtomicBool,
    progress: Option<&Progress>,
) -> Result<SendReport> {
    let started = Instant::now();
    let selected = crate::dryrun::select_segments(manifest, &opts.segments)?;
    let jobs = plan(
        manifest,
        &selected,
        opts.concurrency.max(1),
        opts.batch.max(1),
    );

    let mut budget = opts.limit.unwrap_or(u64::MAX);
    let mut budget_reason = Stop::Limit;
    if let Some(cap) = opts.daily_cap {
        let today = Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date();
        let sent_today = sent_on(&opts.run, manifest, today)?;
        let left = cap.saturating_sub(sent_today);
        if left < budget {
            budget = left;
            budget_reason = Stop::DailyCap;
        }
    }

    let shared = Shared {
        opts,
        manifest,
        preparer,
        session: Session::new(Timestamp::now()),
        pacer: Pacer::new(opts.rate),
        next_job: AtomicUsize::new(0),
        jobs,
        ledgers: Mutex::new(HashMap::new()),
        budget: AtomicU64::new(budget),
        budget_reason,
        stop,
        halt: Mutex::new(None),
        counts: Mutex::new(SessionCounts::default()),
        progress,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.concurrency.max(1))
        .thread_name(|i| format!("send-{i}"))
        .build()
        .context("starting the worker threads")?;
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    pool.scope(|s| {
        for _ in 0..opts.concurrency.max(1) {
            s.spawn(|_| {
                let mut transport = new_transport();
                let mut ws = Workspace::default();
                loop {
                    if shared.halted() || shared.budget.load(Ordering::Relaxed) == 0 {
                        break;
                    }
                    let j = shared.next_job.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = shared.jobs.get(j) else {
                        break;
                    };
                    if let Err(e) = work_slice(&shared, transport.as_mut(), &mut ws, job) {
                        shared.halt(format!("{e:#}"));
                        if let Ok(mut errs) = errors.lock() {
                            errs.push(e);
                        }
                        break;
                    }
                }
                transport.close();
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap_or_default().into_iter().next() {
        return Err(e);
    }
    let halt = shared.halt.into_inner().unwrap_or(None);
    let counts = shared.counts.into_inner().unwrap_or_default();
    let segments = status(&opts.run, manifest, &selected)?;
    let remaining: u64 = segments.iter().map(|s| s.deferred + s.pending).sum();
    let stop_reason = if let Some(h) = halt {
        Stop::Halted(h)
    } else if stop.load(Ordering::Relaxed) {
        Stop::Interrupted
    } else if remaining > 0 && shared.budget.load(Ordering::Relaxed) == 0 {
        shared.budget_reason
    } else {
        Stop::Finished
    };
    let report = SendReport {
        stop: stop_reason,
        session: counts,
        segments,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_reports(&opts.run, manifest, preparer, &report)?;
    Ok(report)
}

/// The work, in run order: whole chunks, or for a run with fewer chunks than twice the
/// connections, chunks cut into slices (of at least one batch) so every connection has work.
fn plan(manifest: &Manifest, selected: &[usize], workers: usize, batch: usize) -> Vec<Job> {
    let chunks: usize = selected
        .iter()
        .map(|&s| manifest.segments[s].chunks.len())
        .sum();
    let want = (2 * workers).div_ceil(chunks.max(1));
    let mut jobs = Vec::new();
    for &seg in selected {
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
fn sent_on(run: &Path, manifest: &Manifest, day: jiff::civil::Date) -> Result<u64> {
    let mut n = 0;
    for s in &manifest.segments {
        for c in &s.chunks {
            n += ChunkStates::read(run, &c.file)?.sent_on(day);
        }
    }
    Ok(n)
}

/// Per-segment totals of the selected segments, read from the ledgers.
pub fn status(run: &Path, manifest: &Manifest, selected: &[usize]) -> Result<Vec<SegmentStatus>> {
    let mut out = Vec::new();
    for &s in selected {
        let seg = &manifest.segments[s];
        let mut st = SegmentStatus {
            segment: seg.name.clone(),
            donors: seg.rows,
            ..SegmentStatus::default()
        };
        let mut recorded = 0;
        for c in &seg.chunks {
            let states = ChunkStates::read(run, &c.file)?;
            for (_, e) in states.iter() {
                recorded += 1;
                match e.state {
                    State::Sent => st.sent += 1,
                    State::Failed => st.failed += 1,
                    State::Deferred { .. } => st.deferred += 1,
                    State::Unknown => st.unknown += 1,
                    State::Pending => recorded -= 1,
                }
            }
        }
        st.pending = seg.rows.saturating_sub(recorded);
        out.push(st);
    }
    Ok(out)
}

/// Writes `report.json`, and from the ledgers `failed.csv`, `suppress-bounced.txt` and
/// `unknown.csv`, each rewritten whole so it always matches the ledger.
fn write_reports(
    run: &Path,
    manifest: &Manifest,
    preparer: &Preparer,
    report: &SendReport,
) -> Result<()> {
    let report_path = run.join("report.json");
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    write_atomic(&report_path, text.as_bytes())?;

    let mut failed = csv::Writer::from_writer(Vec::new());
    failed.write_record(["segment", "chunk", "line", "email", "code", "reason", "at"])?;
    let mut unknown = csv::Writer::from_writer(Vec::new());
    unknown.write_record(["segment", "chunk", "line", "email", "reason", "at"])?;
    let mut bounced = String::from(
        "# Addresses that bounced permanently (5.1.x/5.2.1) in this run: pass to `campaign segment --suppress`.\n",
    );
    for seg in &manifest.segments {
        for c in &seg.chunks {
            let states = ChunkStates::read(run, &c.file)?;
            if states.iter().next().is_none() {
                continue;
            }
            let bytes = prepare::read_chunk(run, c)?;
            prepare::for_each_row(&bytes, |rec| {
                let Some((key, email)) = preparer.key_of(rec) else {
                    return Ok(());
                };
                let Some(e) = states.get(key) else {
                    return Ok(());
                };
                let at = e.at.map(|t| t.to_string()).unwrap_or_default();
                let line = rec.line.to_string();
                match e.state {
                    State::Failed => {
                        failed.write_record([
                            seg.name.as_str(),
                            &c.file,
                            &line,
                            &email,
                            &e.code.map(|c| c.to_string()).unwrap_or_default(),
                            &e.text,
                            &at,
                        ])?;
                        if e.suppress {
                            bounced.push_str(&email);
                            bounced.push('\n');
                        }
                    }
                    State::Unknown => {
                        unknown.write_record([
                            seg.name.as_str(),
                            &c.file,
                            &line,
                            &email,
                            &e.text,
                            &at,
                        ])?;
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
    }
    write_atomic(&run.join("failed.csv"), &failed.into_inner()?)?;
    write_atomic(&run.join("unknown.csv"), &unknown.into_inner()?)?;
    write_atomic(&run.join("suppress-bounced.txt"), bounced.as_bytes())?;
    Ok(())
}

/// Replaces a file whole, so a reader never sees half of it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_refuse_nonsense() {
        assert_eq!("50/s".parse::<Rate>().unwrap().per_second(), 50.0);
        assert_eq!("3000/min".parse::<Rate>().unwrap().per_second(), 50.0);
        assert_eq!("7200/h".parse::<Rate>().unwrap().per_second(), 2.0);
        for bad in ["50", "0/s", "-1/s", "x/s", "5/day", "inf/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pacer_spaces_messages_and_slows_down_on_throttling() {
        let p = Pacer::new(Some("1000/s".parse().unwrap()));
        assert_eq!(p.interval_ns.load(Ordering::Relaxed), 1_000_000);
        p.slow_down();
        assert_eq!(p.interval_ns.load(Ordering::Relaxed), 2_000_000);
        let unlimited = Pacer::new(None);
        unlimited.wait();
        unlimited.slow_down();
        assert!(unlimited.interval_ns.load(Ordering::Relaxed) > 0);
    }

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
