//! The tables and summaries `status` and `send` print.

use std::fmt::Write as _;
use std::path::Path;

use campaign::exit::escape_controls;
use campaign::rundir::{FAILED_CSV, SUPPRESS_BOUNCED, SUPPRESSED_CSV, UNKNOWN_CSV};
use campaign::send::{Overview, RunState, SegmentStatus, SendReport, Stop};

/// The per-segment table of `status`, also the top of `send`'s summary.
pub(super) fn status(segments: &[SegmentStatus]) -> String {
    let w = super::segment_column(segments.iter().map(|t| t.segment.as_str()));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<w$}  {:>8}  {:>8}  {:>7}  {:>8}  {:>7}  {:>10}  {:>8}",
        "segment", "donors", "sent", "failed", "deferred", "unknown", "suppressed", "pending"
    );
    let mut total = SegmentStatus {
        segment: "total".into(),
        ..SegmentStatus::default()
    };
    for t in segments {
        total.donors += t.donors;
        total.sent += t.sent;
        total.failed += t.failed;
        total.deferred += t.deferred;
        total.unknown += t.unknown;
        total.suppressed += t.suppressed;
        total.pending += t.pending;
        total.bounced_later += t.bounced_later;
        total.complaints += t.complaints;
    }
    for t in segments.iter().chain([&total]) {
        let _ = writeln!(
            s,
            "{:<w$}  {:>8}  {:>8}  {:>7}  {:>8}  {:>7}  {:>10}  {:>8}",
            t.segment, t.donors, t.sent, t.failed, t.deferred, t.unknown, t.suppressed, t.pending
        );
    }
    if total.bounced_later + total.complaints > 0 {
        let _ = writeln!(
            s,
            "of the sent: {} bounced later, {} complained or unsubscribed by reply (recorded by `campaign bounces --run`); their addresses are in {SUPPRESS_BOUNCED}",
            total.bounced_later, total.complaints
        );
    }
    s
}

/// The end-of-send summary: the run's table, what this process did, and what to do next.
pub(super) fn send(r: &SendReport, run: &Path) -> String {
    let mut s = status(&r.segments);
    let c = &r.session;
    let _ = writeln!(
        s,
        "\nthis run: {} sent, {} failed, {} deferred, {} unknown, {} skipped as unknown, {} suppressed, in {:.1} s ({:.0}/s)",
        c.sent,
        c.failed,
        c.deferred,
        c.unknown,
        c.skipped_unknown,
        c.suppressed,
        r.seconds,
        c.sent as f64 / r.seconds.max(1e-9)
    );
    if r.pacing.slowdowns > 0 {
        let _ = writeln!(
            s,
            "the relay asked to slow down {} time(s); the rate went as low as {:.1}/s and recovered after quiet periods",
            r.pacing.slowdowns,
            r.pacing.lowest_per_second.unwrap_or(0.0)
        );
    }
    // What to run again: the same shard, when this process was one.
    let again = match &r.shard {
        Some(shard) => format!("{} --shard {shard}", run.display()),
        None => run.display().to_string(),
    };
    let run = run.display();
    let unknown: u64 = r.segments.iter().map(|g| g.unknown).sum();
    let _ = match &r.stop {
        Stop::Finished if r.remaining() == 0 && unknown == 0 => {
            writeln!(s, "done: every donor is sent or failed")
        }
        Stop::Finished if r.remaining() == 0 => writeln!(
            s,
            "done, except {unknown} donor(s) whose outcome is unknown ({} of them from this run): the connection was lost after their message was sent; see {run}/{UNKNOWN_CSV}",
            c.unknown
        ),
        Stop::Finished => writeln!(
            s,
            "{} donors are deferred: run `campaign send {again}` again later to retry them",
            r.remaining()
        ),
        Stop::Halted(why) => writeln!(
            s,
            "HALTED: the server refused the sender: {}\nThe rest of the run is untouched; fix the sender's DNS, credentials or content, then run `campaign send {again} --clear-halt`",
            escape_controls(why)
        ),
        Stop::RelayFailing(why) => writeln!(
            s,
            "HALTED: the relay is failing, not the donors: {}\nThose donors are deferred (or unknown, if the message had left) and nobody was failed for it; fix the relay, then run `campaign send {again} --clear-halt`",
            escape_controls(why)
        ),
        Stop::Interrupted => writeln!(
            s,
            "interrupted: run `campaign send {again}` again to continue where it stopped"
        ),
        Stop::Limit => writeln!(s, "--limit reached: run again to continue"),
        Stop::DailyCap => writeln!(s, "daily cap reached: run again tomorrow (UTC) to continue"),
    };
    if c.failed > 0 {
        let _ = writeln!(
            s,
            "failures: {run}/{FAILED_CSV}; bounced addresses for --suppress: {run}/{SUPPRESS_BOUNCED}"
        );
    }
    if c.suppressed > 0 {
        let _ = writeln!(
            s,
            "donors suppressed by --suppress lists: {run}/{SUPPRESSED_CSV}"
        );
    }
    if unknown > 0 {
        let _ = writeln!(
            s,
            "unknown outcomes (may or may not have been delivered): {run}/{UNKNOWN_CSV}; --on-unknown resend sends them again"
        );
    }
    s
}

/// `status`'s text: the table, then where the run is, why, and what to run next.
pub(super) fn overview(o: &Overview) -> String {
    let mut s = status(&o.segments);
    s.push('\n');
    let state = match &o.state {
        RunState::NotStarted => "not started: no send has recorded anything yet".to_owned(),
        RunState::Sending { processes } => {
            let who: Vec<String> = processes
                .iter()
                .map(|p| match &p.shard {
                    Some(shard) => format!("shard {shard} ({})", p.holder),
                    None => p.holder.clone(),
                })
                .collect();
            format!("sending now: {}", who.join("; "))
        }
        RunState::Stopped { at: Some(at), why } => format!("stopped at {at}: {why}"),
        RunState::Stopped { at: None, why } => format!("stopped: {why}"),
        RunState::Complete => "complete: every donor has an outcome".to_owned(),
    };
    let _ = writeln!(s, "state:    {}", escape_controls(&state));
    if let Some(h) = &o.halt {
        let _ = writeln!(
            s,
            "halt:     {}",
            escape_controls(h.lines().next().unwrap_or(""))
        );
    }
    if let Some(r) = &o.last_report {
        let _ = writeln!(s, "report:   {} (written {})", r.file, r.at);
    }
    if !o.reasons.is_empty() {
        let _ = writeln!(s, "reasons:");
        for r in &o.reasons {
            let code = r.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  {:>8}  {:<8}  {code:>3}  {}",
                r.donors,
                r.state,
                escape_controls(&r.text)
            );
        }
    }
    if let Some(d) = &o.deferred {
        let last = d
            .last_deferred_at
            .as_deref()
            .map(|t| format!(", the last at {t}"))
            .unwrap_or_default();
        let _ = writeln!(s, "deferred: {} donors{last}; due {}", d.donors, d.due);
    }
    match o.next.as_slice() {
        [] => {
            let _ = writeln!(s, "next:     nothing; the run is done");
        }
        [one] => {
            let _ = writeln!(s, "next:     {}", escape_controls(one));
        }
        many => {
            let _ = writeln!(s, "next:");
            for (i, n) in many.iter().enumerate() {
                let _ = writeln!(s, "  {}. {}", i + 1, escape_controls(n));
            }
        }
    }
    s
}
