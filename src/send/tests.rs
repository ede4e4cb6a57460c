//! The send loop with a fake transport and a manual clock: retries wait out their backoff on
//! the clock (no sleeping), ledger timestamps are the clock's, and the daily cap follows the
//! clock's day.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::campaign::Campaign;
use crate::clock::ManualClock;
use crate::ledger::{ChunkStates, State};
use crate::preflight::{self, Environment, Purpose, Ready};
use crate::progress::NoProgress;
use crate::segment::{self, SegmentOptions};
use crate::transport::{Journal, Outbound, Outcome};

/// Donors in the run [`segmented`] makes.
const DONORS: usize = 300;

/// Decides a reply instead of acceptance: gets the recipient and its attempt number (from 1).
type Policy = Arc<dyn Fn(&str, u32) -> Option<Outcome> + Send + Sync>;

/// A transport that asks a policy for every message, and logs each attempt with the clock's
/// time.
struct Fake {
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    log: Arc<Mutex<Vec<(String, u32, Duration)>>>,
    dates: Arc<Mutex<Vec<(String, u32, String)>>>,
    clock: Arc<ManualClock>,
    policy: Policy,
    ahead: Option<Ahead>,
}

/// Makes [`Fake`] tell acceptances as a pipelining transport does when the next message's
/// replies are in hand ([`Journal::outcome_before_next`]), and look in the ledger files
/// whenever the journal made it wait before the next message.
#[derive(Clone)]
struct Ahead {
    /// The run directory and its chunk files.
    run: std::path::PathBuf,
    chunks: Vec<String>,
    /// For each wait: whether the held donor was already on disk as sent.
    on_disk: Arc<Mutex<Vec<bool>>>,
}

impl Ahead {
    fn sent_on_disk(&self, to: &str) -> bool {
        let key = crate::email::Address::parse(to).unwrap().key();
        self.chunks.iter().any(|c| {
            ChunkStates::read(&self.run, c)
                .unwrap()
                .iter()
                .any(|(k, e)| k == key && e.state == State::Sent)
        })
    }
}

