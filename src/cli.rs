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
#[command(name = "campaign", version, about, long_about)]
pub struct Cli {
    /// The step to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a donor export, drop invalid, duplicate and suppressed rows, assign each donor
    /// to one segment and write a run directory.
    ///
    /// Exit codes: 0 run written; 2 bad flags, campaign file or rules; 3 input refused
    /// (too many invalid rows, no rows, existing run in the way); 1 other failures.
    Segment(crate::cmd::segment::Args),

    /// Check a campaign file, its rules and its templates, reporting every problem found.
    ///
    /// With --donors, rules and template variables are checked against that export's
    /// columns. Exit codes: 0 no problems; 2 problems found (listed on stdout).
    Check(crate::cmd::check::Args),

    /// Render and deliver a run's messages. With --dry-run, render every message, write
    /// previews and a failures file, and send nothing.
    ///
    /// Exit codes: 0 every message rendered; 4 some donors' messages could not be rendered
    /// (listed in RUN/previews/failures.csv); 2 bad flags, campaign file or templates;
    /// 1 other failures.
    Send(crate::cmd::send::Args),
}
