//! `campaign man`: the roff man page, on stdout (`campaign man > campaign.1`).

use clap::{Args as ClapArgs, CommandFactory};

use campaign::exit::{Code, Error};

/// Flags of `campaign man` (none).
#[derive(Debug, ClapArgs)]
pub struct Args {}

/// Runs `campaign man`: the main page, then a section per subcommand.
pub fn run(_: Args) -> Result<Code, Error> {
    let cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    let render = |c: &clap::Command, out: &mut Vec<u8>| {
        clap_mangen::Man::new(c.clone())
            .render(out)
            .map_err(anyhow::Error::from)
    };
    render(&cmd, &mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("campaign-{}", sub.get_name());
        render(&sub.clone().name(name), &mut out)?;
    }
    super::print_bytes(&out)?;
    Ok(Code::Success)
}
