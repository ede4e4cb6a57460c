//! The `campaign` binary: parse flags, run one subcommand, report its error once, exit.
//!
//! The command line ([`cli`]) and the commands' flags, output and exit codes ([`cmd`]) live
//! in the binary; everything they call is the library's.

use std::process::ExitCode;

use clap::Parser;

use campaign::exit::escape_controls;
use cli::{Cli, Command};

mod cli;
mod cmd;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(args),
        Command::Segment(args) => cmd::segment::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Send(args) => cmd::send::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Completions(args) => cmd::completions::run(args),
        Command::Man(args) => cmd::man::run(args),
        Command::Bounces(args) => cmd::bounces::run(args),
        Command::UnsubscribeServer(args) => cmd::unsubscribe_server::run(args),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("campaign: {}", escape_controls(&format!("{:#}", e.error)));
            e.code.into()
        }
    }
}
