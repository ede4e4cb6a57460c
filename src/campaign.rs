//! The campaign file: what a campaign is called, how its columns are typed, and its ordered
//! segments.
//!
//! Owns reading and checking the TOML a marketer writes, into validated types
//! ([`CampaignId`], [`SegmentName`], [`SegmentDef`]). It never looks at donor data: rules are
//! kept as text here and compiled against the donor file's header by [`crate::rules`].
//!
//! # Format
//! ```toml
//! [campaign]
//! id = "spring-gala-2026"        # required; letters, digits, '.', '_', '-'
//! name = "Spring Gala 2026"      # optional, for templates
//! email_column = "email"         # optional, default "email"
//!
//! [columns]                      # optional; undeclared columns are text
//! total_given = "number"         # number | date | bool | text
//! last_gift_date = "date"
//!
//! [message]                      # needed by `check` and `send`, not by `segment`
//! from = "Friends of the Park <appeal@park.example>"
//! reply_to = "supporters@park.example"          # optional
//! return_path = "bounces+{{ key }}@park.example" # optional: the envelope sender, for bounces;
//!                                                # `{{ key }}` (VERP) names the donor in it
//! to_name = "{{ first_name }} {{ last_name }}"   # optional template for the To display name
//! unsubscribe_url = "https://park.example/u?e={{ email | urlencode }}&t={{ unsubscribe_token }}"
//! unsubscribe_mailto = "unsubscribe@park.example" # its subject carries campaign, address, token
//! currency = "£"                                 # optional symbol for the `money` filter
//!
//! [templates]
//! dir = "templates"              # optional, relative to this file; default "templates"
//!
//! [[segment]]                    # one or more, tried in order, first match wins
//! name = "major"                 # required; becomes a directory name
//! when = "total_given >= 1000"   # optional; a segment without `when` takes everyone left
//! template = "major"             # optional, defaults to the segment name
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::message::dkim::DkimTable;
use crate::schema::ColumnType;

/// A checked name usable as a directory and file name on any system: ASCII letters, digits,
/// `.`, `_` and `-`, not starting with `.` or `-`, at most 64 characters.
fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > 64 {
        return Err(format!("{what} {s:?} is longer than 64 characters"));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(format!(
            "{what} {s:?} starts with '{}'; start it with a letter or digit",
            &s[..1]
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} {s:?} contains {c:?}; use only letters, digits, '.', '_' and '-' (it becomes a directory name)"
        ));
    }
    Ok(())
}

/// A campaign's identifier; it appears in the manifest, paths and Message-IDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct CampaignId(String);

impl CampaignId {
    /// Checks `s` is a safe identifier.
    pub fn new(s: &str) -> Result<Self, String> {
        check_name("campaign id", s)?;
        Ok(CampaignId(s.to_owned()))
    }

    /// The identifier text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A segment's name; it becomes the directory `RUN/segments/<name>/`, so it can hold no path
/// separator and no `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SegmentName(String);

impl SegmentName {
    /// Checks `s` is a safe directory name.
    pub fn new(s: &str) -> Result<Self, String> {
        check_name("segment name", s)?;
        Ok(SegmentName(s.to_owned()))
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One segment as written in the campaign file.
#[derive(Debug, Clone)]
pub struct SegmentDef {
    /// The segment's name.
    pub name: SegmentName,
    /// The rule text; `None` takes every donor not matched by an earlier segment.
    pub when: Option<String>,
    /// The template the segment's donors receive.
    pub template: String,
}

/// How every message of the campaign is addressed, from the `[message]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MessageSettings {
    /// The From header: `Display Name <address>` or a bare address.
    pub from: String,
    /// An optional Reply-To address in the same form.
    pub reply_to: Option<String>,
    /// The envelope sender (MAIL FROM), where bounces go: a bare address, optionally with
    /// `{{ key }}` in its local part for the donor's key (VERP); default the From address.
    pub return_path: Option<String>,
    /// A template for the donor's display name in To; without it To is the bare address.
    pub to_name: Option<String>,
    /// A template for the one-click unsubscribe URL (https), per donor.
    pub unsubscribe_url: Option<String>,
    /// The mailto address for List-Unsubscribe.
    pub unsubscribe_mailto: Option<String>,
    /// A file holding the unsubscribe secret (mode 600), relative to the campaign file, when
    /// the environment gives none: for cron, whose environment is bare.
    pub unsubscribe_secret_file: Option<PathBuf>,
    /// Currency symbol the `money` filter puts before amounts.
    pub currency: Option<String>,
    /// A template for the List-Id header (RFC 2919), e.g. `Spring appeal <spring.park.example>`.
    pub list_id: Option<String>,
    /// A template for Gmail's Feedback-ID header, e.g. `{{ campaign.id }}:{{ segment }}:appeal:park`.
    pub feedback_id: Option<String>,
}

/// The `[smtp]` table: where and how to deliver. `CAMPAIGN_SMTP_URL` overrides it; the
/// password never lives here (see `crate::transport::settings`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmtpTable {
    /// Relay host name or address.
    pub host: Option<String>,
    /// Port; defaults by TLS mode (25, 587, 465).
    pub port: Option<u16>,
    /// `none`, `starttls` or `tls` (implicit TLS).
    pub tls: Option<String>,
    /// User name for AUTH.
    pub username: Option<String>,
    /// A file holding the password (its first line), instead of `CAMPAIGN_SMTP_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// Allow AUTH over an unencrypted connection to a host that is not loopback.
    pub allow_insecure_auth: Option<bool>,
    /// A PEM file of certificate authorities to trust besides the built-in ones (an internal
    /// CA), relative to the campaign file.
    pub ca_file: Option<PathBuf>,
    /// Do not check the relay's certificate at all. Warned about on every run.
    pub dangerous_skip_certificate_check: Option<bool>,
    /// The name sent in EHLO.
    pub hello_name: Option<String>,
    /// Seconds to wait for any server reply.
    pub timeout_seconds: Option<u64>,
    /// Open a fresh connection after this many messages.
    pub reconnect_after: Option<usize>,
    /// Send with BDAT (RFC 3030) when the relay offers CHUNKING and PIPELINING; `false` keeps
    /// DATA, for a relay whose CHUNKING is broken.
    pub chunking: Option<bool>,
}

/// The `[send]` table as written; [`SendSettings`] is its checked form.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SendToml {
    rate: Option<String>,
    daily_cap: Option<u64>,
    concurrency: Option<usize>,
    max_attempts: Option<u32>,
    retry_delay_seconds: Option<f64>,
    max_wait_seconds: Option<f64>,
    halt_after: Option<usize>,
    #[serde(default)]
    suppress: Vec<PathBuf>,
}

