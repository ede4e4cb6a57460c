//! One pre-flight for `check`, `send --dry-run` and `send`: everything that can be known
//! about a campaign before a message is rendered for real or a connection is opened.
//!
//! Owns the list of what is checked and how each finding counts for each [`Purpose`]: the
//! campaign file (read by [`Campaign::load`], which already types `[send]`), the rules, the
//! templates and `[message]` (through [`Preparer::new`]), the unsubscribe-secret rule, and
//! `[smtp]` resolved exactly as `send` resolves it (TLS mode, port, the password source present
//! and readable, never its value), and the `[[dkim]]` keys (through [`Preparer::new`]) and
//! their alignment with the From domain. `check` also renders each segment's message for one
//! sample donor, and with an export counts the donors whose address needs SMTPUTF8. A
//! finding that only depends on the environment of the moment (no relay named anywhere, no
//! password or secret set) is a note for `check` and a dry run, and a problem for `send`;
//! everything else is a problem for all three, so `check` passes only what `send` would start
//! with. It never opens a connection, never writes a file and never reads a
//! variable itself: [`Environment`] is read once, by the caller.

use std::ffi::OsString;
use std::path::Path;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::campaign::{Campaign, SegmentDef};
use crate::csvio::{Delimiter, OwnedRecord, RawReader};
use crate::prepare::{Inputs, Preparer, Workspace};
use crate::rules::{self, Rule};
use crate::run::OpenedRun;
use crate::schema::{ColumnType, Schema};
use crate::segment;
use crate::transport::settings::{PASSWORD_ENV, SmtpSettings, URL_ENV, default_hello_name};
use crate::unsubscribe::UnsubscribeSecret;

/// The environment variables the pre-flight looks at, read once.
#[derive(Default)]
pub struct Environment {
    /// `CAMPAIGN_SMTP_URL`.
    pub smtp_url: Option<String>,
    /// `CAMPAIGN_SMTP_PASSWORD` (never printed).
    pub smtp_password: Option<String>,
    /// `CAMPAIGN_UNSUBSCRIBE_SECRET` (never printed).
    pub unsubscribe_secret: Option<OsString>,
    /// `CAMPAIGN_UNSUBSCRIBE_SECRET_FILE`: a file holding the secret instead.
    pub unsubscribe_secret_file: Option<OsString>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<set>"))
            .field(
                "smtp_password",
                &self.smtp_password.as_ref().map(|_| "<set>"),
            )
            .field(
                "unsubscribe_secret",
                &self.unsubscribe_secret.as_ref().map(|_| "<set>"),
            )
            .field("unsubscribe_secret_file", &self.unsubscribe_secret_file)
            .finish()
    }
}

impl Environment {
    /// This process's variables.
    pub fn from_process() -> Environment {
        Environment {
            smtp_url: std::env::var(URL_ENV).ok(),
            smtp_password: std::env::var(PASSWORD_ENV).ok(),
            unsubscribe_secret: std::env::var_os(UnsubscribeSecret::ENV),
            unsubscribe_secret_file: std::env::var_os(UnsubscribeSecret::FILE_ENV),
        }
    }
}

/// Which command the pre-flight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `campaign check`: report everything, start nothing.
    Check,
    /// `send --dry-run`: render everything, open no connection.
    DryRun,
    /// `send`: deliver.
    Send,
}

/// What the pre-flight found.
#[derive(Debug, Default)]
pub struct Findings {
    /// What must be fixed first, each naming the file or setting and the fix.
    pub problems: Vec<String>,
    /// Worth knowing, not in the way.
    pub notes: Vec<String>,
}

impl Findings {
    /// A finding that only the environment of the moment decides: a problem for `send`, a
    /// note otherwise.
    fn environmental(&mut self, purpose: Purpose, text: String) {
        match purpose {
            Purpose::Send => self.problems.push(text),
            Purpose::Check | Purpose::DryRun => self.notes.push(text),
        }
    }
}

/// A run ready for [`Purpose::DryRun`] or [`Purpose::Send`].
pub struct Ready {
    /// Renders every donor's message.
    pub preparer: Preparer,
    /// The relay, resolved; `None` only for a dry run without one.
    pub smtp: Option<SmtpSettings>,
    /// Notes for the operator (the run's own warnings first).
    pub notes: Vec<String>,
}

