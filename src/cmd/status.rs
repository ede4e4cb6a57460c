//! `campaign status`: where every donor of a run stands, read from its ledgers.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::exit::{Code, Error};
use campaign::manifest::Manifest;
use campaign::run::Selection;
use campaign::send;

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
    let manifest = Manifest::load(&args.run).map_err(super::usage)?;
    let segments = send::status(&args.run, &manifest, &Selection::all(&manifest))?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&segments).map_err(anyhow::Error::from)?
        )
    } else {
        super::summary::status(&segments)
    };
    super::print_bytes(text.as_bytes())?;
    Ok(Code::Success)
}
