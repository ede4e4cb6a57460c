//! The command line: subcommands and their flags.
//!
//! Owns argument syntax and `--help` text. Parsing here never touches the disk; each
//! subcommand's `run` opens files and checks settings.

use clap::{Parser, Subcommand};

/// Segment a donor export and email every donor a message tailored to their segment.
///
/// Two steps: `campaign segment` turns a donor CSV and a campaign file into a run directory
/// of per-segment chunk files; later steps render and send from that directory.
#[derive(Debug, Parser)]
#[command(name = "campaign", version = campaign::VERSION, about, long_about)]
pub struct Cli {
    /// The step to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starting campaign into DIR: a commented campaign file, two segments with text
    /// and HTML templates on a shared layout, a 5-row donor export and a suppression list.
    ///
    /// Nothing is overwritten: if any of its files exists, nothing is written (exit 3).
    Init(crate::cmd::init::Args),

    /// Validate a donor export, drop invalid, duplicate and suppressed rows, assign each donor
    /// to one segment and write a run directory.
    ///
    /// Exit codes: 0 run written; 2 bad flags, campaign file or rules; 3 input refused
    /// (too many invalid rows, no rows, existing run in the way); 1 other failures.
    #[command(after_long_help = SEGMENT_HELP)]
    Segment(crate::cmd::segment::Args),

    /// Check a campaign file, its rules and its templates, reporting every problem found.
    ///
    /// With --donors, rules and template variables are checked against that export's
    /// columns. Exit codes: 0 no problems; 2 problems found (listed on stdout).
    #[command(after_long_help = CHECK_HELP)]
    Check(crate::cmd::check::Args),

    /// Deliver a run's messages over SMTP, recording every outcome in the run's ledger; a
    /// re-run resumes and never mails a donor twice. With --dry-run, render every message,
    /// write previews and a failures file, and send nothing.
    ///
    /// Exit codes: 0 every donor sent or permanently failed (dry run: every message
    /// rendered); 5 donors remain (deferred, limit, daily cap, interrupted): run again later;
    /// 6 halted because the server refused the sender, or the relay failed many donors in a
    /// row alike; 7 another send holds the run's lock; 8 finished, but some messages this
    /// process sent have an unknown outcome (unknown.csv lists every unknown of the run); 4 (dry run) some messages cannot be
    /// rendered; 2 bad flags, campaign file, templates or SMTP settings; 1 other failures.
    #[command(after_long_help = SEND_HELP)]
    Send(crate::cmd::send::Args),

    /// Say what happened to a run: per segment how many donors are sent, failed, deferred,
    /// unknown and pending; whether a send is running (its pid) or why the last one stopped;
    /// the top failure reasons; when deferred donors are due; and the next command. Exits as
    /// `send` would: 0 complete, 5 donors left, 6 halted, 7 a send is running.
    #[command(after_long_help = STATUS_HELP)]
    Status(crate::cmd::status::Args),

    /// Tell one donor's story in a run: where segment put them and why (each rule's verdict),
    /// which suppression list and line or which earlier duplicate line dropped them, and their
    /// records in the ledger.
    ///
    /// It reads the inputs the run's manifest records, so it cannot disagree with the run by
    /// being given other ones; a file changed since is named. Exit codes: 0 told; 2 not a run,
    /// or no row of the export has that address.
    #[command(after_long_help = "Examples:\n  campaign explain runs/spring ann@example.org")]
    Explain(crate::cmd::explain::Args),

    /// Write the whole run's report.json, failed.csv, unknown.csv, suppressed.csv and
    /// suppress-bounced.txt from the ledgers: run it after `send --shard` processes, which each
    /// write only RUN_DIR/reports/shard-I-of-N.json.
    ///
    /// Exit codes: 0 written; 7 a send is running on the run; 2 not a run; 1 other failures.
    #[command(after_long_help = REPORT_HELP)]
    Report(crate::cmd::report::Args),

    /// Print a completion script for a shell (bash, zsh, fish, powershell, elvish).
    ///
    /// For bash: `campaign completions bash > /etc/bash_completion.d/campaign`; for zsh: into a
    /// directory on $fpath as `_campaign`; for fish: `~/.config/fish/completions/campaign.fish`.
    Completions(crate::cmd::completions::Args),

    /// Print the man page (roff) for campaign and its subcommands: `campaign man > campaign.1`.
    Man(crate::cmd::man::Args),