/// The `[send]` table, checked: pacing defaults, overridden by `campaign send` flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendSettings {
    /// Global rate limit.
    pub rate: Option<Rate>,
    /// At most this many messages per calendar day (UTC) across runs of the same run directory.
    pub daily_cap: Option<u64>,
    /// SMTP connections (worker threads).
    pub concurrency: Option<usize>,
    /// Delivery attempts per donor within one `send` before leaving them deferred.
    pub max_attempts: Option<u32>,
    /// First retry delay; doubles each attempt, with jitter.
    pub retry_delay: Option<Duration>,
    /// How long to wait at the end of a run for retries to fall due.
    pub max_wait: Option<Duration>,
    /// Halt after this many donors in a row failed alike by the relay.
    pub halt_after: Option<usize>,
    /// Suppression lists `send` honours on top of segment's (relative paths already resolved
    /// against the campaign file's directory); flags add to them.
    pub suppress: Vec<PathBuf>,
}

impl SendToml {
    fn check(self) -> Result<SendSettings, String> {
        let rate = match &self.rate {
            Some(text) => Some(
                text.parse::<Rate>()
                    .map_err(|e| format!("[send] rate: {e}"))?,
            ),
            None => None,
        };
        let retry_delay = self
            .retry_delay_seconds
            .map(|s| seconds("retry_delay_seconds", s))
            .transpose()?;
        let max_wait = self
            .max_wait_seconds
            .map(|s| seconds("max_wait_seconds", s))
            .transpose()?;
        let concurrency = match self.concurrency {
            Some(n) if !(1..=MAX_CONCURRENCY).contains(&n) => {
                return Err(format!(
                    "[send] concurrency = {n}: write a number of connections from 1 to {MAX_CONCURRENCY}"
                ));
            }
            n => n,
        };
        Ok(SendSettings {
            suppress: self.suppress,
            rate,
            daily_cap: self.daily_cap,
            concurrency,
            max_attempts: self.max_attempts,
            retry_delay,
            max_wait,
            halt_after: match self.halt_after {
                Some(0) => {
                    return Err(
                        "[send] halt_after = 0: the breaker needs at least 1 donor (default 20)"
                            .into(),
                    );
                }
                n => n,
            },
        })
    }
}

/// A hint for the usual TOML mistake in a rule: double quotes inside a double-quoted
/// `when = "country = "UK""`, which TOML reads as the string's end.
fn quoting_hint(text: &str, e: &toml::de::Error) -> &'static str {
    let Some(span) = e.span() else { return "" };
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (key, value) = line.split_once('=').unwrap_or(("", ""));
    if key.trim() == "when" && value.matches('"').count() > 2 {
        "\nhint: a rule's text values go in single quotes inside the double-quoted string: when = \"country = 'UK'\" (or quote the whole rule with single quotes: when = 'country = \"UK\"')"
    } else {
        ""
    }
}

