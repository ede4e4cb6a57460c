//! Values of flags that clap cannot take as they are: bounded numbers, durations, dates,
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

/// A duration: seconds (`30`), or a number with `s`, `m` or `h` (`90s`, `5m`, `1h`).
pub(super) fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (for example 30, 90s, 5m or 1h)"))?;
    campaign::campaign::seconds(s, n * unit)
}

/// `--as-of`: a calendar date, written YYYY-MM-DD.
pub(super) fn date(s: &str) -> Result<jiff::civil::Date, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not a date campaign reads: write it as YYYY-MM-DD, for example 2026-11-29"
        )
    })
}
