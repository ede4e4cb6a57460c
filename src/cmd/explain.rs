//! `campaign explain RUN EMAIL`: one donor's story in a run.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::exit::{Code, Error, escape_controls};

/// Flags of `campaign explain`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The run directory.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,

    /// The donor's address (compared case-insensitively).
    #[arg(value_name = "EMAIL")]
    pub email: String,
}

/// Runs `campaign explain`.
pub fn run(args: Args) -> Result<Code, Error> {
    let text = campaign::explain::explain(&args.run, &args.email).map_err(super::usage)?;
    let shown: Vec<String> = text.lines().map(escape_controls).collect();
    super::print_bytes(format!("{}\n", shown.join("\n")).as_bytes())?;
    Ok(Code::Success)
}
