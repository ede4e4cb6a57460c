//! `campaign send` without `--dry-run`: signals, progress and the exit code around
//! [`campaign::send`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use campaign::clock::{Clock, SystemClock};
use campaign::exit::{Code, Error};
use campaign::send::{
    self, Context, InProcessPlan, PlanError, PlanOptions, SendOptions, Stop, SuppressionWatch,
};
use campaign::transport::{SmtpTransport, Transport};

use super::send::Args;

/// Runs a real send.
pub fn run(args: &Args) -> Result<Code, Error> {
    let clock = SystemClock::new();
    let super::guards::Started {
        run,
        selection,
        ready,
        settings,
    } = super::guards::start(args, &clock, true)?;
    let flags = args.send_settings();
    let table = &run.campaign.send;
    let lists: Vec<_> = flags
        .suppress
        .iter()
        .chain(&table.suppress)
        .cloned()
        .collect();
    let suppressions = match lists.is_empty() {
        true => None,
        false => Some(
            SuppressionWatch::load(lists, SuppressionWatch::EVERY, clock.elapsed())
                .map_err(super::usage)?,
        ),
    };
    if let Some(w) = &suppressions {
        let ignored: Vec<String> = w
            .current()
            .ignored
            .iter()
            .map(ToString::to_string)
            .collect();
        super::warn(&ignored);
    }
    let opts = SendOptions::new(&flags, table, args.on_unknown.into());
    let fingerprint = ready.preparer.templates().fingerprint();
    let plan_opts = PlanOptions {
        workers: opts.concurrency,
        batch: opts.batch,
        budget: send::budget(args.limit, &flags, table),
        fingerprint: &fingerprint,
        shard: args.shard,
        lock_wait: args.lock_wait,
    };
    let plan = match InProcessPlan::new(&run, &selection, &plan_opts, &clock) {
        Ok(plan) => plan,
        // Cron overlap: the running send carries on; this one has nothing to say.
        Err(PlanError::Locked(_)) if args.ok_if_locked => return Ok(Code::Success),
        Err(e) => {
            return Err(match e {
                PlanError::Locked(_) => Error::new(Code::Locked, e),
                PlanError::TemplatesChanged(_) => Error::new(Code::Usage, e),
                PlanError::Ledger(_) => Error::new(Code::Failure, e),
            });
        }
    };
    super::warn(&ready.notes);

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        let signals = AtomicUsize::new(0);
        // A second signal means "now": the ledger is written record by record, so exiting
        // loses nothing but the messages in flight, which become unknown.
        let _ = ctrlc::set_handler(move || {
            if signals.fetch_add(1, Ordering::SeqCst) > 0 {
                std::process::exit(130);
            }
            stop.store(true, Ordering::SeqCst);
            eprintln!(
                "campaign: stopping after the messages in flight (signal again to quit at once)"
            );
        });
    }
    let bars = super::progress::Bars::per_segment(
        !args.quiet && !args.json,
        args.progress_every,
        &run,
        &selection,
    )?;
    let new_transport =
        move || -> Box<dyn Transport> { Box::new(SmtpTransport::new(Arc::clone(&settings))) };
    let cx = Context {
        run: &run,
        selection: &selection,
        preparer: &ready.preparer,
        clock: &clock,
        progress: &bars,
        stop: &stop,
        suppressions: suppressions.as_ref(),
        shard: args.shard,
    };
    let report = send::send(&cx, &opts, &plan, &new_transport);
    drop(plan);
    bars.finish();
    let report = report?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        )
    } else {
        super::summary::send(&report, &args.run)
    };
    let code = match &report.stop {
        Stop::Halted(_) | Stop::RelayFailing(_) => Code::Halted,
        _ if report.remaining() > 0 => Code::Remaining,
        _ if report.session.unknown > 0 => Code::Unknown,
        _ => Code::Success,
    };
    // Under cron, done and "run me again later" are the normal outcomes: silent (JSON was
    // asked for, so it is printed).
    if args.json || !(args.quiet && matches!(code, Code::Success | Code::Remaining)) {
        super::print_bytes(text.as_bytes())?;
    }
    Ok(code)
}
