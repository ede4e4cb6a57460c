//! Values of `send`'s flags that clap cannot take as they are: bounded numbers, durations,
//! and `--on-unknown`'s choices (the library's type has no clap derive).

use std::time::Duration;

use campaign::campaign::MAX_CONCURRENCY;
use campaign::send::OnUnknown;

/// `--on-unknown`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownFlag {
    /// Leave them out and list them in `unknown.csv` (nobody gets two messages).
    Skip,
    /// Send them again (a donor may get the message twice).
    Resend,
}

impl From<UnknownFlag> for OnUnknown {
    fn from(f: UnknownFlag) -> OnUnknown {
        match f {
            UnknownFlag::Skip => OnUnknown::Skip,
            UnknownFlag::Resend => OnUnknown::Resend,
        }
    }
}

pub(super) fn concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of connections from 1 to {MAX_CONCURRENCY}"
        )),
    }
}

pub(super) fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (for example 30)"))?;
    campaign::campaign::seconds(s, secs)
}
