//! What `campaign status` says of a run: its state (not started, sending now, stopped and
//! why, complete), the totals and the top reasons from the ledgers, when deferred donors are
//! due, the next command, and the exit code that mirrors `send`'s.
//!
//! Owns putting the run's evidence together: the locks (who is sending, [`crate::ledger::holders`]),
//! the halt marker, the last reports `send` wrote, and the ledgers. It only reads; it never
//! writes a report, a ledger or a lock file.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use jiff::Timestamp;

use super::halt;
use super::reports::{self, Reason, SegmentStatus};
use crate::exit::Code;
use crate::ledger::{self, Holder};
use crate::manifest::Manifest;
use crate::run::Selection;
use crate::rundir::{LEDGER_DIR, REPORT_JSON};

/// How many reasons the overview keeps, most donors first.
const TOP_REASONS: usize = 5;

/// A run as `status` describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overview {
    /// Where the run is: `state`, and with it `processes`, or `at` and `why`.
    #[serde(flatten)]
    pub state: RunState,
    /// Per segment, from the ledgers.
    pub segments: Vec<SegmentStatus>,
    /// Why donors failed, were deferred or are unknown: the most common first.
    pub reasons: Vec<Reason>,
    /// Deferred donors, when there are some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferred>,
    /// The halt marker's words, when the relay halted the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halt: Option<String>,
    /// The newest report a `send` wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_report: Option<LastReport>,
    /// What to run next, in order; empty when nothing is left to do.
    pub next: Vec<String>,
    /// The exit code `status` gives: `send`'s for the same run (0 complete, 5 donors left,
    /// 6 halted, 7 a send is running).
    #[serde(serialize_with = "code_number")]
    pub exit: Code,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// No `send` has recorded anything.
    NotStarted,
    /// A `send` (or shards) holds the run's locks now.
    Sending {
        /// Each process, as its lock file names it.
        processes: Vec<Holder>,
    },
    /// No `send` is running and donors are left.
    Stopped {
        /// When, as far as the run tells (the last report, or the last ledger record).
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<String>,
        /// Why.
        why: String,
    },
    /// Every donor has an outcome.
    Complete,
}

/// Deferred donors and when they are due.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deferred {
    /// How many.
    pub donors: u64,
    /// The newest deferral.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_deferred_at: Option<String>,
    /// When they are retried.
    pub due: String,
}

/// The newest report of a `send` (`RUN/report.json`, or a shard's in `RUN/reports/`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastReport {
    /// Its path.
    pub file: String,
    /// When it was written.
    pub at: String,
    /// Why that send stopped, as it recorded it.
    pub stop: serde_json::Value,
    /// The shard that wrote it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// Reads everything `status` says of `run`.
pub fn overview(run: &Path, manifest: &Manifest) -> Result<Overview> {
    let processes = ledger::holders(run)?;
    let (segments, findings) =
        reports::status_and_findings(run, manifest, &Selection::all(manifest))?;
    let halt = halt::read(run)?;
    let last = last_report(run)?;
    let sum = |f: fn(&SegmentStatus) -> u64| segments.iter().map(f).sum::<u64>();
    let (donors, pending, deferred) = (sum(|s| s.donors), sum(|s| s.pending), sum(|s| s.deferred));
    let (unknown, failed) = (sum(|s| s.unknown), sum(|s| s.failed));
    let left = pending + deferred;
    let stop_kind = last
        .as_ref()
        .and_then(|r| r.report.stop["kind"].as_str().map(str::to_owned));
    let daily_cap = stop_kind.as_deref() == Some("daily_cap");

    let state = if !processes.is_empty() {
        RunState::Sending { processes }
    } else if left == 0 {
        RunState::Complete
    } else if pending == donors && last.is_none() {
        RunState::NotStarted
    } else {
        stopped(&halt, last.as_ref(), findings.last_at, left)
    };

    let run_arg = shell_word(&run.display().to_string());
    let mut next = Vec::new();
    match &state {
        RunState::NotStarted => {
            next.push(format!("campaign send {run_arg} --dry-run"));
            next.push(format!("campaign send {run_arg}"));
        }
        RunState::Sending { .. } => {
            next.push(format!(
                "campaign status {run_arg}   (again later: a send is running)"
            ));
        }
        RunState::Stopped { .. } => {
            let clear = if halt.is_some() { " --clear-halt" } else { "" };
            match last.as_ref().and_then(|r| r.report.shard.as_ref()) {
                Some(shard) => {
                    let count = shard.split_once('/').map_or("N", |(_, n)| n);
                    next.push(format!(
                        "campaign send {run_arg} --shard I/{count}{clear}   (each shard, as your scheduler runs them)"
                    ));
                }
                None => next.push(format!("campaign send {run_arg}{clear}")),
            }
            if halt.is_some() {
                next.insert(
                    0,
                    "fix what the halt says (DNS, credentials, content or the relay)".to_owned(),
                );
            }
        }
        RunState::Complete => {
            if unknown > 0 {
                next.push(format!(
                    "check {} against the relay's logs; `campaign send {run_arg} --on-unknown resend` mails those donors again (some may get two messages)",
                    run.join(crate::rundir::UNKNOWN_CSV).display()
                ));
            }
            if failed > 0 || sum(|s| s.bounced_later + s.complaints) > 0 {
                next.push(format!(
                    "pass {} to the next `campaign segment --suppress`",
                    run.join(crate::rundir::SUPPRESS_BOUNCED).display()
                ));
            }
            if last.as_ref().is_some_and(|r| r.report.shard.is_some()) {
                next.push(format!(
                    "campaign report {run_arg}   (the whole run's report, after the shards)"
                ));
            }
        }
    }

    let exit = match &state {
        RunState::Complete => Code::Success,
        RunState::Sending { .. } => Code::Locked,
        _ if halt.is_some() => Code::Halted,
        _ => Code::Remaining,
    };
    let deferred = (deferred > 0).then(|| Deferred {
        donors: deferred,
        last_deferred_at: findings.last_deferred_at.map(|t| format!("{t:.0}")),
        due: if daily_cap {
            "after 00:00 UTC, when the daily cap allows more, at the next `campaign send`"
                .to_owned()
        } else {
            "at the next `campaign send` (a re-run retries them at once)".to_owned()
        },
    });
    let mut reasons = findings.reasons;
    reasons.truncate(TOP_REASONS);
    Ok(Overview {
        state,
        segments,
        reasons,
        deferred,
        halt,
        last_report: last.map(|r| LastReport {
            file: r.file,
            at: format!("{:.0}", r.at),
            stop: r.report.stop,
            shard: r.report.shard,
        }),
        next,
        exit,
    })
}

