//! `campaign completions SHELL`: a completion script for the shell, on stdout.

use clap::{Args as ClapArgs, CommandFactory};
use clap_complete::Shell;

use campaign::exit::{Code, Error};

/// Flags of `campaign completions`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The shell: bash, zsh, fish, powershell or elvish.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// Runs `campaign completions`.
pub fn run(args: Args) -> Result<Code, Error> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "campaign", &mut out);
    super::print_bytes(&out)?;
    Ok(Code::Success)
}