/// Checks an opened run for a dry run or a send.
pub fn run(
    run: &OpenedRun,
    env: &Environment,
    purpose: Purpose,
    now: Timestamp,
) -> Result<Ready, Findings> {
    let mut f = Findings {
        problems: Vec::new(),
        notes: run.warnings.clone(),
    };
    let campaign = &run.campaign;
    let secret = secret(campaign, env, purpose, &mut f);
    let smtp = smtp(campaign, env, purpose, &mut f);
    let as_of = match run.manifest.as_of.parse::<Date>() {
        Ok(d) => Some(d),
        Err(e) => {
            f.problems
                .push(format!("manifest: as_of {:?}: {e}", run.manifest.as_of));
            None
        }
    };
    let segments = match run.segment_defs() {
        Ok(s) => s,
        Err(e) => {
            f.problems.push(format!("{e:#}"));
            Vec::new()
        }
    };
    let preparer = as_of.and_then(|as_of| {
        let inputs = Inputs {
            campaign,
            header: &run.manifest.header,
            email_column: &run.manifest.email_column,
            segments: &segments,
            as_of,
            check_variables: true,
        };
        Preparer::new(&inputs, secret, now)
            .map_err(|ps| f.problems.extend(ps))
            .ok()
    });
    match preparer {
        Some(preparer) if f.problems.is_empty() => Ok(Ready {
            preparer,
            smtp,
            notes: f.notes,
        }),
        _ => Err(f),
    }
}

/// Checks a campaign file for `campaign check`, against the export `donors` when given, its
/// fields separated by `delimiter` (as [`segment::SegmentOptions::delimiter`]).
pub fn campaign(
    campaign: &Campaign,
    donors: Option<&Path>,
    delimiter: Option<Delimiter>,
    env: &Environment,
    today: Date,
    now: Timestamp,
) -> Findings {
    let purpose = Purpose::Check;
    let mut f = Findings::default();
    let mut export = None;
    let header = match donors {
        Some(path) => match segment::open_donors(path, delimiter, false) {
            Ok((rdr, header, _)) => {
                export = Some((rdr, path));
                Some(header)
            }
            Err(e) => {
                f.problems.push(format!("{e:#}"));
                None
            }
        },
        None => None,
    };
    rules(campaign, header.as_deref(), today, &mut f);
    if let Some(m) = &campaign.message
        && m.unsubscribe_url.is_none()
    {
        f.problems.push(format!(
            "{}: [message] has no unsubscribe_url: bulk mail needs one-click unsubscribe (RFC 8058), and Gmail and Yahoo reject bulk mail without it",
            campaign.path.display()
        ));
    }
    let secret = secret(campaign, env, purpose, &mut f);
    smtp(campaign, env, purpose, &mut f);

    let made_up = header.is_none();
    let header = header.unwrap_or_else(|| declared_header(campaign));
    let inputs = Inputs {
        campaign,
        header: &header,
        email_column: &campaign.email_column,
        segments: &campaign.segments,
        as_of: today,
        check_variables: !made_up,
    };
    let preparer = match Preparer::new(&inputs, secret, now) {
        Ok(p) => p,
        Err(ps) => {
            // The rules' check already said what is wrong with the export's header.
            for p in ps {
                if !f.problems.contains(&p) {
                    f.problems.push(p);
                }
            }
            return f;
        }
    };
    dkim_alignment(campaign, &preparer, &mut f);
    let sample = match export {
        Some((rdr, path)) => {
            let scan = scan_export(&preparer, rdr);
            if scan.need_smtputf8 > 0 {
                f.notes.push(format!(
                    "{}: {} donor rows have an address whose part before the @ is not ASCII: they need a relay that offers SMTPUTF8, and stay deferred until a send goes through one (`check --smtp` says whether yours does)",
                    path.display(),
                    scan.need_smtputf8
                ));
            }
            scan.sample
                .map(|(rec, line)| (rec, format!("the donor on {}:{line}", path.display())))
        }
        None => made_up_row(campaign, &header, today)
            .map(|rec| (rec, "a sample donor made from [columns]".to_owned())),
    };
    if let Some((rec, source)) = sample {
        render_sample(
            &preparer,
            &campaign.segments,
            &header,
            &rec,
            &source,
            made_up,
            &mut f,
        );
    }
    f
}

/// Renders every segment's message for one donor: what no syntax check sees (a subject that
/// renders to two lines, an unsubscribe URL that is not https, a header that cannot be
/// encoded). A made-up donor lacks the columns nobody declared: for a segment whose templates
/// use such a column, a failure may be only that, so it is a note.
fn render_sample(
    preparer: &Preparer,
    segments: &[SegmentDef],
    header: &[String],
    rec: &OwnedRecord,
    source: &str,
    made_up: bool,
    f: &mut Findings,
) {
    let mut ws = Workspace::default();
    for seg in segments {
        let Err(e) = preparer.prepare(seg.name.as_str(), &seg.template, &rec.record(), &mut ws)
        else {
            continue;
        };
        let text = format!(
            "segment {:?}: the message for {source} cannot be built: {}",
            seg.name.as_str(),
            e.reason
        );
        let undeclared = made_up
            && !preparer
                .templates()
                .check(std::slice::from_ref(seg), header)
                .is_empty();
        if undeclared {
            f.notes.push(format!(
                "{text} (its templates use columns [columns] does not declare: pass --donors to check with a real donor)"
            ));
        } else {
            f.problems.push(text);
        }
    }
}