impl Transport for Fake {
    fn send_batch(&mut self, batch: &[Outbound<'_>], journal: &mut dyn Journal) -> usize {
        let mut held: Option<&str> = None;
        for (i, m) in batch.iter().enumerate() {
            let before = self.clock.elapsed();
            let go = journal.proceed(i);
            if let (Some(ahead), Some(prev)) = (&self.ahead, held.take())
                && self.clock.elapsed() > before
            {
                ahead.on_disk.lock().unwrap().push(ahead.sent_on_disk(prev));
            }
            if !go {
                return i;
            }
            let to: &str = m.envelope.to().as_ref();
            let n = {
                let mut a = self.attempts.lock().unwrap();
                let n = a.entry(to.to_owned()).or_insert(0);
                *n += 1;
                *n
            };
            self.log
                .lock()
                .unwrap()
                .push((to.to_owned(), n, self.clock.elapsed()));
            let date = String::from_utf8_lossy(m.message)
                .lines()
                .find_map(|l| l.strip_prefix("Date: ").map(str::to_owned))
                .unwrap_or_default();
            self.dates.lock().unwrap().push((to.to_owned(), n, date));
            let outcome = match (self.policy)(to, n) {
                Some(refusal) => refusal,
                None => match journal.transmitting(i) {
                    Ok(()) => Outcome::Accepted {
                        reply: format!("2.0.0 queued as {n}"),
                    },
                    Err(e) => Outcome::Halt {
                        code: None,
                        text: e.to_string(),
                    },
                },
            };
            if self.ahead.is_some()
                && i + 1 < batch.len()
                && matches!(outcome, Outcome::Accepted { .. })
            {
                held = Some(to);
                journal.outcome_before_next(i, outcome);
            } else {
                journal.outcome(i, outcome);
            }
        }
        batch.len()
    }

    fn close(&mut self) {}
}

/// What a fake relay saw over several `send` processes.
#[derive(Default, Clone)]
struct Relay {
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    log: Arc<Mutex<Vec<(String, u32, Duration)>>>,
    /// Each attempt's Date header.
    dates: Arc<Mutex<Vec<(String, u32, String)>>>,
    ahead: Option<Ahead>,
}

/// Defers each recipient's first `n` attempts with a 451.
fn defer_first(n: u32) -> Policy {
    Arc::new(move |_, attempt| {
        (attempt <= n).then(|| Outcome::Deferred {
            code: Some(451),
            text: "4.3.0 try again".into(),
            throttle: false,
        })
    })
}

/// A segmented run of `DONORS` donors in `dir/run`.
fn segmented(dir: &Path) -> OpenedRun {
    let mut csv = String::from("email,name\n");
    for i in 0..DONORS {
        csv.push_str(&format!("d{i}@example.org,Donor {i}\n"));
    }
    std::fs::write(dir.join("donors.csv"), csv).unwrap();
    std::fs::write(
        dir.join("campaign.toml"),
        "[campaign]\nid = \"fake-2026\"\n[message]\nfrom = \"Park <appeal@park.example>\"\nunsubscribe_url = \"https://park.example/u?t={{ unsubscribe_token }}\"\n[[segment]]\nname = \"all\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("templates/all")).unwrap();
    std::fs::write(dir.join("templates/all/subject.txt"), "Hello {{ name }}").unwrap();
    std::fs::write(dir.join("templates/all/body.txt"), "Dear {{ name }}\n").unwrap();
    let opts = SegmentOptions {
        donors: dir.join("donors.csv"),
        delimiter: None,
        campaign: Campaign::load(&dir.join("campaign.toml")).unwrap(),
        suppress: Vec::new(),
        out: dir.join("run"),
        chunk_size: 16,
        as_of: "2026-12-01".parse().unwrap(),
        force: false,
        max_reject_rate: 0.0,
        now: "2026-12-01T12:00:00Z".parse().unwrap(),
    };
    segment::run(&opts, &NoProgress).unwrap();
    OpenedRun::open(&dir.join("run"), None).unwrap()
}

fn ready(run: &OpenedRun, clock: &ManualClock) -> Ready {
    let env = Environment {
        smtp_url: Some("smtp://127.0.0.1:2525".into()),
        smtp_password: None,
        unsubscribe_secret: Some("0123456789abcdef0123456789abcdef".into()),
        unsubscribe_secret_file: None,
    };
    preflight::run(run, &env, Purpose::Send, clock.now())
        .unwrap_or_else(|f| panic!("{:?}", f.problems))
}

/// One `send` process over the whole run.
fn send_once(
    run: &OpenedRun,
    clock: &Arc<ManualClock>,
    opts: &SendOptions,
    daily_cap: Option<u64>,
    relay: &Relay,
    policy: Policy,
) -> SendReport {
    send_watching(run, clock, opts, daily_cap, relay, policy, None)
}

/// [`send_once`], honouring suppression lists given to the send.
fn send_watching(
    run: &OpenedRun,
    clock: &Arc<ManualClock>,
    opts: &SendOptions,
    daily_cap: Option<u64>,
    relay: &Relay,
    policy: Policy,
    suppressions: Option<&SuppressionWatch>,
) -> SendReport {
    let ready = ready(run, clock);
    let selection = Selection::all(&run.manifest);
    let budget = Budget {
        limit: None,
        daily_cap,
    };
    let fingerprint = ready.preparer.templates().fingerprint();
    let plan_opts = PlanOptions {
        workers: opts.concurrency,
        batch: opts.batch,
        budget,
        fingerprint: &fingerprint,
        shard: None,
        lock_wait: Duration::ZERO,
    };
    let plan = InProcessPlan::new(run, &selection, &plan_opts, &**clock).unwrap();
    let stop = AtomicBool::new(false);
    let cx = Context {
        run,
        selection: &selection,
        preparer: &ready.preparer,
        clock: &**clock,
        progress: &NoProgress,
        stop: &stop,
        suppressions,
        shard: None,
    };
    let new_transport = || -> Box<dyn Transport> {
        Box::new(Fake {
            attempts: Arc::clone(&relay.attempts),
            log: Arc::clone(&relay.log),
            dates: Arc::clone(&relay.dates),
            clock: Arc::clone(clock),
            policy: Arc::clone(&policy),
            ahead: relay.ahead.clone(),
        })
    };
    send(&cx, opts, &plan, &new_transport).unwrap()
}

fn options() -> SendOptions {
    SendOptions {
        concurrency: 2,
        rate: None,
        on_unknown: OnUnknown::Skip,
        max_attempts: 3,
        retry_delay: Duration::from_secs(30),
        max_wait: SendOptions::MAX_WAIT,
        halt_after: SendOptions::HALT_AFTER,
        batch: 8,
    }
}

/// Every ledger entry of the run.
fn entries(run: &OpenedRun) -> Vec<crate::ledger::Entry> {
    let mut out = Vec::new();
    for c in &run.manifest.segments[0].chunks {
        let states = ChunkStates::read(run.dir(), &c.file).unwrap();
        out.extend(states.iter().map(|(_, e)| e.clone()));
    }
    out
}

#[test]
fn retries_wait_on_the_clock_and_the_ledger_keeps_its_time() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    // Ten seconds before midnight: the first attempts are on 1 December, the retries, 30 s
    // and more later, on the 2nd.
    let clock = Arc::new(ManualClock::new("2026-12-01T23:59:50Z".parse().unwrap()));
    let relay = Relay::default();
    // One worker, so nobody else's waiting moves the clock (see below).
    let mut opts = options();
    opts.concurrency = 1;
    let report = send_once(&run, &clock, &opts, None, &relay, defer_first(1));
    assert_eq!(report.stop, Stop::Finished);
    assert_eq!(report.session.sent, DONORS as u64);
    assert_eq!(report.remaining(), 0);
    assert!(
        relay.attempts.lock().unwrap().values().all(|&n| n == 2),
        "each donor deferred once, then accepted"
    );
    // The backoff (30 s, plus up to 50% jitter) passed on the clock, not on the wall; a
    // worker waits out its lease's retries before its next lease, so leases add up.
    assert!(
        clock.elapsed() >= Duration::from_secs(30),
        "{:?}",
        clock.elapsed()
    );
    let entries = entries(&run);
    assert_eq!(entries.len(), DONORS);
    for e in &entries {
        assert_eq!(e.state, State::Sent);
        let at = e.at.unwrap();
        assert!(
            at > "2026-12-02T00:00:00Z".parse().unwrap() && at <= clock.now(),
            "{at}"
        );
    }
    // Each message is dated when its batch was prepared, not when the send began.
    let dates = relay.dates.lock().unwrap();
    assert_eq!(dates.len(), 2 * DONORS);
    for (to, attempt, date) in dates.iter() {
        let day = if *attempt == 1 {
            "Tue, 01 Dec 2026 23:59:5"
        } else {
            "Wed, 02 Dec 2026 00:"
        };
        assert!(date.starts_with(day), "{to} attempt {attempt}: {date}");
    }
}

#[test]
fn the_daily_cap_follows_the_clock_day() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let relay = Relay::default();
    let first = send_once(&run, &clock, &options(), Some(15), &relay, defer_first(0));
    assert_eq!(first.stop, Stop::DailyCap);
    assert_eq!(first.session.sent, 15);
    clock.advance(Duration::from_secs(3600));
    let same_day = send_once(&run, &clock, &options(), Some(15), &relay, defer_first(0));
    assert_eq!(same_day.session.sent, 0, "the cap holds across processes");
    assert_eq!(same_day.stop, Stop::DailyCap);
    clock.advance(Duration::from_secs(24 * 3600));
    let next_day = send_once(&run, &clock, &options(), Some(15), &relay, defer_first(0));
    assert_eq!(next_day.session.sent, 15);
    let last = send_once(&run, &clock, &options(), None, &relay, defer_first(0));
    assert_eq!(last.session.sent, (DONORS - 30) as u64);
    assert_eq!(last.stop, Stop::Finished);
    assert!(
        relay.attempts.lock().unwrap().values().all(|&n| n == 1),
        "nobody twice"
    );
}

