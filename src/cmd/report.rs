//! `campaign report`: the whole run's report files, from the ledgers, after shards.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::exit::{Code, Error};
use campaign::ledger::{LedgerError, RunLock};
use campaign::manifest::Manifest;
use campaign::rundir::{
    FAILED_CSV, LEDGER_DIR, REPORT_JSON, SUPPRESS_BOUNCED, SUPPRESSED_CSV, UNKNOWN_CSV,
};
use campaign::send;

/// Flags of `campaign report`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The run directory.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `campaign report`.
pub fn run(args: Args) -> Result<Code, Error> {
    let manifest = Manifest::load(&args.run).map_err(super::usage)?;
    // Alone on the run, so no send rewrites these files beside it; a run never sent has no
    // ledger directory, and taking the lock would create one (marking it as sending).
    let _lock = match args.run.join(LEDGER_DIR).is_dir() {
        false => None,
        true => Some(RunLock::acquire(&args.run).map_err(|e| match e {
            e @ LedgerError::Locked { .. } => Error::new(Code::Locked, e),
            e => Error::new(Code::Failure, e),
        })?),
    };
    let report = send::whole_run(&args.run, &manifest)?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        )
    } else {
        let mut s = super::summary::status(&report.segments);
        let dir = args.run.display();
        s.push_str(&format!(
            "\n{} shard report(s) read; wrote {dir}/{REPORT_JSON}, {dir}/{FAILED_CSV}, {dir}/{UNKNOWN_CSV}, {dir}/{SUPPRESSED_CSV}, {dir}/{SUPPRESS_BOUNCED}\n",
            report.shards.len()
        ));
        s
    };
    super::print_bytes(text.as_bytes())?;
    Ok(Code::Success)
}
