//! Time, through one value passed in: the wall clock for ledger timestamps, the daily cap and
//! the Date header, and a monotonic clock for pacing and retry backoff.
//!
//! Owns nothing but the seam: the binary passes [`SystemClock`]; tests pass a [`ManualClock`]
//! and move it forward, so pacing, backoff and "today" are tested without sleeping. Nothing in
//! the library asks the operating system for the time except through a [`Clock`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

/// A source of time.
pub trait Clock: Send + Sync {
    /// The wall-clock time (UTC).
    fn now(&self) -> Timestamp;
    /// Monotonic time since the clock was made; never goes backwards.
    fn elapsed(&self) -> Duration;
    /// Waits `d` (a manual clock just moves on).
    fn sleep(&self, d: Duration);
}

/// The operating system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    /// A clock whose monotonic time starts now.
    pub fn new() -> SystemClock {
        SystemClock {
            started: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock that moves only when told to, or when someone sleeps on it.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(Timestamp, Duration)>,
}

impl ManualClock {
    /// A clock showing `now`, with monotonic time zero.
    pub fn new(now: Timestamp) -> ManualClock {
        ManualClock {
            state: Mutex::new((now, Duration::ZERO)),
        }
    }

    /// Moves both clocks forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.checked_add(d).unwrap_or(s.0);
        s.1 += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }
    fn elapsed(&self) -> Duration {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start: Timestamp = "2026-12-01T23:59:59Z".parse().unwrap();
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        c.sleep(Duration::from_secs(2));
        assert_eq!(c.elapsed(), Duration::from_secs(2));
        assert_eq!(c.now().to_string(), "2026-12-02T00:00:01Z");
    }
}