/// The throttling case: 6 of 300 donors get a 421 on their first attempt. Their
/// retries wait on the schedule while the worker goes on: the other 294 are all sent before
/// the first retry is due, then the 6 are sent, and nothing is left deferred.
#[test]
fn a_deferral_never_blocks_the_other_donors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let relay = Relay::default();
    let throttled: Vec<String> = [7, 50, 51, 120, 200, 299]
        .iter()
        .map(|i| format!("d{i}@example.org"))
        .collect();
    let policy: Policy = {
        let throttled = throttled.clone();
        Arc::new(move |to, attempt| {
            (attempt == 1 && throttled.iter().any(|t| t == to)).then(|| Outcome::Deferred {
                code: Some(421),
                text: "4.7.0 Try again later, closing connection".into(),
                throttle: true,
            })
        })
    };
    // One worker: a manual clock moves when anyone sleeps on it, so a second worker waiting
    // for retries would move time under the first one's feet.
    let mut opts = options();
    opts.concurrency = 1;
    let report = send_once(&run, &clock, &opts, None, &relay, policy);
    assert_eq!(report.stop, Stop::Finished);
    assert_eq!(report.session.sent, DONORS as u64);
    assert_eq!(report.session.deferred, 0);
    let log = relay.log.lock().unwrap();
    assert_eq!(log.len(), DONORS + throttled.len());
    let first_retry = log
        .iter()
        .filter(|(_, n, _)| *n == 2)
        .map(|(_, _, at)| *at)
        .min()
        .unwrap();
    assert!(first_retry >= Duration::from_secs(30), "{first_retry:?}");
    let healthy_done = log
        .iter()
        .filter(|(to, _, _)| !throttled.contains(to))
        .map(|(_, _, at)| *at)
        .max()
        .unwrap();
    assert!(
        healthy_done < Duration::from_secs(30),
        "the healthy donors waited for the retries: last sent at {healthy_done:?}"
    );
    // In order: every first attempt, then the six retries.
    let (firsts, retries) = log.split_at(DONORS);
    assert!(firsts.iter().all(|(_, n, _)| *n == 1));
    assert!(
        retries
            .iter()
            .all(|(to, n, _)| *n == 2 && throttled.contains(to))
    );
}

