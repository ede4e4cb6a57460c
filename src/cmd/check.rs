//! `campaign check`: every problem in a campaign file, its rules, its templates and its
//! sending settings, found before anything is segmented or sent.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::campaign::Campaign;
use campaign::clock::{Clock, SystemClock};
use campaign::exit::{Code, Error, escape_controls};
use campaign::preflight::{self, Environment};

/// Flags of `campaign check`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The campaign file to check.
    #[arg(value_name = "CAMPAIGN.toml")]
    pub campaign: PathBuf,

    /// A donor export whose header the rules and templates are checked against (column names,
    /// types, variables), and whose first valid donor every segment's message is built for.
    /// Without it only syntax is checked, and a made-up donor is used.
    #[arg(long, value_name = "DONORS.csv")]
    pub donors: Option<PathBuf>,
}

/// Runs `campaign check`, printing every problem found.
pub fn run(args: Args) -> Result<Code, Error> {
    let campaign = Campaign::load(&args.campaign).map_err(super::usage)?;
    let clock = SystemClock::new();
    let today = jiff::ZonedDateTime::now().date();
    let found = preflight::campaign(
        &campaign,
        args.donors.as_deref(),
        &Environment::from_process(),
        today,
        clock.now(),
    );
    let mut out = String::new();
    for n in &found.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    let problems = &found.problems;
    if problems.is_empty() {
        out.push_str(&format!(
            "{}: OK ({} segments, templates in {})\n",
            campaign.path.display(),
            campaign.segments.len(),
            campaign.templates_dir.display()
        ));
        super::print_bytes(escape_controls(&out).as_bytes())?;
        return Ok(Code::Success);
    }
    for p in problems {
        out.push_str(p);
        out.push('\n');
    }
    out.push_str(&format!(
        "{} problem{} found in {}\n",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        campaign.path.display()
    ));
    super::print_bytes(escape_controls(&out).as_bytes())?;
    Ok(Code::Usage)
}
