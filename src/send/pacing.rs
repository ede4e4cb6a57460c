//! Pacing shared by every worker: a global minimum interval between message starts, which
//! throttling replies widen and quiet periods narrow again (AIMD: halve on throttling, then
//! add back a tenth of the rate every few seconds without it, up to `--rate`).
//!
//! Owns the interval, the next free slot and the record of slow-downs for the report. Time
//! comes from the run's [`Clock`], so spacing and recovery are testable without sleeping. It
//! never decides what counts as throttling (the transport's reply reading does).

use std::sync::Mutex;
use std::time::Duration;

use crate::campaign::Rate;
use crate::clock::Clock;

/// The longest a wait goes without looking at the stop flag.
const STEP: Duration = Duration::from_millis(100);

/// The slowest the pacer ever gets: one message every 10 s; the relay will recover.
const SLOWEST_NS: u64 = 10_000_000_000;

/// Throttling replies within this long of a halving are the same episode: connections
/// throttled together halve the rate once, not once each.
const HOLD: Duration = Duration::from_secs(1);

/// How long without throttling before the rate goes up a step.
const RECOVERY: Duration = Duration::from_secs(5);

/// How the rate went, for the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PacingReport {
    /// Times the rate was halved for throttling replies.
    pub slowdowns: u64,
    /// The lowest rate reached, messages per second; `None` if never slowed.
    pub lowest_per_second: Option<f64>,
}

struct State {
    /// The next free slot, on the clock's monotonic time.
    next: Duration,
    /// The current interval; 0 is unlimited.
    interval_ns: u64,
    /// The interval to recover to: `--rate`'s, or 0 for unlimited.
    target_ns: u64,
    /// The rate recovery adds per step, messages per second (set at the first slow-down).
    step_per_s: f64,
    /// The rate to recover to when unlimited: the rate seen before the first slow-down.
    ceiling_per_s: f64,
    last_change: Option<Duration>,
    report: PacingReport,
    /// Messages started, for the rate seen before a first slow-down when unlimited.
    sent: u64,
}

/// Spaces message starts across all workers.
pub(super) struct Pacer<'a> {
    clock: &'a dyn Clock,
    started: Duration,
    state: Mutex<State>,
}

fn per_second(interval_ns: u64) -> f64 {
    1e9 / interval_ns as f64
}

fn interval(per_s: f64) -> u64 {
    ((1e9 / per_s) as u64).clamp(1, SLOWEST_NS)
}

