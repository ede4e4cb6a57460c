//! `campaign status`: what happened to a run and what to do next, read from its ledgers,
//! locks and reports. The exit code is `send`'s for the same run.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::exit::{Code, Error};
use campaign::manifest::Manifest;
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
    let overview = send::overview(&args.run, &manifest)?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&overview).map_err(anyhow::Error::from)?
        )
    } else {
        super::summary::overview(&overview)
    };
    super::print_bytes(text.as_bytes())?;
    Ok(overview.exit)
}
