//! Exit codes: what a cron job or scheduler can branch on.
//!
//! Owns the mapping from outcomes to process exit codes, and the error type that carries one
//! to `main`. It never prints.

use std::fmt;

/// Every exit code `campaign` uses. Stable: scripts depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Everything asked for was done.
    Success = 0,
    /// An unexpected failure (I/O error, bug); the message says what.
    Failure = 1,
    /// Bad command line or configuration (campaign file, rules, column names, lists): nothing
    /// was done; fix and re-run.
    Usage = 2,
    /// The input was refused as unsafe to act on (too many invalid rows, no rows, an existing
    /// run in the way): nothing was written.
    Refused = 3,
    /// Finished, but some donors' messages could not be rendered (a data or template
    /// problem listed in the failures file): they get nothing until it is fixed.
    SomeFailed = 4,
    /// `send` stopped with donors still to do (deferred for a retry, the limit or the daily
    /// cap reached, or interrupted): run it again later to continue.
    Remaining = 5,
    /// `send` halted because the server refused the sender (policy 5.7.x, authentication),
    /// or because the relay failed many donors in a row alike (the circuit breaker): fix
    /// DNS, credentials, content or the relay, then run again.
    Halted = 6,
    /// Another `send` holds the run's lock (cron overlap); nothing was done.
    Locked = 7,
    /// `send` finished, but the connection was lost after some messages of this process were
    /// sent: their outcome is unknown (listed in `unknown.csv`); decide, e.g. from the
    /// relay's logs, before `--on-unknown resend`.
    Unknown = 8,
}

impl From<Code> for std::process::ExitCode {
    fn from(c: Code) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

/// An error on its way to `main`, with the exit code it should produce.
pub struct Error {
    /// The exit code.
    pub code: Code,
    /// The message, with its context chain.
    pub error: anyhow::Error,
}

impl Error {
    /// An error with an explicit code.
    pub fn new(code: Code, error: impl Into<anyhow::Error>) -> Self {
        Error {
            code,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(error: anyhow::Error) -> Self {
        Error {
            code: Code::Failure,
            error,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (exit {})", self.error, self.code as u8)
    }
}

/// Replaces control characters (other than newline and tab) with escapes, so donor data in an
/// error message cannot move the cursor or recolour an operator's terminal.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_only() {
        assert_eq!(escape_controls("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\nc");
        assert_eq!(escape_controls("Zoë\r"), "Zoë\\r");
    }
}
