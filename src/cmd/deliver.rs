//! `campaign send` without `--dry-run`: pre-flight checks, the lock, signals, and the exit
//! code around [`crate::send`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::anyhow;

use crate::deliver::{Outcome, SmtpTransport, Transport};
use crate::dryrun;
use crate::exit::{Code, Error, escape_controls};
use crate::ledger::{LedgerError, RunLock};
use crate::prepare::{self, Preparer, TEMPLATES_FINGERPRINT};
use crate::rundir::LEDGER_DIR;
use crate::send::{self, Progress, SendOptions, SendReport, Stop};
use crate::smtp::{self, SmtpSettings};
use crate::unsubscribe::UnsubscribeSecret;

use super::send::Args;

/// Runs a real send.
pub fn run(args: Args) -> Result<Code, Error> {
    let usage = |e: anyhow::Error| Error::new(Code::Usage, e);
    let loaded = dryrun::load_run(&args.run, args.campaign.as_deref()).map_err(usage)?;
    let campaign = &loaded.campaign;
    let secret = UnsubscribeSecret::from_env().map_err(|e| usage(anyhow!(e)))?;
    let message = campaign.message.as_ref().ok_or_else(|| {
        usage(anyhow!(
            "{} has no [message] table; `campaign check` says what it needs",
            campaign.path.display()
        ))
    })?;
    let uses_token = message
        .unsubscribe_url
        .as_deref()
        .is_some_and(|u| u.contains("unsubscribe_token"));
    if uses_token && secret.is_none() {
        return Err(usage(anyhow!(
            "unsubscribe_url uses unsubscribe_token but {} is not set; refusing to send links that cannot be verified. Set it to the secret your unsubscribe endpoint checks (at least 16 bytes, e.g. `openssl rand -hex 32`)",
            UnsubscribeSecret::ENV
        )));
    }
    let envelope_from = message
        .from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .map_err(|e| usage(anyhow!("[message] from {:?}: {e}", message.from)))?;
    let base_dir = campaign
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let settings = SmtpSettings::resolve(
        &campaign.smtp,
        std::env::var(smtp::URL_ENV).ok().as_deref(),
        std::env::var(smtp::PASSWORD_ENV).ok().as_deref(),
        &base_dir,
    )
    .map_err(|e| usage(e.into()))?;
    let preparer = Preparer::new(&loaded.manifest, campaign, secret, jiff::Timestamp::now())
        .map_err(|problems| {
            usage(anyhow!(
                "the templates or [message] settings cannot be used; `campaign check` lists the same problems:\n{}",
                problems.join("\n")
            ))
        })?;

    let _lock = match RunLock::acquire(&args.run) {
        Ok(l) => l,
        Err(e @ LedgerError::Locked { .. }) => return Err(Error::new(Code::Locked, e)),
        Err(e) => return Err(anyhow::Error::from(e).into()),
    };
    let fingerprint = preparer.templates().fingerprint();
    prepare::check_templates_unchanged(&args.run, &fingerprint).map_err(usage)?;
    let fp_path = args.run.join(LEDGER_DIR).join(TEMPLATES_FINGERPRINT);
    if !fp_path.exists() {
        std::fs::write(&fp_path, format!("{fingerprint}\n"))
            .map_err(|e| anyhow!("writing {}: {e}", fp_path.display()))?;
    }
    for w in &loaded.warnings {
        eprintln!("campaign: warning: {}", escape_controls(w));
    }

    let table = &campaign.send;
    let rate = match (args.rate, &table.rate) {
        (Some(r), _) => Some(r),
        (None, Some(text)) => Some(text.parse().map_err(|e: String| {
            usage(anyhow!("{}: [send] rate: {e}", campaign.path.display()))
        })?),
        (None, None) => None,
    };
    let opts = SendOptions {
        run: args.run.clone(),
        concurrency: args.concurrency.or(table.concurrency).unwrap_or(8).max(1),
        rate,
        limit: args.limit,
        segments: args.segments.clone(),
        on_unknown: args.on_unknown,
        daily_cap: args.daily_cap.or(table.daily_cap),
        max_attempts: args.max_attempts.or(table.max_attempts).unwrap_or(3).max(1),
        retry_delay: Duration::from_secs_f64(
            args.retry_delay
                .or(table.retry_delay_seconds)
                .unwrap_or(30.0)
                .max(0.0),
        ),
        batch: 32,
        envelope_from,
    };
    dryrun::select_segments(&loaded.manifest, &opts.segments).map_err(usage)?;

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
    let progress = if !args.quiet && !args.json && std::io::stderr().is_terminal() {
        Some(progress_bars(&args.run, &loaded.manifest, &opts.segments)?)
    } else {
        None
    };
    let settings = Arc::new(settings);
    // Check the relay and the login once before any worker starts: a typo in the host or a
    // wrong password should stop the run with one clear message, not defer every donor.
    let mut probe = SmtpTransport::new(Arc::clone(&settings));
    match probe.connect_now() {
        Ok(()) => probe.close(),
        Err(Outcome::Halt { code, text }) => {
            return Err(Error::new(
                Code::Halted,
                anyhow!(
                    "{} refused the sender before anything was sent: {}{text}",
                    settings.describe(),
                    code.map(|c| format!("{c} ")).unwrap_or_default()
                ),
            ));
        }
        Err(other) => {
            return Err(Error::new(
                Code::Remaining,
                anyhow!(
                    "cannot reach the relay {}: {}; nothing was sent, run again when it is up",
                    settings.describe(),
                    match other {
                        Outcome::Deferred { text, .. } | Outcome::Unknown { text } => text,
                        o => format!("{o:?}"),
                    }
                ),
            ));
        }
    }
    let new_transport =
        move || -> Box<dyn Transport> { Box::new(SmtpTransport::new(Arc::clone(&settings))) };
    let report = send::send(
        &opts,
        &loaded.manifest,
        &preparer,
        &new_transport,
        &stop,
        progress.as_ref(),
    );
    if let Some(p) = progress {
        p.overall.finish_and_clear();
        for pb in p.segments.into_iter().flatten() {
            pb.finish_and_clear();
        }
    }
    let report = report?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        )
    } else {
        summary(&report, &args.run)
    };
    super::print_bytes(text.as_bytes())?;
    Ok(match &report.stop {
        Stop::Halted(_) => Code::Halted,
        _ if report.remaining() > 0 => Code::Remaining,
        _ => Code::Success,
    })
}

