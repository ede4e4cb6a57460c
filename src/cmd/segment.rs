//! `campaign segment`: flags, output and exit codes around [`campaign::segment`].

use std::path::PathBuf;

use clap::Args as ClapArgs;
use jiff::civil::Date;

use campaign::campaign::Campaign;
use campaign::csvio::Delimiter;
use campaign::exit::{Code, Error};
use campaign::segment::{self, SegmentError, SegmentOptions};

/// Flags of `campaign segment`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The donor export: CSV with a header line, UTF-8 (a BOM is fine), LF or CRLF, fields
    /// separated by commas unless --delimiter says otherwise.
    #[arg(value_name = "DONORS.csv")]
    pub donors: PathBuf,

    /// The campaign file (TOML): campaign id, column types and ordered segment rules.
    #[arg(long, value_name = "CAMPAIGN.toml")]
    pub campaign: PathBuf,

    /// The run directory to create. It must not exist yet (see --force).
    #[arg(long, value_name = "RUN_DIR", required_unless_present = "explain")]
    pub out: Option<PathBuf>,

    /// A suppression list: one address per line (`@domain` lines suppress a domain, `#`
    /// starts a comment), a CSV with an `email` column, or an earlier run directory (every
    /// donor it sent or may have sent). Repeat for several.
    #[arg(long, value_name = "FILE")]
    pub suppress: Vec<PathBuf>,

    /// Donors per chunk file; chunks are the unit of work for `send`.
    #[arg(long, value_name = "N", default_value_t = segment::DEFAULT_CHUNK_SIZE,
          value_parser = parse_chunk_size)]
    pub chunk_size: usize,

    /// The date `today` means in rules, so a re-run gives the same segments. Default: the
    /// current local date.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = super::values::date)]
    pub as_of: Option<Date>,

    /// Replace RUN_DIR if it is a run that has not started sending. A run with a delivery
    /// ledger is never replaced.
    #[arg(long)]
    pub force: bool,

    /// Print the summary as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Show, for the donor with this address, where each of their rows goes and each rule's
    /// verdict with the values it compared. Writes nothing; --out is not needed.
    #[arg(long, value_name = "EMAIL")]
    pub explain: Option<String>,

    /// Refuse to write a run when more than this share of rows fails validation (0 to 1):
    /// a broken export must not become half a campaign.
    #[arg(long, value_name = "FRACTION", default_value_t = segment::DEFAULT_MAX_REJECT_RATE,
          value_parser = parse_fraction)]
    pub max_reject_rate: f64,

    /// The column holding email addresses, overriding `email_column` in the campaign file.
    #[arg(long, value_name = "NAME")]
    pub email_column: Option<String>,

    /// The character between fields, for an export not separated by commas: ';' (Excel in
    /// locales whose decimal mark is a comma), '|', tab (also '\t'), or ','. Without it, an
    /// export whose header looks separated by one of these is refused, saying which.
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<Delimiter>,

    /// No progress bar even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_chunk_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a whole number from 1 to 10000000")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "{s:?} is not a fraction from 0 to 1 (for example 0.05 for 5%)"
        )),
    }
}

/// Runs `campaign segment`.
pub fn run(args: Args) -> Result<Code, Error> {
    let mut campaign = Campaign::load(&args.campaign).map_err(|e| Error::new(Code::Usage, e))?;
    if let Some(col) = args.email_column {
        campaign.email_column = col;
    }
    let as_of = match args.as_of {
        Some(d) => d,
        None => jiff::ZonedDateTime::now().date(),
    };
    let opts = SegmentOptions {
        donors: args.donors,
        delimiter: args.delimiter,
        campaign,
        suppress: args.suppress,
        out: args.out.clone().unwrap_or_default(),
        chunk_size: args.chunk_size,
        as_of,
        force: args.force,
        max_reject_rate: args.max_reject_rate,
        now: jiff::Timestamp::now(),
    };
    if let Some(email) = &args.explain {
        let text = segment::explain(&opts, email).map_err(map_error)?;
        super::print_bytes(text.as_bytes())?;
        return Ok(Code::Success);
    }
    let size = std::fs::metadata(&opts.donors).map_or(0, |m| m.len());
    let bars = super::progress::Bars::single(
        !args.quiet,
        size,
        "{spinner} segmenting [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    let result = segment::run(&opts, &bars);
    bars.finish();
    let report = result.map_err(map_error)?;
    super::warn(&report.warnings);
    let text = if args.json {
        super::run_table::segment_json(&report.manifest, &opts.out, &report.warnings)
    } else {
        super::run_table::segment(&report.manifest, &opts.out)
    };
    super::print_bytes(text.as_bytes())?;
    Ok(Code::Success)
}

fn map_error(e: SegmentError) -> Error {
    let code = match &e {
        SegmentError::TooManyRejected(_) | SegmentError::NoRows(_) | SegmentError::Replace(_) => {
            Code::Refused
        }
        SegmentError::Config(_) => Code::Usage,
        SegmentError::Other(_) => Code::Failure,
    };
    Error::new(code, e)
}