/// What one pass over the export finds for `check`.
struct ExportScan {
    /// The first row that is a valid donor, with its line; rows with a bad address or value
    /// are for `segment` to report.
    sample: Option<(OwnedRecord, u64)>,
    /// Rows whose address has a non-ASCII local part. A non-ASCII domain is not counted: it
    /// goes out in its xn-- form. Counted before duplicates and suppressions are dropped.
    need_smtputf8: u64,
}

fn scan_export<R: std::io::Read>(preparer: &Preparer, mut rdr: RawReader<R>) -> ExportScan {
    let mut ws = Workspace::default();
    let mut scan = ExportScan {
        sample: None,
        need_smtputf8: 0,
    };
    // A few hundred rows is plenty to find one good donor; the count reads every row.
    let mut tries = 500;
    while let Ok(Some(rec)) = rdr.next_record() {
        if scan.sample.is_none() && tries > 0 {
            tries -= 1;
            if preparer.reads(&rec, &mut ws) {
                scan.sample = Some((rec.to_owned_record(), rec.line));
            }
        }
        if let Some((_, email)) = preparer.key_of(&rec)
            && email
                .rsplit_once('@')
                .is_some_and(|(local, _)| !local.is_ascii())
        {
            scan.need_smtputf8 += 1;
        }
    }
    scan
}

/// The header `check` assumes without an export: the email column and the declared columns.
fn declared_header(campaign: &Campaign) -> Vec<String> {
    let mut header = vec![campaign.email_column.clone()];
    header.extend(
        campaign
            .columns
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|n| n != &campaign.email_column),
    );
    header
}

/// A donor row for `header` with a plausible value of each declared type.
fn made_up_row(campaign: &Campaign, header: &[String], today: Date) -> Option<OwnedRecord> {
    let mut line = Vec::new();
    for (i, name) in header.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        let ty = campaign
            .columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t);
        let value = if name == &campaign.email_column {
            "sample.donor@example.org".to_owned()
        } else {
            match ty {
                Some(ColumnType::Number) => "125.50".to_owned(),
                Some(ColumnType::Date) => today.to_string(),
                Some(ColumnType::Bool) => "true".to_owned(),
                Some(ColumnType::Text) | None => "Sample".to_owned(),
            }
        };
        line.extend_from_slice(value.as_bytes());
    }
    line.push(b'\n');
    let mut rdr = RawReader::new(&line[..]);
    rdr.next_record().ok()?.map(|r| r.to_owned_record())
}

/// `[smtp]` resolved as `send` resolves it, everything `send` would refuse a problem: the
/// relay `campaign check --smtp` connects to.
pub fn relay(campaign: &Campaign, env: &Environment) -> Result<SmtpSettings, Findings> {
    let mut f = Findings::default();
    match smtp(campaign, env, Purpose::Send, &mut f) {
        Some(s) if f.problems.is_empty() => Ok(s),
        _ => Err(f),
    }
}

/// The rules: compiled against the export's columns, or checked for syntax without one.
fn rules(campaign: &Campaign, header: Option<&[String]>, today: Date, f: &mut Findings) {
    match header {
        Some(header) => match Schema::new(header, &campaign.columns) {
            // The email column is the preparer's to check.
            Ok(schema) => {
                if let Err(ps) = rules::compile_rules(campaign, &schema, today) {
                    f.problems.extend(ps);
                }
            }
            Err(e) => f.problems.push(format!("{}: {e}", campaign.path.display())),
        },
        None => {
            for (i, seg) in campaign.segments.iter().enumerate() {
                if let Some(src) = &seg.when
                    && let Err(e) = Rule::check_syntax(src)
                {
                    f.problems.push(rules::rule_problem(campaign, i, src, &e));
                }
            }
            f.notes.push(
                "no --donors given: rules and templates were checked for syntax only, not against the export's columns".into(),
            );
        }
    }
}