/// Why a run with donors left is not being sent.
fn stopped(
    halt: &Option<String>,
    last: Option<&Found>,
    last_record: Option<Timestamp>,
    left: u64,
) -> RunState {
    if let Some(h) = halt {
        let first = h.lines().next().unwrap_or_default();
        return RunState::Stopped {
            at: last.map(|r| format!("{:.0}", r.at)),
            why: format!("the relay halted the run ({first})"),
        };
    }
    // A record newer than the last report: a send wrote to the ledger and never reported.
    let unreported = match (last, last_record) {
        (None, Some(_)) => true,
        (Some(r), Some(t)) => t.as_second() > r.at.as_second() + 2,
        _ => false,
    };
    if unreported {
        return RunState::Stopped {
            at: last_record.map(|t| format!("{t:.0}")),
            why: "the last send ended without a report (killed, or its machine went down); a re-run reads the ledger and goes on".to_owned(),
        };
    }
    let Some(r) = last else {
        return RunState::Stopped {
            at: None,
            why: format!("{left} donors are left"),
        };
    };
    let stop = &r.report.stop;
    let reason = stop["reason"].as_str().unwrap_or_default();
    let why = match stop["kind"].as_str().unwrap_or_default() {
        "finished" => format!(
            "the last send finished its pass; {left} donors are left (deferred by the relay, or not in the segments it sent)"
        ),
        "halted" => format!("the relay refused the sender: {reason}"),
        "relay_failing" => format!("the relay failed many donors in a row alike: {reason}"),
        "interrupted" => "the last send was interrupted (SIGINT or SIGTERM)".to_owned(),
        "limit" => "the last send reached its --limit".to_owned(),
        "daily_cap" => "the last send reached the daily cap".to_owned(),
        other => format!("the last send stopped ({other})"),
    };
    RunState::Stopped {
        at: Some(format!("{:.0}", r.at)),
        why,
    }
}

/// A report file found in the run.
struct Found {
    file: String,
    at: Timestamp,
    report: SendStop,
}

/// The part of a `send`'s report the overview reads.
#[derive(serde::Deserialize)]
struct SendStop {
    stop: serde_json::Value,
    shard: Option<String>,
}

/// The newest of `RUN/report.json` (when a plain `send` wrote it; `campaign report` writes
/// another shape there) and the shards' reports.
fn last_report(run: &Path) -> Result<Option<Found>> {
    // A run whose ledger directory is gone has no reports worth reading.
    if !run.join(LEDGER_DIR).is_dir() {
        return Ok(None);
    }
    let mut files = vec![run.join(REPORT_JSON)];
    files.extend(reports::shard_reports(run)?);
    let mut newest: Option<Found> = None;
    for path in files {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let text = fs_err(std::fs::read_to_string(&path), &path)?;
        let Ok(report) = serde_json::from_str::<SendStop>(&text) else {
            continue;
        };
        let at = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .and_then(|d| Timestamp::from_second(d.as_secs() as i64).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        if newest.as_ref().is_none_or(|n| at > n.at) {
            newest = Some(Found {
                file: path.display().to_string(),
                at,
                report,
            });
        }
    }
    Ok(newest)
}

fn code_number<S: serde::Serializer>(code: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(*code as u8)
}

fn fs_err<T>(r: std::io::Result<T>, path: &Path) -> Result<T> {
    r.with_context(|| format!("reading {}", path.display()))
}

/// `word` as one shell word: as it is when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn a_path_with_spaces_or_quotes_is_one_shell_word() {
        assert_eq!(shell_word("runs/spring"), "runs/spring");
        assert_eq!(shell_word("my runs/spring"), "'my runs/spring'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
