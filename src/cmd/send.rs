//! `campaign send`: its flags, and the choice between [`super::deliver`] (a real send) and
//! [`super::dryrun`] (`--dry-run`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;

use campaign::campaign::{Rate, SendSettings};
use campaign::exit::{Code, Error};
use campaign::send::Shard;

use super::values;

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

    /// Worker threads; for a real send, SMTP connections (1 to 1024; never more than there
    /// are pieces of work). Default: [send] concurrency, else 8 for sending and the number of
    /// CPUs for a dry run.
    #[arg(long, value_name = "N", value_parser = values::concurrency)]
    pub concurrency: Option<usize>,

    /// Print the message for this donor to stdout (with --dry-run) instead of rendering the
    /// run, for reading: headers decoded, the text part, the HTML part as text.
    #[arg(long, value_name = "EMAIL", requires = "dry_run")]
    pub print: Option<String>,

    /// With --print: the message's bytes exactly as they are sent.
    #[arg(long, requires = "print")]
    pub raw: bool,

    /// Global rate limit across all connections, e.g. 50/s, 3000/min (default: [send] rate
    /// in the campaign file, else unlimited). Throttling replies lower it further.
    #[arg(long, value_name = "N/UNIT")]
    pub rate: Option<Rate>,

    /// At most N messages per UTC day for this run directory, counting earlier runs (default:
    /// [send] daily_cap).
    #[arg(long, value_name = "N")]
    pub daily_cap: Option<u64>,

    /// Donors whose last attempt has an unknown outcome (the connection or the process died
    /// after the message was sent): skip them and list them in RUN_DIR/unknown.csv, or send
    /// again (they may get two messages).
    #[arg(long, value_enum, default_value_t = values::UnknownFlag::Skip)]
    pub on_unknown: values::UnknownFlag,

    /// Delivery attempts per donor within this run before leaving them deferred for the next
    /// (default: [send] max_attempts, else 3).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Seconds before the first retry of a deferred donor; doubles each time, plus jitter
    /// (default: [send] retry_delay_seconds, else 30).
    #[arg(long, value_name = "SECONDS", value_parser = values::seconds)]
    pub retry_delay: Option<Duration>,

    /// Once nothing else is left, wait at most this long for deferred donors' retries to
    /// fall due; later ones stay deferred for the next run (default: [send]
    /// max_wait_seconds, else 300).
    #[arg(long, value_name = "SECONDS", value_parser = values::seconds)]
    pub max_wait: Option<Duration>,

    /// Halt (exit 6) when this many donors in a row fail alike for a reason that is the
    /// relay's, not theirs: syntax or sequence errors, system errors, connections failing or
    /// lost after the message (default: [send] halt_after, else 20).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub halt_after: Option<u64>,

    /// Also never mail the donors on this list, re-read every minute while sending, so an
    /// unsubscribe made during the send stops a message not sent yet (repeatable; the
    /// formats of `segment --suppress`: an address list, a CSV with an `email` column, or an
    /// earlier run directory). Adds to [send] suppress.
    #[arg(long = "suppress", value_name = "FILE")]
    pub suppress: Vec<PathBuf>,

    /// Send only shard I of N: the chunks whose position in the manifest modulo N is I, beside
    /// the other shards' processes on this or other hosts sharing the run directory. Use
    /// $JOB_COMPLETION_INDEX (Kubernetes), $SLURM_ARRAY_TASK_ID, $NOMAD_ALLOC_INDEX or GNU
    /// parallel's {} for I. --rate is per process: divide the provider's limit by the shards
    /// running at once. Writes only RUN_DIR/reports/shard-I-of-N.json; run `campaign report`
    /// after the shards for the whole run's files.
    #[arg(long, value_name = "I/N", value_parser = |s: &str| s.parse::<Shard>(), conflicts_with = "dry_run")]
    pub shard: Option<Shard>,

    /// Wait this long (30, 90s, 5m) for a lock another process holds (the run's, or this
    /// shard's) before exiting 7.
    #[arg(long, value_name = "DURATION", value_parser = values::duration, default_value = "0")]
    pub lock_wait: Duration,

    /// Remove the halt marker (RUN_DIR/ledger/halt) a halted send left, after fixing what
    /// the server refused, and send.
    #[arg(long, conflicts_with = "dry_run")]
    pub clear_halt: bool,

    /// Send --shard from a run directory whose file system may not carry locks between
    /// hosts (FUSE object stores, SMB, NFS with nolock or local_lock): the check refusing
    /// them is skipped, and donors may be mailed twice if the locks do not hold.
    #[arg(long, requires = "shard")]
    pub trust_storage_locks_i_accept_duplicates: bool,

    /// Send one message per selected segment (its first donor's, or --donor's) through the
    /// relay to ADDR, with "[PROOF] " before the subject, to read as the donors will; nothing
    /// is recorded in the run. Needs the relay and secret a real send needs.
    #[arg(long, value_name = "ADDR", conflicts_with = "dry_run")]
    pub proof_to: Option<String>,

    /// With --proof-to: the proof of this donor's message only.
    #[arg(long, value_name = "EMAIL", requires = "proof_to")]
    pub donor: Option<String>,

    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,

    /// No progress, and no summary when all went well (exit 0, or 5: work left for a later
    /// run): for cron, which mails any output. Warnings and errors still go to stderr, and
    /// the summary is printed when the send halted or outcomes are unknown.
    #[arg(long)]
    pub quiet: bool,

    /// With a held lock (another send is running: cron overlap), exit 0 silently instead
    /// of 7.
    #[arg(long)]
    pub ok_if_locked: bool,

    /// Off a terminal, print a progress line to stderr this often (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = values::duration, default_value = "60", hide = true)]
    pub progress_every: Duration,
}

impl Args {
    /// The flags that override the campaign's `[send]` table.
    pub(super) fn send_settings(&self) -> SendSettings {
        SendSettings {
            rate: self.rate,
            daily_cap: self.daily_cap,
            concurrency: self.concurrency,
            max_attempts: self.max_attempts,
            retry_delay: self.retry_delay,
            max_wait: self.max_wait,
            halt_after: self.halt_after.map(|n| n as usize),
            suppress: self.suppress.clone(),
        }
    }
}

impl Args {
    /// The suppression lists to honour: the flags' and then the campaign's `[send] suppress`.
    pub(super) fn suppress_lists(&self, table: &SendSettings) -> Vec<PathBuf> {
        self.suppress
            .iter()
            .chain(&table.suppress)
            .cloned()
            .collect()
    }
}

/// Runs `campaign send`.
pub fn run(args: Args) -> Result<Code, Error> {
    if let Some(to) = &args.proof_to {
        return super::proof::run(&args, to);
    }
    if args.dry_run {
        super::dryrun::run(&args)
    } else {
        super::deliver::run(&args)
    }
}