/// A note when no `[[dkim]]` domain lines up with the From domain, as DMARC wants. Without the
/// public-suffix list, "aligned" is the same domain or one inside the other; sibling
/// subdomains of one organisation are flagged, worded as a maybe.
fn dkim_alignment(campaign: &Campaign, preparer: &Preparer, f: &mut Findings) {
    let from = preparer.from_domain();
    let domains: Vec<&str> = preparer.dkim().domains().collect();
    let inside = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
    if domains.is_empty() || domains.iter().any(|d| inside(from, d) || inside(d, from)) {
        return;
    }
    f.notes.push(format!(
        "{}: no [[dkim]] domain ({}) is the From domain {from} or a parent or subdomain of it, so DMARC may fail for this mail unless the relay also signs as {from}; sign with {from}",
        campaign.path.display(),
        domains.join(", ")
    ));
}

/// The unsubscribe secret, and the rule that links carrying a token need it.
fn secret(
    campaign: &Campaign,
    env: &Environment,
    purpose: Purpose,
    f: &mut Findings,
) -> Option<UnsubscribeSecret> {
    // The environment first (either variable), then the campaign file's setting.
    let from_env = env.unsubscribe_secret.is_some() || env.unsubscribe_secret_file.is_some();
    let in_campaign = campaign
        .message
        .as_ref()
        .and_then(|m| m.unsubscribe_secret_file.as_ref())
        .filter(|_| !from_env)
        .map(|p| campaign.path.parent().unwrap_or(Path::new("")).join(p));
    let found = match in_campaign {
        Some(path) => UnsubscribeSecret::from_file(&path)
            .map(Some)
            .map_err(|e| format!("[message] unsubscribe_secret_file: {e}")),
        None => UnsubscribeSecret::from_var_or_file(
            env.unsubscribe_secret.clone(),
            env.unsubscribe_secret_file.clone(),
        ),
    };
    let secret = match found {
        Ok(s) => s,
        Err(e) => {
            f.problems.push(e);
            return None;
        }
    };
    let uses_token = campaign
        .message
        .as_ref()
        .and_then(|m| m.unsubscribe_url.as_deref())
        .is_some_and(|u| u.contains("unsubscribe_token"));
    if secret.is_none() {
        let (env_name, file_env) = (UnsubscribeSecret::ENV, UnsubscribeSecret::FILE_ENV);
        match purpose {
            Purpose::Send if uses_token => f.problems.push(format!(
                "unsubscribe_url uses unsubscribe_token but {env_name} is not set (nor {file_env}); refusing to send links that cannot be verified. Set it to the secret your unsubscribe endpoint checks (at least 16 bytes, e.g. `openssl rand -hex 32`)"
            )),
            Purpose::Check if uses_token => f.notes.push(format!(
                "{env_name} is not set (nor {file_env}): a dry run will use placeholder tokens and a real send will refuse to start"
            )),
            Purpose::DryRun => f.notes.push(format!(
                "{env_name} is not set (nor {file_env}): unsubscribe links in previews carry a placeholder token; a real send needs the secret"
            )),
            _ => {}
        }
    }
    secret
}

/// `[smtp]` and `CAMPAIGN_SMTP_URL`, resolved as `send` resolves them.
fn smtp(
    campaign: &Campaign,
    env: &Environment,
    purpose: Purpose,
    f: &mut Findings,
) -> Option<SmtpSettings> {
    let base_dir = campaign.path.parent().unwrap_or(Path::new(""));
    match SmtpSettings::resolve(
        &campaign.smtp,
        env.smtp_url.as_deref(),
        env.smtp_password.as_deref(),
        base_dir,
    ) {
        Ok(mut s) => {
            if s.skip_certificate_check && s.tls != crate::transport::TlsMode::None {
                // On every run, for every command: this is how a setting like it stays rare.
                f.notes.push(format!(
                    "{}: [smtp] dangerous_skip_certificate_check = true: the relay's certificate is NOT checked, so anyone on the way to {} can read every message and the password. Install the relay's CA in the system store or name it in [smtp] ca_file instead",
                    campaign.path.display(),
                    s.describe()
                ));
            }
            if campaign.smtp.hello_name.is_none() {
                let from = campaign
                    .message
                    .as_ref()
                    .and_then(|m| m.from.parse::<lettre::message::Mailbox>().ok());
                let (name, fell_back) = default_hello_name(from.as_ref().map(|m| m.email.domain()));
                if fell_back {
                    f.notes.push(format!(
                        "this machine's name is not a full domain name, so the relay is greeted as {name:?}; set [smtp] hello_name to this machine's public name (the one its address resolves back to)"
                    ));
                }
                s.hello_name = name;
            }
            Some(s)
        }
        Err(e) if e.depends_on_environment() => {
            f.environmental(purpose, format!("{}: {e}", campaign.path.display()));
            None
        }
        Err(e) => {
            f.problems.push(format!("{}: {e}", campaign.path.display()));
            None
        }
    }
}
