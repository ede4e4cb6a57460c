//! `campaign send`: flags, output and exit codes around [`crate::dryrun`].

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::dryrun::{self, DryRunOptions, DryRunReport};
use crate::exit::{Code, Error, escape_controls};
use crate::prepare::{self, Preparer};

/// Flags of `campaign send`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The run directory written by `campaign segment`.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,

    /// Render every message and write previews; send nothing and open no network connection.
    #[arg(long)]
    pub dry_run: bool,

    /// The campaign file, when not the one recorded in the run's manifest (for example after
    /// moving it). Its id must match the run's.
    #[arg(long, value_name = "CAMPAIGN.toml")]
    pub campaign: Option<PathBuf>,

    /// Preview messages written per segment, as .eml files under RUN_DIR/previews/<segment>/.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub preview: usize,

    /// Handle at most N messages, in run order (segments in rule order).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Only this segment; repeat for several.
    #[arg(long = "segment", value_name = "NAME")]
    pub segments: Vec<String>,

    /// Worker threads; for a real send, SMTP connections. Default: [send] concurrency, else
    /// 8 for sending and the number of CPUs for a dry run.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Print the message for this donor to stdout (with --dry-run) instead of rendering the
    /// run.
    #[arg(long, value_name = "EMAIL", requires = "dry_run")]
    pub print: Option<String>,

    /// Global rate limit across all connections, e.g. 50/s, 3000/min (default: [send] rate
    /// in the campaign file, else unlimited). Throttling replies lower it further.
    #[arg(long, value_name = "N/UNIT")]
    pub rate: Option<crate::send::Rate>,

    /// At most N messages per UTC day for this run directory, counting earlier runs (default:
    /// [send] daily_cap).
    #[arg(long, value_name = "N")]
    pub daily_cap: Option<u64>,

    /// Donors whose last attempt has an unknown outcome (the connection or the process died
    /// after the message was sent): skip them and list them in RUN_DIR/unknown.csv, or send
    /// again (they may get two messages).
    #[arg(long, value_enum, default_value_t = crate::send::OnUnknown::Skip)]
    pub on_unknown: crate::send::OnUnknown,

    /// Delivery attempts per donor within this run before leaving them deferred for the next
    /// (default: [send] max_attempts, else 3).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Seconds before the first retry of a deferred donor; doubles each time, plus jitter
    /// (default: [send] retry_delay_seconds, else 30).
    #[arg(long, value_name = "SECONDS")]
    pub retry_delay: Option<f64>,

    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,

    /// No progress bar, and only the summary.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `campaign send`.
pub fn run(args: Args) -> Result<Code, Error> {
    if !args.dry_run {
        return super::deliver::run(args);
    }
    let usage = |e: anyhow::Error| Error::new(Code::Usage, e);
    let mut loaded = dryrun::load_run(&args.run, args.campaign.as_deref()).map_err(usage)?;
    let secret = dryrun::secret_or_warning(&mut loaded.warnings).map_err(usage)?;
    let preparer = Preparer::new(
        &loaded.manifest,
        &loaded.campaign,
        secret,
        jiff::Timestamp::now(),
    )
    .map_err(|problems| {
        Error::new(
            Code::Usage,
            anyhow::anyhow!(
                "the templates or [message] settings cannot be used; `campaign check` lists the same problems:\n{}",
                problems.join("\n")
            ),
        )
    })?;
    if let Err(e) =
        prepare::check_templates_unchanged(&args.run, &preparer.templates().fingerprint())
    {
        loaded.warnings.push(format!("{e:#}"));
    }
    for w in &loaded.warnings {
        eprintln!("campaign: warning: {}", escape_controls(w));
    }
    if let Some(email) = &args.print {
        let bytes = dryrun::find_message(&args.run, &loaded.manifest, &preparer, email)?;
        super::print_bytes(&bytes)?;
        return Ok(Code::Success);
    }
    let opts = DryRunOptions {
        run: args.run.clone(),
        previews: args.preview,
        limit: args.limit,
        segments: args.segments.clone(),
        concurrency: args
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let selected = dryrun::select_segments(&loaded.manifest, &opts.segments).map_err(usage)?;
    let progress = (!args.quiet && !args.json && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(dryrun::planned_rows(
            &loaded.manifest,
            &selected,
            opts.limit,
        ));
        pb.set_style(super::bar_style(
            "rendering [{bar:30}] {pos}/{len} messages, {per_sec}, eta {eta}",
        ));
        pb
    });
    let started = std::time::Instant::now();
    let report = dryrun::dry_run(&loaded.manifest, &preparer, &opts, progress.as_ref());
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
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

fn table(r: &DryRunReport, secs: f64) -> String {
    use std::fmt::Write as _;
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