/// Retries due after `--max-wait` are not waited for: those donors stay deferred, counted
/// once, and the next run sends them.
#[test]
fn retries_not_due_within_max_wait_stay_deferred() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let relay = Relay::default();
    let mut opts = options();
    opts.max_wait = Duration::from_secs(10);
    let report = send_once(&run, &clock, &opts, None, &relay, defer_first(1));
    assert_eq!(report.session.sent, 0);
    assert_eq!(report.session.deferred, DONORS as u64);
    assert_eq!(report.stop, Stop::Finished);
    assert_eq!(report.remaining(), DONORS as u64);
    assert!(
        clock.elapsed() < Duration::from_secs(30),
        "{:?}",
        clock.elapsed()
    );
    // The next run sends them all.
    let report = send_once(&run, &clock, &opts, None, &relay, defer_first(1));
    assert_eq!(report.session.sent, DONORS as u64);
}

/// A connection the relay closes with 421 is reopened only after a pause (0.25 s, doubling
/// while the relay keeps closing, reset by an accepted message).
#[test]
fn a_421_pauses_that_connection_before_it_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let relay = Relay::default();
    let closing = ["d3@example.org", "d4@example.org", "d10@example.org"];
    let policy: Policy = Arc::new(move |to, attempt| {
        (attempt == 1 && closing.contains(&to)).then(|| Outcome::Deferred {
            code: Some(421),
            text: "4.4.2 closing connection".into(),
            throttle: false,
        })
    });
    let mut opts = options();
    opts.concurrency = 1;
    let report = send_once(&run, &clock, &opts, None, &relay, policy);
    assert_eq!(report.session.sent, DONORS as u64);
    let log = relay.log.lock().unwrap();
    let at = |to: &str| log.iter().find(|(t, n, _)| t == to && *n == 1).unwrap().2;
    // d3 closes: d4 waits 0.25 s; d4 closes again: d5 waits 0.5 s; d5 is accepted, so after
    // d10 closes, d11 waits 0.25 s again.
    let ms = Duration::from_millis;
    assert_eq!(at("d4@example.org") - at("d3@example.org"), ms(250));
    assert_eq!(at("d5@example.org") - at("d4@example.org"), ms(500));
    assert_eq!(at("d11@example.org") - at("d10@example.org"), ms(250));
    assert_eq!(
        at("d6@example.org"),
        at("d5@example.org"),
        "no pause after an accepted one"
    );
}

/// A spent budget ends the run even with retries waiting: they stay deferred, counted once.
#[test]
fn a_spent_budget_leaves_the_retries_deferred() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let relay = Relay::default();
    // 15 messages a day: every first attempt is deferred, the budget is gone, and the retries
    // are due at once (no delay), which must not keep a worker taking and putting them back.
    let mut opts = options();
    opts.retry_delay = Duration::ZERO;
    let report = send_once(&run, &clock, &opts, Some(15), &relay, defer_first(1));
    assert_eq!(report.stop, Stop::DailyCap);
    assert_eq!(report.session.sent, 0);
    assert_eq!(report.session.deferred, 15);
    assert_eq!(relay.log.lock().unwrap().len(), 15);
}