impl<'a> Pacer<'a> {
    pub(super) fn new(rate: Option<Rate>, clock: &'a dyn Clock) -> Pacer<'a> {
        let target_ns = rate.map_or(0, |r| interval(r.per_second()));
        let now = clock.elapsed();
        Pacer {
            clock,
            started: now,
            state: Mutex::new(State {
                next: now,
                interval_ns: target_ns,
                target_ns,
                step_per_s: 0.0,
                ceiling_per_s: 0.0,
                last_change: None,
                report: PacingReport::default(),
                sent: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the next message's slot has come, so that [`Pacer::wait`] would return at once
    /// (unless another worker takes the slot first). Changes nothing.
    pub(super) fn is_open(&self) -> bool {
        let s = self.state();
        s.interval_ns == 0 || s.next <= self.clock.elapsed()
    }

    /// Waits for this message's slot, in steps short enough that `stop` is noticed within
    /// a tenth of a second; `false` when it said stop before the slot came.
    pub(super) fn wait(&self, stop: &dyn Fn() -> bool) -> bool {
        let slot = {
            let mut s = self.state();
            s.sent += 1;
            let now = self.clock.elapsed();
            self.recover(&mut s, now);
            if s.interval_ns == 0 {
                return true;
            }
            let slot = s.next.max(now);
            s.next = slot + Duration::from_nanos(s.interval_ns);
            slot
        };
        loop {
            let now = self.clock.elapsed();
            if slot <= now {
                return true;
            }
            if stop() {
                return false;
            }
            self.clock.sleep((slot - now).min(STEP));
        }
    }

    /// Adds a step back after a quiet period, up to the target.
    fn recover(&self, s: &mut State, now: Duration) {
        let Some(changed) = s.last_change else {
            return;
        };
        if s.interval_ns == s.target_ns || now < changed + RECOVERY {
            return;
        }
        let rate = per_second(s.interval_ns) + s.step_per_s;
        let ceiling = if s.target_ns == 0 {
            s.ceiling_per_s
        } else {
            per_second(s.target_ns)
        };
        s.interval_ns = if rate >= ceiling {
            s.target_ns
        } else {
            interval(rate)
        };
        s.last_change = Some(now);
    }

    /// Halves the rate after a throttling reply (from the rate seen so far when unlimited),
    /// once per episode.
    pub(super) fn slow_down(&self) {
        let now = self.clock.elapsed();
        let mut s = self.state();
        if s.report.slowdowns > 0 && s.last_change.is_some_and(|t| now < t + HOLD) {
            return;
        }
        let current = if s.interval_ns == 0 {
            let secs = (now - self.started).as_secs_f64().max(0.001);
            let seen = (s.sent as f64 / secs).max(1.0);
            if s.report.slowdowns == 0 {
                s.ceiling_per_s = seen;
            }
            interval(seen)
        } else {
            s.interval_ns
        };
        if s.report.slowdowns == 0 {
            let full = if s.target_ns == 0 {
                per_second(current)
            } else {
                per_second(s.target_ns)
            };
            s.step_per_s = (full / 10.0).max(0.1);
        }
        s.interval_ns = current.saturating_mul(2).min(SLOWEST_NS);
        s.last_change = Some(now);
        s.report.slowdowns += 1;
        let rate = per_second(s.interval_ns);
        s.report.lowest_per_second = Some(match s.report.lowest_per_second {
            Some(low) => low.min(rate),
            None => rate,
        });
    }

    /// How the rate went.
    pub(super) fn report(&self) -> PacingReport {
        self.state().report.clone()
    }

    #[cfg(test)]
    fn per_second_now(&self) -> Option<f64> {
        let s = self.state();
        (s.interval_ns > 0).then(|| per_second(s.interval_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn clock() -> ManualClock {
        ManualClock::new(jiff::Timestamp::UNIX_EPOCH)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    #[test]
    fn slots_follow_the_clock_without_sleeping() {
        let clock = clock();
        let p = Pacer::new(Some("2/s".parse().unwrap()), &clock);
        for _ in 0..5 {
            assert!(p.wait(&|| false));
        }
        // The first message goes at once, each later one half a second after the one before.
        assert_eq!(clock.elapsed(), Duration::from_millis(2000));
        clock.advance(Duration::from_secs(10));
        assert!(p.wait(&|| false));
        assert_eq!(
            clock.elapsed(),
            Duration::from_secs(12),
            "an idle gap is not owed"
        );
        p.slow_down();
        assert!(p.wait(&|| false));
        assert_eq!(clock.elapsed(), Duration::from_millis(12_500));
        assert!(p.wait(&|| false));
        assert_eq!(
            clock.elapsed(),
            Duration::from_millis(13_500),
            "one per second now"
        );
    }

    #[test]
    fn throttling_halves_once_per_episode_then_the_rate_recovers_to_the_limit() {
        let clock = clock();
        let p = Pacer::new(Some("100/s".parse().unwrap()), &clock);
        p.slow_down();
        // Eight connections throttled together are one episode.
        for _ in 0..7 {
            p.slow_down();
        }
        assert!(close(p.per_second_now(), 50.0), "{:?}", p.per_second_now());
        clock.advance(Duration::from_secs(2));
        p.slow_down();
        assert!(close(p.per_second_now(), 25.0), "{:?}", p.per_second_now());
        // Quiet: a tenth of the limit (10/s) back every 5 s, never above the limit.
        let mut seen = Vec::new();
        for _ in 0..12 {
            clock.advance(RECOVERY);
            assert!(p.wait(&|| false));
            seen.push(p.per_second_now().unwrap().round() as u64);
        }
        assert_eq!(seen, [35, 45, 55, 65, 75, 85, 95, 100, 100, 100, 100, 100]);
        assert_eq!(
            p.report(),
            PacingReport {
                slowdowns: 2,
                lowest_per_second: Some(25.0),
            }
        );
    }

    #[test]
    fn unlimited_slows_from_the_rate_seen_and_recovers_to_unlimited() {
        let clock = clock();
        let p = Pacer::new(None, &clock);
        for _ in 0..100 {
            assert!(p.wait(&|| false));
        }
        clock.advance(Duration::from_secs(1));
        p.slow_down();
        assert!(close(p.per_second_now(), 50.0), "{:?}", p.per_second_now());
        for _ in 0..20 {
            clock.advance(RECOVERY);
            assert!(p.wait(&|| false));
        }
        assert_eq!(p.per_second_now(), None, "back to unlimited");
    }

    #[test]
    fn a_stop_is_noticed_within_a_step() {
        let clock = clock();
        let p = Pacer::new(Some("6/min".parse().unwrap()), &clock);
        assert!(p.wait(&|| false));
        // The next slot is 10 s away; a stop raised after 0.3 s ends the wait at once.
        let start = clock.elapsed();
        assert!(!p.wait(&|| clock.elapsed() - start >= Duration::from_millis(300)));
        assert_eq!(clock.elapsed() - start, Duration::from_millis(300));
    }
}
