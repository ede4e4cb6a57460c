//! `campaign send --dry-run`: output and exit code around [`campaign::dryrun`].

use campaign::clock::{Clock, SystemClock};
use std::fmt::Write as _;

use campaign::dryrun::{self, DryRunOptions, DryRunReport};
use campaign::exit::{Code, Error};
use campaign::preflight::{self, Environment, Purpose};
use campaign::run::OpenedRun;
use campaign::suppress::Suppressions;
use std::sync::Arc;

use super::send::Args;

/// Runs a dry run.
pub fn run(args: &Args) -> Result<Code, Error> {
    let clock = SystemClock::new();
    let run = OpenedRun::open(&args.run, args.campaign.as_deref()).map_err(super::usage)?;
    let selection = run.select(&args.segments).map_err(super::usage)?;
    let mut ready = preflight::run(
        &run,
        &Environment::from_process(),
        Purpose::DryRun,
        clock.now(),
    )
    .map_err(|f| super::refused(&run, f))?;
    if let Err(e) = dryrun::templates_unchanged(&run, &ready.preparer) {
        ready.notes.push(format!("{e:#}"));
    }
    super::warn(&ready.notes);
    if let Some(email) = &args.print {
        let bytes = dryrun::find_message(&run, &ready.preparer, email)?;
        if args.raw {
            super::print_bytes(&bytes)?;
        } else {
            let text = campaign::message::view::for_reading(&bytes);
            super::print_bytes(escape_controls_keep_lines(&text).as_bytes())?;
        }
        return Ok(Code::Success);
    }
    let lists = args.suppress_lists(&run.campaign.send);
    let suppressions = match lists.is_empty() {
        true => None,
        false => {
            let list = Suppressions::load(&lists).map_err(super::usage)?;
            let ignored: Vec<String> = list.ignored.iter().map(ToString::to_string).collect();
            super::warn(&ignored);
            Some(Arc::new(list))
        }
    };
    let opts = DryRunOptions {
        suppressions,
        previews: args.preview,
        limit: args.limit,
        concurrency: args
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let bars = super::progress::Bars::single(
        !args.quiet && !args.json,
        selection.planned_rows(&run.manifest, opts.limit),
        "rendering [{bar:30}] {pos}/{len} messages, {per_sec}, eta {eta}",
    );
    let started = std::time::Instant::now();
    let report = dryrun::dry_run(&run, &selection, &ready.preparer, &opts, &bars);
    bars.finish();
    let report = report?;
    let secs = started.elapsed().as_secs_f64();
    let text = if args.json {
        let mut v = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
        v["seconds"] = serde_json::json!(secs);
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
    } else {
        table(&report, secs)
    };
    super::print_bytes(text.as_bytes())?;
    Ok(if report.failed() > 0 {
        Code::SomeFailed
    } else {
        Code::Success
    })
}

/// The dry run's table.
fn table(r: &DryRunReport, secs: f64) -> String {
    let mut s = String::new();
    let w = super::segment_column(r.segments.iter().map(|t| t.segment.as_str()));
    let _ = writeln!(s, "dry run: nothing was sent\n");
    let _ = writeln!(
        s,
        "{:<w$}  {:>9}  {:>7}  {:>8}",
        "segment", "rendered", "failed", "previews"
    );
    for t in &r.segments {
        let _ = writeln!(
            s,
            "{:<w$}  {:>9}  {:>7}  {:>8}",
            t.segment, t.rendered, t.failed, t.previews
        );
    }
    let _ = writeln!(s, "{:<w$}  {:>9}  {:>7}", "total", r.rendered(), r.failed());
    let _ = writeln!(
        s,
        "\n{} messages in {:.2} s ({:.0}/s); previews in {}",
        r.rendered(),
        secs,
        r.rendered() as f64 / secs.max(1e-9),
        r.previews_dir.display()
    );
    let suppressed: u64 = r.segments.iter().map(|t| t.suppressed).sum();
    if suppressed > 0 {
        let _ = writeln!(
            s,
            "{suppressed} donors are on a --suppress list (or [send] suppress): a send records them as suppressed and sends them nothing"
        );
    }
    if r.need_smtputf8() > 0 {
        let _ = writeln!(
            s,
            "{} donors have non-ASCII characters before the @: they need a relay that offers SMTPUTF8 (`campaign check --smtp` says), and wait, deferred, through one that does not",
            r.need_smtputf8()
        );
    }
    if r.failed() > 0 {
        let _ = writeln!(
            s,
            "{} donors cannot be rendered: see {} (line, donor, reason)",
            r.failed(),
            r.failures_file.display()
        );
    }
    s
}

/// Donor text with control characters escaped, line breaks kept.
fn escape_controls_keep_lines(text: &str) -> String {
    text.lines()
        .map(campaign::exit::escape_controls)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
