//! `campaign init DIR`: write a starting campaign and say what to run next.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::exit::{Code, Error};
use campaign::init::{self, InitError, RUNS_DIR};

/// Flags of `campaign init`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Where to write the campaign (created if missing; nothing in it is overwritten).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Runs `campaign init`.
pub fn run(args: Args) -> Result<Code, Error> {
    let written = init::init(&args.dir).map_err(|e| match e {
        e @ InitError::Exists { .. } => Error::new(Code::Refused, e),
        e => Error::new(Code::Failure, e),
    })?;
    let d = args.dir.display();
    let mut out = format!("wrote {} files and {d}/{RUNS_DIR}/:\n", written.len());
    for p in &written {
        out.push_str(&format!("  {}\n", p.display()));
    }
    out.push_str(&format!(
        "\nnext:\n  campaign check {d}/campaign.toml --donors {d}/donors.csv\n  campaign segment {d}/donors.csv --campaign {d}/campaign.toml --suppress {d}/suppress.txt --out {d}/{RUNS_DIR}/first\n  campaign send {d}/{RUNS_DIR}/first --dry-run\n"
    ));
    super::print_bytes(out.as_bytes())?;
    Ok(Code::Success)
}