/// The most connections (or dry-run threads) a process opens: beyond this a relay refuses
/// them anyway, and each costs a thread.
pub const MAX_CONCURRENCY: usize = 1024;

/// The longest duration any setting takes: a week; a send is not meant to sleep longer.
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// Seconds from the campaign file or the command line: a number from 0 to a week (a negative
/// number means 0, as it always has for the retry delay).
pub fn seconds(what: &str, secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs <= MAX_SECONDS {
        Ok(Duration::from_secs_f64(secs.max(0.0)))
    } else {
        Err(format!(
            "{what} = {secs} is not a number of seconds from 0 to {MAX_SECONDS} (a week); write e.g. 30"
        ))
    }
}

/// A global message rate, parsed from `50/s`, `3000/min` or `100000/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
}

impl Rate {
    /// Messages per second.
    pub fn per_second(self) -> f64 {
        self.per_second
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || {
            format!("{s:?} is not a rate; write messages per unit, like 50/s, 3000/min or 100000/h")
        };
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        if !(n.is_finite() && n > 0.0) {
            return Err(bad());
        }
        Ok(Rate {
            per_second: n / secs,
        })
    }
}

/// A checked campaign file.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Where it was read from.
    pub path: PathBuf,
    /// The campaign's identifier.
    pub id: CampaignId,
    /// A display name for templates.
    pub name: Option<String>,
    /// The header of the column holding donors' email addresses.
    pub email_column: String,
    /// Declared column types, in file order.
    pub columns: Vec<(String, ColumnType)>,
    /// Segments in the order they are tried.
    pub segments: Vec<SegmentDef>,
    /// The `[message]` table, if present (`check` and `send` require it).
    pub message: Option<MessageSettings>,
    /// The templates directory, resolved against the campaign file's directory.
    pub templates_dir: PathBuf,
    /// The `[smtp]` table.
    pub smtp: SmtpTable,
    /// The `[send]` table.
    pub send: SendSettings,
    /// The `[[dkim]]` tables, one signature each, in order.
    pub dkim: Vec<DkimTable>,
}

