//! `campaign bounces`: read bounce messages, append what must be suppressed to a list, and
//! with `--run` record it in the run's ledger.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::bounce::apply::{self, Applied, Run};
use campaign::bounce::{self, Context, Tally, source};
use campaign::clock::{Clock, SystemClock};
use campaign::exit::{Code, Error, escape_controls};
use campaign::manifest::Manifest;
use campaign::unsubscribe::UnsubscribeSecret;

/// Flags of `campaign bounces`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Where the messages are: mbox files, Maildir folders, or `-` for one message on
    /// standard input (to run behind a mail alias or a procmail rule).
    #[arg(value_name = "SOURCE", required = true)]
    pub sources: Vec<PathBuf>,

    /// The suppression list to append to (created if missing): one address per line, the
    /// format `segment --suppress` and `send --suppress` read. Addresses already in it are
    /// not added again.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Also match each report to this run's donor (by the VERP return path, the original
    /// Message-ID or the address) and record it in the run's ledger, so `status` counts
    /// bounces and complaints that came back after sending.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,

    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `campaign bounces`.
pub fn run(args: Args) -> Result<Code, Error> {
    let secret = UnsubscribeSecret::from_var_or_file(
        std::env::var_os(UnsubscribeSecret::ENV),
        std::env::var_os(UnsubscribeSecret::FILE_ENV),
    )
    .map_err(|e| super::usage(anyhow::anyhow!(e)))?;
    let manifest = match &args.run {
        Some(dir) => Some(Manifest::load(dir).map_err(super::usage)?),
        None => None,
    };
    let cx = Context {
        secret: secret.as_ref(),
    };
    let mut tally = Tally::default();
    let mut readings = Vec::new();
    for src in &args.sources {
        source::for_each(src, &mut |origin, bytes| {
            let r = bounce::classify(bytes, &cx);
            tally.add(&origin, &r);
            readings.push(r);
            Ok(())
        })
        .map_err(super::usage)?;
    }
    let run = args
        .run
        .as_deref()
        .zip(manifest.as_ref())
        .map(|(dir, manifest)| Run { dir, manifest });
    let applied = apply::apply(&readings, &args.out, run.as_ref(), SystemClock::new().now())?;
    let text = if args.json {
        let v = serde_json::json!({ "read": tally, "applied": applied });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?
        )
    } else {
        summary(&tally, &applied, &args)
    };
    super::print_bytes(text.as_bytes())?;
    Ok(Code::Success)
}

fn summary(t: &Tally, a: &Applied, args: &Args) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "read {} message(s): {} bounce(s) ({} permanent, {} temporary recipient(s)), {} complaint(s), {} unsubscribe(s), {} automatic repl(ies), {} other report(s), {} not understood",
        t.messages,
        t.bounces,
        t.permanent,
        t.temporary,
        t.complaints,
        t.unsubscribes,
        t.auto_replies,
        t.other_reports,
        t.unrecognised.len()
    );
    let _ = writeln!(
        s,
        "{}: {} address(es) added, {} already listed; temporary failures and automatic replies are never added",
        args.out.display(),
        a.added,
        a.already_listed
    );
    if let Some(run) = &args.run {
        let _ = writeln!(
            s,
            "{}: {} recorded in the ledger, {} not donors the run sent to",
            run.display(),
            a.recorded,
            a.not_in_run
        );
    }
    if a.unmatched > 0 {
        let _ = writeln!(
            s,
            "{} complaint(s) hide the address and match no donor{}: nothing suppressed for them",
            a.unmatched,
            if args.run.is_some() {
                ""
            } else {
                " (give --run to match them by Message-ID)"
            }
        );
    }
    if !t.unrecognised.is_empty() {
        let _ = writeln!(s, "not understood (read these by hand):");
        for u in &t.unrecognised {
            let _ = writeln!(s, "  {}: {}", u.origin, escape_controls(&u.why));
        }
    }
    s
}