#[test]
fn a_list_given_to_send_is_read_again_and_stops_later_donors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    let clock = Arc::new(ManualClock::new("2026-12-01T12:00:00Z".parse().unwrap()));
    let list = tmp.path().join("unsubscribed.txt");
    std::fs::write(&list, "# from the unsubscribe server\nD5@example.org\n").unwrap();
    let watch =
        SuppressionWatch::load(vec![list.clone()], Duration::from_secs(60), clock.elapsed())
            .unwrap();
    let relay = Relay::default();
    // When d20's message goes out, d250 unsubscribes and a minute passes: the list is read
    // again before a later batch is reserved, so d250 is stopped. One worker keeps the order.
    let policy: Policy = {
        let clock = Arc::clone(&clock);
        Arc::new(move |to, _| {
            if to == "d20@example.org" {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&list)
                    .unwrap();
                std::io::Write::write_all(&mut f, b"d250@example.org\n").unwrap();
                clock.advance(Duration::from_secs(61));
            }
            None
        })
    };
    let mut opts = options();
    opts.concurrency = 1;
    let report = send_watching(&run, &clock, &opts, None, &relay, policy, Some(&watch));
    assert_eq!(report.stop, Stop::Finished);
    assert_eq!(report.session.suppressed, 2);
    assert_eq!(report.session.sent, DONORS as u64 - 2);
    assert_eq!(report.segments[0].suppressed, 2);
    assert_eq!(report.remaining(), 0);
    let attempts = relay.attempts.lock().unwrap();
    assert!(!attempts.contains_key("d5@example.org"));
    assert!(!attempts.contains_key("d250@example.org"));
    assert_eq!(attempts.len(), DONORS - 2);
    let suppressed = entries(&run)
        .into_iter()
        .filter(|e| e.state == State::Suppressed)
        .count();
    assert_eq!(suppressed, 2);
    let listed = std::fs::read_to_string(run.dir().join(crate::rundir::SUPPRESSED_CSV)).unwrap();
    assert!(
        listed.contains("d5@example.org") && listed.contains("d250@example.org"),
        "{listed}"
    );

    // A second send honours the ledger: nothing more is sent or recorded.
    let again = send_once(&run, &clock, &opts, None, &relay, defer_first(0));
    assert_eq!((again.session.sent, again.session.suppressed), (0, 0));
    assert_eq!(again.segments[0].suppressed, 2);
}

#[test]
fn a_list_that_cannot_be_read_again_stops_the_send() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("unsubscribed.txt");
    std::fs::write(&list, "a@example.org\n").unwrap();
    let watch = SuppressionWatch::load(vec![list.clone()], Duration::from_secs(60), Duration::ZERO)
        .unwrap();
    assert_eq!(watch.at(Duration::from_secs(30)).unwrap().len(), 1);
    std::fs::remove_file(&list).unwrap();
    // Not due yet: the list as read.
    assert_eq!(watch.at(Duration::from_secs(59)).unwrap().len(), 1);
    let Err(err) = watch.at(Duration::from_secs(60)) else {
        panic!("a removed list was read");
    };
    let err = format!("{err:#}");
    assert!(err.contains("unsubscribed.txt"), "{err}");
    assert!(err.contains("re-read every minute"), "{err}");
}

/// An acceptance held for the next message's transmit record ([`Journal::outcome_before_next`])
/// is on disk before the journal waits for a pacing slot, and every donor's is on disk when
/// the send ends: a kill while waiting would otherwise list a sent donor as unknown.
#[test]
fn an_outcome_held_for_the_next_record_is_written_before_any_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let run = segmented(tmp.path());
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let ahead = Ahead {
        run: run.dir().to_owned(),
        chunks: run.manifest.segments[0]
            .chunks
            .iter()
            .map(|c| c.file.clone())
            .collect(),
        on_disk: Arc::default(),
    };
    let relay = Relay {
        ahead: Some(ahead.clone()),
        ..Relay::default()
    };
    // One worker: with two, the other's sleep moves the shared clock while this one's slot
    // had already come, and the test would take that for a wait.
    let mut opts = options();
    opts.concurrency = 1;
    opts.rate = Some("10/s".parse().unwrap());
    let report = send_once(&run, &clock, &opts, None, &relay, Arc::new(|_, _| None));
    assert_eq!(report.session.sent, DONORS as u64);
    let on_disk = ahead.on_disk.lock().unwrap();
    // Every message but the first waits for its slot.
    assert!(on_disk.len() > DONORS / 2, "{} waits", on_disk.len());
    assert!(
        on_disk.iter().all(|&d| d),
        "a held acceptance was not written before a wait"
    );
    let entries = entries(&run);
    assert_eq!(entries.len(), DONORS);
    assert!(entries.iter().all(|e| e.state == State::Sent));
}