/// Why a campaign file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The file could not be read.
    #[error("cannot read campaign file {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause: in the message, not chained, so it is printed once.
        cause: std::io::Error,
    },
    /// The TOML does not parse or has unexpected keys.
    #[error("campaign file {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is not acceptable.
    #[error("campaign file {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    campaign: CampaignToml,
    #[serde(default)]
    columns: BTreeMap<String, ColumnType>,
    #[serde(default)]
    segment: Vec<SegmentToml>,
    message: Option<MessageSettings>,
    templates: Option<TemplatesToml>,
    #[serde(default)]
    smtp: SmtpTable,
    #[serde(default)]
    send: SendToml,
    #[serde(default)]
    dkim: Vec<DkimTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplatesToml {
    dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignToml {
    id: String,
    name: Option<String>,
    email_column: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentToml {
    name: String,
    when: Option<String>,
    template: Option<String>,
}

impl Campaign {
    /// Reads and checks a campaign file.
    pub fn load(path: &Path) -> Result<Campaign, CampaignError> {
        let text = std::fs::read_to_string(path).map_err(|cause| CampaignError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Campaign::parse(path, &text)
    }

    /// Checks campaign file text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Campaign, CampaignError> {
        let invalid = |message: String| CampaignError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: FileToml = toml::from_str(text).map_err(|e| CampaignError::Syntax {
            path: path.to_owned(),
            message: format!("{}{}", e.to_string().trim_end(), quoting_hint(text, &e)),
        })?;
        let id =
            CampaignId::new(&file.campaign.id).map_err(|m| invalid(format!("[campaign] {m}")))?;
        let email_column = file
            .campaign
            .email_column
            .unwrap_or_else(|| "email".to_owned());
        if email_column.trim().is_empty() {
            return Err(invalid("[campaign] email_column is empty".into()));
        }
        if let Some(ty) = file.columns.get(&email_column)
            && *ty != ColumnType::Text
        {
            return Err(invalid(format!(
                "[columns] declares the email column {email_column:?} as {ty}; it holds addresses, so remove that line"
            )));
        }
        if file.segment.is_empty() {
            return Err(invalid(
                "no segments: add at least one [[segment]] with a name (and usually a `when` rule)"
                    .into(),
            ));
        }
        let mut segments: Vec<SegmentDef> = Vec::with_capacity(file.segment.len());
        for (i, s) in file.segment.into_iter().enumerate() {
            let n = i + 1;
            let name =
                SegmentName::new(&s.name).map_err(|m| invalid(format!("segment {n}: {m}")))?;
            if let Some(prev) = segments.iter().position(|p| p.name == name) {
                return Err(invalid(format!(
                    "segments {} and {n} are both named {:?}; segment names must be unique",
                    prev + 1,
                    name.as_str()
                )));
            }
            if let Some(catch_all) = segments.iter().find(|p| p.when.is_none()) {
                return Err(invalid(format!(
                    "segment {n} {:?} can never match: segment {:?} before it has no `when` rule and takes every remaining donor; move the catch-all last",
                    name.as_str(),
                    catch_all.name.as_str()
                )));
            }
            if let Some(w) = &s.when
                && w.trim().is_empty()
            {
                return Err(invalid(format!(
                    "segment {n} {:?} has an empty `when`; write a rule, or remove the line to take every remaining donor",
                    name.as_str()
                )));
            }
            let template = match s.template {
                Some(t) => {
                    check_name("template name", &t)
                        .map_err(|m| invalid(format!("segment {n} {:?}: {m}", name.as_str())))?;
                    t
                }
                None => name.as_str().to_owned(),
            };
            segments.push(SegmentDef {
                name,
                when: s.when,
                template,
            });
        }
        let mut send = file.send.check().map_err(invalid)?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in &mut send.suppress {
            *p = base.join(&*p);
        }
        let templates_dir = base.join(
            file.templates
                .and_then(|t| t.dir)
                .unwrap_or_else(|| PathBuf::from("templates")),
        );
        Ok(Campaign {
            path: path.to_owned(),
            id,
            name: file.campaign.name,
            email_column,
            columns: file.columns.into_iter().collect(),
            segments,
            message: file.message,
            templates_dir,
            smtp: file.smtp,
            send,
            dkim: file.dkim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Campaign, String> {
        Campaign::parse(Path::new("c.toml"), text).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[campaign]
id = "gala-2026"
[columns]
total_given = "number"
last = "date"
[[segment]]
name = "major"
when = "total_given >= 1000"
[[segment]]
name = "rest"
template = "general"
"#;

    #[test]
    fn rates_parse_with_units_and_refuse_nonsense() {
        assert_eq!("50/s".parse::<Rate>().unwrap().per_second(), 50.0);
        assert_eq!("3000/min".parse::<Rate>().unwrap().per_second(), 50.0);
        assert_eq!("7200/h".parse::<Rate>().unwrap().per_second(), 2.0);
        for bad in ["50", "0/s", "-1/s", "x/s", "5/day", "inf/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn send_table_is_checked_when_read() {
        let c = parse(&format!(
            "{GOOD}[send]\nrate = \"3000/min\"\nretry_delay_seconds = 5\n"
        ))
        .unwrap();
        assert_eq!(c.send.rate.unwrap().per_second(), 50.0);
        assert_eq!(c.send.retry_delay, Some(Duration::from_secs(5)));
        let e = parse(&format!("{GOOD}[send]\nrate = \"fast\"\n")).unwrap_err();
        assert!(
            e.contains("c.toml") && e.contains("[send] rate") && e.contains("50/s"),
            "{e}"
        );
        for bad in ["inf", "nan", "1e300"] {
            let e = parse(&format!("{GOOD}[send]\nretry_delay_seconds = {bad}\n")).unwrap_err();
            assert!(
                e.contains("retry_delay_seconds") && e.contains("a week"),
                "{e}"
            );
        }
    }

    #[test]
    fn reads_a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.id.as_str(), "gala-2026");
        assert_eq!(c.email_column, "email");
        assert_eq!(
            c.columns,
            vec![
                ("last".to_owned(), ColumnType::Date),
                ("total_given".to_owned(), ColumnType::Number)
            ]
        );
        assert_eq!(c.segments[0].template, "major");
        assert_eq!(c.segments[1].template, "general");
        assert!(c.segments[1].when.is_none());
    }

    #[test]
    fn refuses_unsafe_segment_names() {
        for bad in ["../x", "a/b", "..", ".hidden", "a b", "", "a\\b"] {
            let text = GOOD.replace("\"major\"", &format!("{bad:?}"));
            let err = parse(&text).unwrap_err();
            assert!(err.contains("segment 1: segment name"), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_duplicates_unreachable_and_typos() {
        let dup = GOOD.replace("\"rest\"", "\"major\"");
        assert!(parse(&dup).unwrap_err().contains("both named \"major\""));
        let after_catch_all = format!("{GOOD}[[segment]]\nname = \"late\"\nwhen = \"true\"\n");
        assert!(
            parse(&after_catch_all)
                .unwrap_err()
                .contains("segment 3 \"late\" can never match")
        );
        let typo = GOOD.replace("template =", "templat =");
        let err = parse(&typo).unwrap_err();
        assert!(err.contains("c.toml") && err.contains("templat"), "{err}");
        let bad_type = GOOD.replace("\"number\"", "\"money\"");
        assert!(parse(&bad_type).unwrap_err().contains("money"));
        let none = "[campaign]\nid = \"x\"\n";
        assert!(parse(none).unwrap_err().contains("no segments"));
    }
}