/// An overall bar and one per selected segment, starting from what earlier runs did.
fn progress_bars(
    run: &std::path::Path,
    manifest: &crate::manifest::Manifest,
    segments: &[String],
) -> Result<Progress, Error> {
    let selected = dryrun::select_segments(manifest, segments)?;
    let status = send::status(run, manifest, &selected)?;
    let multi = indicatif::MultiProgress::new();
    let done = |s: &send::SegmentStatus| s.sent + s.failed + s.unknown;
    let overall = multi.add(indicatif::ProgressBar::new(
        status.iter().map(|s| s.donors).sum(),
    ));
    overall.set_style(super::bar_style(
        "{prefix:>12} [{bar:30}] {pos}/{len} donors, {per_sec}, eta {eta}",
    ));
    overall.set_prefix("all");
    overall.set_position(status.iter().map(done).sum());
    let mut bars = vec![None; manifest.segments.len()];
    for (&i, s) in selected.iter().zip(&status) {
        let pb = multi.add(indicatif::ProgressBar::new(s.donors));
        pb.set_style(super::bar_style("{prefix:>12} [{bar:30}] {pos}/{len}"));
        pb.set_prefix(s.segment.clone());
        pb.set_position(done(s));
        bars[i] = Some(pb);
    }
    Ok(Progress {
        overall,
        segments: bars,
    })
}

fn summary(r: &SendReport, run: &std::path::Path) -> String {
    use std::fmt::Write as _;
    let mut s = super::status::table(&r.segments);
    let c = &r.session;
    let _ = writeln!(
        s,
        "\nthis run: {} sent, {} failed, {} deferred, {} unknown, {} skipped as unknown, in {:.1} s ({:.0}/s)",
        c.sent,
        c.failed,
        c.deferred,
        c.unknown,
        c.skipped_unknown,
        r.seconds,
        c.sent as f64 / r.seconds.max(1e-9)
    );
    let run = run.display();
    let _ = match &r.stop {
        Stop::Finished if r.remaining() == 0 => writeln!(s, "done: every donor is sent or failed"),
        Stop::Finished => writeln!(
            s,
            "{} donors are deferred: run `campaign send {run}` again later to retry them",
            r.remaining()
        ),
        Stop::Halted(why) => writeln!(
            s,
            "HALTED: the server refused the sender: {}\nThe rest of the run is untouched; fix the sender's DNS, credentials or content, then run `campaign send {run}` again",
            escape_controls(why)
        ),
        Stop::Interrupted => writeln!(
            s,
            "interrupted: run `campaign send {run}` again to continue where it stopped"
        ),
        Stop::Limit => writeln!(s, "--limit reached: run again to continue"),
        Stop::DailyCap => writeln!(s, "daily cap reached: run again tomorrow (UTC) to continue"),
    };
    if c.failed > 0 {
        let _ = writeln!(
            s,
            "failures: {run}/failed.csv; bounced addresses for --suppress: {run}/suppress-bounced.txt"
        );
    }
    if r.segments.iter().any(|g| g.unknown > 0) {
        let _ = writeln!(
            s,
            "unknown outcomes (may or may not have been delivered): {run}/unknown.csv; --on-unknown resend sends them again"
        );
    }
    s
}
