//! `campaign status`: where every donor of a run stands, read from its ledgers.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::exit::{Code, Error};
use crate::manifest::Manifest;
use crate::send::{self, SegmentStatus};

/// Flags of `campaign status`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The run directory.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `campaign status`.
pub fn run(args: Args) -> Result<Code, Error> {
    let manifest = Manifest::load(&args.run).map_err(|e| Error::new(Code::Usage, e))?;
    let all: Vec<usize> = (0..manifest.segments.len()).collect();
    let segments = send::status(&args.run, &manifest, &all)?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&segments).map_err(anyhow::Error::from)?
        )
    } else {
        table(&segments)
    };
    super::print_bytes(text.as_bytes())?;
    Ok(Code::Success)
}

/// The per-segment table shared with `send`'s summary.
pub fn table(segments: &[SegmentStatus]) -> String {
    use std::fmt::Write as _;
    let w = super::segment_column(segments.iter().map(|t| t.segment.as_str()));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<w$}  {:>8}  {:>8}  {:>7}  {:>8}  {:>7}  {:>8}",
        "segment", "donors", "sent", "failed", "deferred", "unknown", "pending"
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
        total.pending += t.pending;
    }
    for t in segments.iter().chain([&total]) {
        let _ = writeln!(
            s,
            "{:<w$}  {:>8}  {:>8}  {:>7}  {:>8}  {:>7}  {:>8}",
            t.segment, t.donors, t.sent, t.failed, t.deferred, t.unknown, t.pending
        );
    }
    s
}
