//! `campaign check`: every problem in a campaign file, its rules and its templates, found
//! before anything is segmented or sent.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::campaign::Campaign;
use crate::exit::{Code, Error, escape_controls};
use crate::message::Composer;
use crate::render::{Problem, RunInfo, TemplateSet};
use crate::rules::Rule;
use crate::schema::Schema;
use crate::segment;
use crate::unsubscribe::UnsubscribeSecret;

/// Flags of `campaign check`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The campaign file to check.
    #[arg(value_name = "CAMPAIGN.toml")]
    pub campaign: PathBuf,

    /// A donor export whose header the rules and templates are checked against (column names,
    /// types, variables). Without it only syntax is checked.
    #[arg(long, value_name = "DONORS.csv")]
    pub donors: Option<PathBuf>,
}

/// Runs `campaign check`, printing every problem found.
pub fn run(args: Args) -> Result<Code, Error> {
    let campaign = Campaign::load(&args.campaign).map_err(|e| Error::new(Code::Usage, e))?;
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let today = jiff::ZonedDateTime::now().date();

    let header = match &args.donors {
        Some(path) => match segment::open_donors(path, false) {
            Ok((_, header, _)) => Some(header),
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        },
        None => None,
    };
    match &header {
        Some(header) => match Schema::new(header, &campaign.columns) {
            Ok(schema) => {
                if schema.column(&campaign.email_column).is_none() {
                    problems.push(format!(
                        "{}: email_column {:?} is not a column of the donor file; its columns are {}",
                        campaign.path.display(),
                        campaign.email_column,
                        header.join(", ")
                    ));
                }
                if let Err(ps) = segment::compile_rules(&campaign, &schema, today) {
                    problems.extend(ps);
                }
            }
            Err(e) => problems.push(format!("{}: {e}", campaign.path.display())),
        },
        None => {
            for (i, seg) in campaign.segments.iter().enumerate() {
                if let Some(src) = &seg.when
                    && let Err(e) = Rule::check_syntax(src)
                {
                    problems.push(segment::rule_problem(&campaign, i, src, &e));
                }
            }
            notes.push(
                "no --donors given: rules and templates were checked for syntax only, not against the export's columns".into(),
            );
        }
    }

    match &campaign.message {
        None => problems.push(format!(
            "{}: no [message] table: `send` needs at least `from` and `unsubscribe_url` (see README)",
            campaign.path.display()
        )),
        Some(m) => {
            if let Err(e) = Composer::new(campaign.id.as_str(), m) {
                problems.push(format!("{}: {e}", campaign.path.display()));
            }
            if m.unsubscribe_url.is_none() {
                problems.push(format!(
                    "{}: [message] has no unsubscribe_url: bulk mail needs one-click unsubscribe (RFC 8058), and Gmail and Yahoo reject bulk mail without it",
                    campaign.path.display()
                ));
            }
            let uses_token = m
                .unsubscribe_url
                .as_deref()
                .is_some_and(|u| u.contains("unsubscribe_token"));
            if uses_token {
                match UnsubscribeSecret::from_env() {
                    Ok(Some(_)) => {}
                    Ok(None) => notes.push(format!(
                        "{} is not set: a dry run will use placeholder tokens and a real send will refuse to start",
                        UnsubscribeSecret::ENV
                    )),
                    Err(e) => problems.push(e),
                }
            }
        }
    }

    let (templates, load_problems) =
        TemplateSet::load_with_problems(&campaign, RunInfo::new(&campaign, today));
    problems.extend(load_problems.iter().map(Problem::to_string));
    if let Some(header) = &header {
        problems.extend(
            templates
                .check(&campaign.segments, header)
                .iter()
                .map(Problem::to_string),
        );
    }

    let mut out = String::new();
    for n in &notes {
        out.push_str(&format!("note: {n}\n"));
    }
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
    for p in &problems {
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