    /// Read bounce messages (delivery status notifications, spam complaints, replies to the
    /// mailto unsubscribe, and the plain-text bounces of common mail servers) and append the
    /// addresses that must not be mailed again to a suppression list.
    ///
    /// Temporary failures and automatic replies never suppress anyone; messages it cannot
    /// understand are listed with where they are. Unsubscribe replies are honoured when their
    /// token verifies (CAMPAIGN_UNSUBSCRIBE_SECRET). Exit codes: 0 read (also when some
    /// messages were not understood, so a mail alias does not bounce them back); 2 a source,
    /// the run or the secret cannot be used; 1 other failures (the list could not be written).
    #[command(after_long_help = BOUNCES_EXAMPLES)]
    Bounces(crate::cmd::bounces::Args),

    /// Serve the campaigns' one-click unsubscribe links (RFC 8058) over HTTP, behind a TLS
    /// proxy, appending each unsubscribed address to a suppression list for `--suppress`.
    ///
    /// A GET shows a page with a button; only its POST (or a mail client's one-click POST)
    /// unsubscribes. The secret is CAMPAIGN_UNSUBSCRIBE_SECRET, or the file named by
    /// CAMPAIGN_UNSUBSCRIBE_SECRET_FILE (mode 600), the same `campaign send` made the links
    /// with. Stops cleanly on SIGINT or SIGTERM. Exit codes: 0 stopped by a signal; 2 bad
    /// flags, campaign file, secret or --out file; 1 cannot listen, other failures.
    #[command(after_long_help = SERVER_HELP)]
    UnsubscribeServer(crate::cmd::unsubscribe_server::Args),
}

/// The environment variables `send`, `check`, `bounces` and the server read.
macro_rules! environment {
    () => {
        "Environment:
  CAMPAIGN_SMTP_URL                 the relay: smtp+starttls://user@relay.example:587 (else [smtp])
  CAMPAIGN_SMTP_PASSWORD            the relay password (else [smtp] password_file)
  CAMPAIGN_UNSUBSCRIBE_SECRET       the secret of the unsubscribe tokens (16+ bytes)
  CAMPAIGN_UNSUBSCRIBE_SECRET_FILE  a mode-600 file holding it instead"
    };
}

const SEGMENT_HELP: &str = "Examples:
  campaign segment donors.csv --campaign spring.toml --out runs/spring
  campaign segment spenden.csv --delimiter ';' --campaign spring.toml --out runs/spring
  campaign segment donors.csv --campaign spring.toml --out runs/spring --suppress unsubscribed.txt --suppress runs/autumn
  campaign segment donors.csv --campaign spring.toml --explain ann@example.org";

const CHECK_HELP: &str = concat!(
    "Examples:
  campaign check spring.toml
  campaign check spring.toml --donors donors.csv --smtp
  campaign check spring.toml --donors spenden.csv --delimiter ';'

",
    environment!()
);

const SEND_HELP: &str = concat!(
    "Examples:
  campaign send runs/spring --dry-run --print ann@example.org
  campaign send runs/spring --rate 50/s --daily-cap 20000 --suppress unsubscribed.txt
  campaign send runs/spring --quiet --ok-if-locked                  # from cron
  campaign send runs/spring --shard $SLURM_ARRAY_TASK_ID/16 --lock-wait 60s

",
    environment!()
);

const STATUS_HELP: &str = "Examples:
  campaign status runs/spring
  campaign status runs/spring --json | jq -r .state
  campaign status runs/spring >/dev/null; echo $?    # 0 complete, 5 left, 6 halted, 7 sending

Exit status:
  0  every donor has an outcome
  5  donors are left (a run not started too): `campaign send` goes on
  6  the relay halted the run: fix the cause, then `campaign send RUN --clear-halt`
  7  a send is running now";

const REPORT_HELP: &str = "Examples:
  campaign report runs/spring        # after every `send --shard I/N` has finished";

const SERVER_HELP: &str = concat!(
    "Examples:
  campaign unsubscribe-server --listen 127.0.0.1:8058 --out /var/lib/campaign/unsubscribed.txt --campaign spring.toml

",
    environment!()
);

const BOUNCES_EXAMPLES: &str = concat!(
    "Examples:
  campaign bounces ~/Maildir/.Bounces --out suppress/bounced.txt --run runs/spring
  campaign bounces - --out /var/lib/campaign/bounced.txt      # behind a mail alias

",
    environment!()
);
