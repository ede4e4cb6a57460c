//! The `campaign` binary: parse flags, run one subcommand, report its error once, exit.

use std::process::ExitCode;

use clap::Parser;

use campaign::cli::{Cli, Command};
use campaign::exit::escape_controls;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Segment(args) => campaign::cmd::segment::run(args),
        Command::Check(args) => campaign::cmd::check::run(args),
        Command::Send(args) => campaign::cmd::send::run(args),
        Command::Status(args) => campaign::cmd::status::run(args),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("campaign: {}", escape_controls(&format!("{:#}", e.error)));
            e.code.into()
        }
    }
}
