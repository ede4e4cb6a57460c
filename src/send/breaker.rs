//! The circuit breaker: when the relay, not the donors, is failing, stop before the whole
//! list is spent on it.
//!
//! Owns the count of consecutive donors whose outcome the relay caused in the same way
//! ([`Health::Failing`] with one [`Fault`]). A working outcome resets it; an unclear one
//! (a temporary refusal, throttling) leaves it as it is. It never records anything and never
//! decides how an outcome is recorded: the donors it counts were already deferred (or, for a
//! connection lost after the message, unknown) by the reply reading.

use std::sync::Mutex;

use crate::transport::reply::{Fault, Health};

/// Consecutive donors the relay failed alike, across all workers.
pub(super) struct Breaker {
    threshold: usize,
    streak: Mutex<(Option<Fault>, usize)>,
}

impl Breaker {
    /// A breaker that trips at `threshold` consecutive failures of one kind (at least 1).
    pub(super) fn new(threshold: usize) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            streak: Mutex::new((None, 0)),
        }
    }

    /// Counts one donor's outcome; `Some` with the fault when this one trips the breaker.
    pub(super) fn observe(&self, health: Health) -> Option<Fault> {
        let mut s = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        match health {
            Health::Working => *s = (None, 0),
            Health::Unclear => {}
            Health::Failing(fault) => {
                if s.0 == Some(fault) {
                    s.1 += 1;
                } else {
                    *s = (Some(fault), 1);
                }
                if s.1 == self.threshold {
                    return Some(fault);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_on_a_run_of_one_fault_only() {
        let b = Breaker::new(3);
        let protocol = Health::Failing(Fault::Protocol);
        assert_eq!(b.observe(protocol), None);
        assert_eq!(b.observe(Health::Unclear), None);
        assert_eq!(b.observe(protocol), None);
        // A working outcome starts the count again; so does another kind of fault.
        assert_eq!(b.observe(Health::Working), None);
        assert_eq!(b.observe(protocol), None);
        assert_eq!(b.observe(Health::Failing(Fault::System)), None);
        assert_eq!(b.observe(protocol), None);
        assert_eq!(b.observe(protocol), None);
        assert_eq!(b.observe(protocol), Some(Fault::Protocol));
        // Once: the halt is already on its way.
        assert_eq!(b.observe(protocol), None);
    }
}
