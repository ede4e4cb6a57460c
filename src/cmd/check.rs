//! `campaign check`: every problem in a campaign file, its rules, its templates and its
//! sending settings, found before anything is segmented or sent.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use campaign::campaign::Campaign;
use campaign::clock::{Clock, SystemClock};
use campaign::csvio::Delimiter;
use campaign::exit::{Code, Error, escape_controls};
use std::sync::Arc;

use campaign::preflight::{self, Environment};
use campaign::transport::smtp;

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

    /// The character between the fields of --donors, as for `segment --delimiter`: ';', '|',
    /// tab or ','.
    #[arg(long, value_name = "CHAR", requires = "donors")]
    pub delimiter: Option<Delimiter>,

    /// Also connect to the relay exactly as `send` would (TLS, EHLO, AUTH), print what it
    /// offers and how messages will go (BDAT when it offers CHUNKING, unless `[smtp] chunking
    /// = false`; else DATA), and QUIT without sending. Exit 6 when it refuses, 5 when it cannot be reached.
    #[arg(long)]
    pub smtp: bool,
}

/// Runs `campaign check`, printing every problem found.
pub fn run(args: Args) -> Result<Code, Error> {
    let campaign = Campaign::load(&args.campaign).map_err(super::usage)?;
    let clock = SystemClock::new();
    let today = jiff::ZonedDateTime::now().date();
    let env = Environment::from_process();
    let found = preflight::campaign(
        &campaign,
        args.donors.as_deref(),
        args.delimiter,
        &env,
        today,
        clock.now(),
    );
    // Notes go where `send`'s do: stderr, as warnings; stdout holds the verdict.
    super::warn(&found.notes);
    let mut out = String::new();
    let problems = &found.problems;
    if problems.is_empty() {
        out.push_str(&format!(
            "{}: OK ({} segments, templates in {})\n",
            campaign.path.display(),
            campaign.segments.len(),
            campaign.templates_dir.display()
        ));
        super::print_bytes(escape_controls(&out).as_bytes())?;
        return if args.smtp {
            check_relay(&campaign, &env)
        } else {
            Ok(Code::Success)
        };
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

/// `--smtp`: one session with the relay, as `send` opens it, and what it offers.
fn check_relay(campaign: &Campaign, env: &Environment) -> Result<Code, Error> {
    let settings = preflight::relay(campaign, env).map_err(|f| {
        super::usage(anyhow::anyhow!(
            "cannot check the relay: {}",
            f.problems.join("; ")
        ))
    })?;
    let report = smtp::probe(&Arc::new(settings.clone())).map_err(super::probe_error)?;
    let ext = &report.extensions;
    let mut offers: Vec<String> = [
        ("STARTTLS", ext.starttls),
        ("PIPELINING", ext.pipelining),
        ("SMTPUTF8", ext.smtputf8),
        ("8BITMIME", ext.eight_bit_mime),
        ("CHUNKING", ext.chunking),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| (*name).to_owned())
    .collect();
    offers.extend(ext.size.map(|n| format!("SIZE {n}")));
    if !ext.auth.is_empty() {
        offers.push(format!("AUTH {}", ext.auth.join(" ")));
    }
    let tls = match (report.encrypted, settings.skip_certificate_check) {
        (false, _) => "none",
        (true, false) => "yes, certificate verified",
        (true, true) => "yes, certificate NOT checked (dangerous_skip_certificate_check)",
    };
    let login = match &settings.username {
        Some(user) => format!("accepted as {user:?}"),
        None => "none configured".to_owned(),
    };
    let mut out = format!("relay {}: ready; nothing was sent\n", report.relay);
    out.push_str(&format!(
        "  greeted with: {} as {}\n",
        if ext.helo_only {
            "HELO (the relay refused EHLO: no extensions)"
        } else {
            "EHLO"
        },
        settings.hello_name
    ));
    out.push_str(&format!("  TLS: {tls}\n"));
    let mut notes = Vec::from_iter(report.note());
    if let Some(c) = &report.certificate {
        let now = jiff::Timestamp::now();
        out.push_str(&format!("  certificate: {}\n", c.describe(now)));
        notes.extend(c.expiry_note(now));
    }
    out.push_str(&format!("  login: {login}\n"));
    out.push_str(&format!(
        "  offers: {}\n",
        if offers.is_empty() {
            "nothing".to_owned()
        } else {
            offers.join(", ")
        }
    ));
    let transfer = smtp::Transfer::of(ext, settings.chunking);
    out.push_str(&format!(
        "  sends: {}{}\n",
        transfer.describe(),
        if ext.chunking && !settings.chunking {
            "; CHUNKING is offered but [smtp] chunking = false"
        } else {
            ""
        }
    ));
    super::warn(&notes);
    super::print_bytes(escape_controls(&out).as_bytes())?;
    Ok(Code::Success)
}
