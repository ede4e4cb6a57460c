//! Pacing shared by every worker: a global minimum interval between message starts, which
//! throttling replies widen.
//!
//! Owns the interval and the next free slot. Time comes from the run's [`Clock`], so the
//! spacing is testable without sleeping. It never decides what counts as throttling (the
//! transport's reply reading does).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::campaign::Rate;
use crate::clock::Clock;

/// The longest a wait goes without looking at the stop flag.
const STEP: Duration = Duration::from_millis(100);

/// The slowest the pacer ever gets: one message every 10 s; the relay will recover.
const SLOWEST_NS: u64 = 10_000_000_000;

/// Spaces message starts across all workers.
pub(super) struct Pacer<'a> {
    clock: &'a dyn Clock,
    interval_ns: AtomicU64,
    /// The next free slot, on the clock's monotonic time.
    next: Mutex<Duration>,
    /// When pacing started, on the same time.
    started: Duration,
    sent: AtomicU64,
}

impl<'a> Pacer<'a> {
    pub(super) fn new(rate: Option<Rate>, clock: &'a dyn Clock) -> Pacer<'a> {
        let interval_ns = rate.map_or(0, |r| (1e9 / r.per_second()) as u64);
        let now = clock.elapsed();
        Pacer {
            clock,
            interval_ns: AtomicU64::new(interval_ns),
            next: Mutex::new(now),
            started: now,
            sent: AtomicU64::new(0),
        }
    }

    /// Waits for this message's slot, in steps short enough that `stop` is noticed within
    /// a tenth of a second; `false` when it said stop before the slot came.
    pub(super) fn wait(&self, stop: &dyn Fn() -> bool) -> bool {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let interval = self.interval_ns.load(Ordering::Relaxed);
        if interval == 0 {
            return true;
        }
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(self.clock.elapsed());
            *next = slot + Duration::from_nanos(interval);
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

    /// Halves the rate after a throttling reply (from the observed rate when unlimited).
    pub(super) fn slow_down(&self) {
        let current = self.interval_ns.load(Ordering::Relaxed);
        let base = if current == 0 {
            let secs = (self.clock.elapsed() - self.started)
                .as_secs_f64()
                .max(0.001);
            let rate = (self.sent.load(Ordering::Relaxed) as f64 / secs).max(1.0);
            (1e9 / rate) as u64
        } else {
            current
        };
        let slower = base.saturating_mul(2).min(SLOWEST_NS);
        self.interval_ns.store(slower, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn pacer_spaces_messages_and_slows_down_on_throttling() {
        let clock = ManualClock::new(jiff::Timestamp::UNIX_EPOCH);
        let p = Pacer::new(Some("1000/s".parse().unwrap()), &clock);
        assert_eq!(p.interval_ns.load(Ordering::Relaxed), 1_000_000);
        p.slow_down();
        assert_eq!(p.interval_ns.load(Ordering::Relaxed), 2_000_000);
        let unlimited = Pacer::new(None, &clock);
        assert!(unlimited.wait(&|| false));
        unlimited.slow_down();
        assert!(unlimited.interval_ns.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn slots_follow_the_clock_without_sleeping() {
        let clock = ManualClock::new(jiff::Timestamp::UNIX_EPOCH);
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
    fn a_stop_is_noticed_within_a_step() {
        let clock = ManualClock::new(jiff::Timestamp::UNIX_EPOCH);
        let p = Pacer::new(Some("6/min".parse().unwrap()), &clock);
        assert!(p.wait(&|| false));
        // The next slot is 10 s away; a stop raised after 0.3 s ends the wait at once.
        let start = clock.elapsed();
        assert!(!p.wait(&|| clock.elapsed() - start >= Duration::from_millis(300)));
        assert_eq!(clock.elapsed() - start, Duration::from_millis(300));
    }
}
