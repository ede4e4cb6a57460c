//! Template rendering: turns one donor into the subject, plain-text body, optional HTML body,
//! To display name and unsubscribe URL of their message.
//!
//! This module owns reading and compiling a campaign's templates (once per run), checking them
//! against a donor file's header before anything is sent, rendering them per donor, and the
//! fingerprint that detects templates edited mid-send. It never reads donor files, never
//! decides which segment a donor is in, never builds or sends the email itself, and never
//! writes anything to disk.
//!
//! # Template layout
//!
//! Templates live in the campaign's templates folder (`[templates] dir`, default `templates`
//! next to the campaign file). A segment's `template = "major"` names a folder:
//!
//! ```text
//! templates/
//!   major/
//!     subject.txt        required: the Subject line (must render to one line)
//!     body.txt           required: the plain-text body
//!     body.html          optional: the HTML body
//!   _layouts/base.html   shared pieces: any other file in the folder
//!   _partials/footer.txt
//! ```
//!
//! Any file can use shared pieces by their path inside the templates folder, always written
//! with `/`: `{% extends "_layouts/base.html" %}`, `{% include "_partials/footer.txt" %}`.
//! Files and folders whose names start with `.` are ignored.
//!
//! The syntax is Jinja (through minijinja). Block tags on their own line leave no blank
//! line behind (`trim_blocks` and `lstrip_blocks` are on). Using a variable that does not
//! exist is an error, never a silent blank. In `.html` files every value is HTML-escaped
//! (`<` becomes `&lt;`); `subject.txt` and `.txt` files are left as written.
//!
//! # Variables
//!
//! | name | value |
//! |------|-------|
//! | every column, by its header name | `number` columns → a number (`25`, `1250.5`); `date` → `"YYYY-MM-DD"`; `bool` → true/false; an empty cell of a declared column → `""`; text → the cell without surrounding spaces |
//! | `donor` | every column by exact header name, for names that are not identifiers: `{{ donor["Last Gift"] }}` |
//! | `email` | the donor's normalised address (only if no column is named `email`; then it is that column) |
//! | `segment` | the donor's segment name |
//! | `campaign` | `campaign.id`, `campaign.name` (`name` is `""` when not set) |
//! | `today` | the run's date, `"YYYY-MM-DD"` |
//! | `unsubscribe_url` | the rendered `[message] unsubscribe_url`; using it without that setting is an error |
//!
//! A column named `donor`, `segment`, `campaign`, `today`, `unsubscribe_url` or
//! `unsubscribe_token` is hidden by the built-in; reach it with `donor["segment"]`.
//!
//! `[message] unsubscribe_url` sees the same variables plus `unsubscribe_token`.
//! `[message] to_name` sees the same variables as the bodies except `unsubscribe_url`; when
//! it renders to nothing (or only spaces) the message goes to the bare address. So do
//! `[message] list_id` and `feedback_id`, the List-Id and Feedback-ID headers' values; when
//! they render to nothing the header is left out.
//!
//! # Filters
//!
//! * `money`: `{{ total_given | money }}` → `£1,250.50`, and `£25` for whole amounts; the
//!   symbol is `[message] currency` (none when unset); `money("€")` overrides it. Works on
//!   numbers and numeric text; an empty value gives `""`.
//! * `date(format)`: `{{ last_gift_date | date("%-d %B %Y") }}` → `6 November 2026`, with
//!   strftime codes (`%d` day, `%-d` day without zero, `%B` month name, `%b` short month,
//!   `%m` month number, `%Y` year, `%A` weekday). An empty value gives `""`.
//! * `fallback(x)`: `{{ first_name | fallback("friend") }}` gives `x` when the value is empty
//!   or only spaces.
//! * All of minijinja's built-in filters remain, e.g. `upper`, `title`, `trim`, `default`,
//!   `urlencode` (which writes its `%xx` escapes in lower case: upper-case runs look like an
//!   unfilled placeholder to spam filters).
//!
//! # Checking
//!
//! `campaign check` loads every template ([`TemplateSet::load_with_problems`] reports syntax
//! errors and `extends`/`include` names that match no file) and then checks them against the
//! donor file's header without rendering anyone ([`TemplateSet::check`]): missing
//! `subject.txt`/`body.txt`, unknown variables (with the line and close column names) and
//! unknown filters, following `extends` and `include` into shared pieces.

mod check;
mod context;
mod filters;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, escape_formatter};
use sha2::{Digest, Sha256};

use crate::campaign::Campaign;
use crate::csvio::Fields;
use crate::digest::hex;
use crate::schema::{Schema, TypedRow};

use context::{Index, Mode, Row, RunValues, View};

/// Run-wide facts templates see; constant for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// `campaign.id` in templates.
    pub campaign_id: String,
    /// `campaign.name` in templates (`""` when `None`).
    pub campaign_name: Option<String>,
    /// `today` in templates.
    pub today: jiff::civil::Date,
    /// The symbol the `money` filter puts before amounts; `None` puts none.
    pub currency: Option<String>,
}

impl RunInfo {
    /// The run facts of `campaign` on `today`.
    pub fn new(campaign: &Campaign, today: jiff::civil::Date) -> RunInfo {
        RunInfo {
            campaign_id: campaign.id.as_str().to_owned(),
            campaign_name: campaign.name.clone(),
            today,
            currency: campaign.message.as_ref().and_then(|m| m.currency.clone()),
        }
    }
}

/// One donor, borrowed from the chunk row being processed.
#[derive(Debug, Clone, Copy)]
pub struct Donor<'a> {
    /// The donor file's columns.
    pub schema: &'a Schema,
    /// The row's cells.
    pub fields: &'a Fields<'a>,
    /// The row's declared columns, parsed by [`Schema::parse_row`].
    pub typed: &'a TypedRow,
    /// The donor's normalised address.
    pub email: &'a str,
    /// The segment the donor is in.
    pub segment: &'a str,
    /// The donor's unsubscribe token, for `[message] unsubscribe_url`.
    pub unsubscribe_token: &'a str,
}

/// One donor's rendered message parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The Subject line: one line, trimmed, never empty.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body, when the template has `body.html`.
    pub html: Option<String>,
    /// The To display name; `None` when `[message] to_name` is unset or renders empty.
    pub to_name: Option<String>,
    /// The unsubscribe URL; `None` when `[message] unsubscribe_url` is unset.
    pub unsubscribe_url: Option<String>,
    /// The List-Id header's value; `None` when `[message] list_id` is unset or renders empty.
    pub list_id: Option<String>,
    /// The Feedback-ID header's value; `None` when `[message] feedback_id` is unset or
    /// renders empty.
    pub feedback_id: Option<String>,
}

/// A problem found while loading or checking; Display as `path:line: message` (line omitted
/// when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The template file, or the campaign file for `[message]` templates.
    pub file: PathBuf,
    /// 1-based line in `file`, when known.
    pub line: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A donor whose message cannot be rendered (e.g. a template error at render time, a subject
/// that renders to several lines); Display names the template file and line when known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct RenderError {
    /// The template file (or campaign file and setting) where it went wrong.
    pub file: String,
    /// 1-based line in `file`, when known.
    pub line: Option<usize>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Template name of the inline `[message] to_name` (no `.html`, so never escaped).
const TO_NAME: &str = "[message] to_name";
/// Template name of the inline `[message] unsubscribe_url`.
const UNSUBSCRIBE_URL: &str = "[message] unsubscribe_url";
/// Template names of the inline `[message] list_id` and `feedback_id` (header values).
const LIST_ID: &str = "[message] list_id";
const FEEDBACK_ID: &str = "[message] feedback_id";

/// Where an inline template came from, for messages.
#[derive(Debug, Clone)]
struct Inline {
    name: &'static str,
    source: String,
    /// Line of the setting in the campaign file, found by searching its text.
    line: Option<usize>,
}

/// Every template of a campaign, compiled once. Send + Sync: shared by all worker threads.
#[derive(Debug)]
pub struct TemplateSet {
    env: Environment<'static>,
    dir: PathBuf,
    campaign_file: PathBuf,
    /// Every file under the templates folder: name (relative, `/`-separated) → source.
    files: BTreeMap<String, String>,
    to_name: Option<Inline>,
    unsubscribe_url: Option<Inline>,
    list_id: Option<Inline>,
    feedback_id: Option<Inline>,
    run: Arc<RunValues>,
    /// The lookups for the donor file's header, built on first render and reused.
    index: RwLock<Option<Arc<Index>>>,
}

impl TemplateSet {
    /// Reads every file under the templates dir and the inline templates of `[message]`
    /// (`to_name`, `unsubscribe_url`), compiling all of them.
    /// Reports every problem found, not just the first.
    pub fn load(campaign: &Campaign, run: RunInfo) -> Result<TemplateSet, Vec<Problem>> {
        let (set, problems) = TemplateSet::load_with_problems(campaign, run);
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    /// Like [`load`](Self::load), but hands back the set even when some files have problems,
    /// with those files left out, so that `campaign check` can go on to [`check`](Self::check)
    /// the rest and report everything in one go. Never render with a set whose problems are
    /// not empty: the files left out would fail every donor.
    pub fn load_with_problems(campaign: &Campaign, run: RunInfo) -> (TemplateSet, Vec<Problem>) {
        let mut problems = Vec::new();
        let dir = campaign.templates_dir.clone();
        let mut files = BTreeMap::new();
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => read_dir_into(&dir, "", &mut files, &mut problems),
            Ok(_) => problems.push(Problem {
                file: dir.clone(),
                line: None,
                message: "the templates folder is a file, not a folder; fix `dir` under [templates] in the campaign file".into(),
            }),
            Err(e) => problems.push(Problem {
                file: dir.clone(),
                line: None,
                message: format!(
                    "cannot open the templates folder ({e}); create it, or fix `dir` under [templates] in {}",
                    campaign.path.display()
                ),
            }),
        }

        let mut env = new_environment(&run);
        for (name, source) in &files {
            if let Err(e) = env.add_template_owned(name.clone(), source.clone()) {
                problems.push(Problem {
                    file: dir.join(name),
                    line: e.line(),
                    message: describe(&e),
                });
            }
        }

        // The campaign file's text is only used to point messages at the right line.
        let campaign_text = std::fs::read_to_string(&campaign.path).unwrap_or_default();
        let mut inline = |name: &'static str, key: &str, source: Option<&String>| {
            let source = source?;
            let line = setting_line(&campaign_text, key);
            if let Err(e) = env.add_template_owned(name, source.clone()) {
                problems.push(Problem {
                    file: campaign.path.clone(),
                    line,
                    message: format!("{name}: {}", describe(&e)),
                });
            }
            Some(Inline {
                name,
                source: source.clone(),
                line,
            })
        };
        let message = campaign.message.as_ref();
        let to_name = inline(TO_NAME, "to_name", message.and_then(|m| m.to_name.as_ref()));
        let unsubscribe_url = inline(
            UNSUBSCRIBE_URL,
            "unsubscribe_url",
            message.and_then(|m| m.unsubscribe_url.as_ref()),
        );
        let list_id = inline(LIST_ID, "list_id", message.and_then(|m| m.list_id.as_ref()));
        let feedback_id = inline(
            FEEDBACK_ID,
            "feedback_id",
            message.and_then(|m| m.feedback_id.as_ref()),
        );

        let set = TemplateSet {
            env,
            dir,
            campaign_file: campaign.path.clone(),
            files,
            to_name,
            unsubscribe_url,
            list_id,
            feedback_id,
            run: Arc::new(RunValues {
                campaign: Value::from_pairs([
                    ("id", run.campaign_id.clone()),
                    ("name", run.campaign_name.clone().unwrap_or_default()),
                ]),
                today: Value::from(run.today.to_string()),
            }),
            index: RwLock::new(None),
        };
        problems.extend(set.missing_references());
        (set, problems)
    }

    /// Every problem found against the donor file's header (without rendering any donor):
    /// for each template named by a segment, missing subject.txt/body.txt, and each variable a
    /// template (incl. the ones it extends/includes and the inline ones) uses that will not
    /// exist: the message names the template file, the line, the variable, and close matches
    /// from the header.
    pub fn check(
        &self,
        segments: &[crate::campaign::SegmentDef],
        header: &[String],
    ) -> Vec<Problem> {
        check::check(self, segments, header)
    }

    /// Renders one donor's message parts with the segment's template.
    pub fn render(&self, template: &str, donor: &Donor<'_>) -> Result<Rendered, RenderError> {
        let index = self.index_for(donor.schema);
        let row = Arc::new(Row::new(donor));
        let view = |mode: Mode| {
            Value::from_object(View {
                run: self.run.clone(),
                index: index.clone(),
                row: row.clone(),
                mode,
            })
        };

        let unsubscribe_url = match &self.unsubscribe_url {
            Some(inline) => {
                let url = self.render_named(
                    inline.name,
                    view(Mode::Unsubscribe(Value::from(donor.unsubscribe_token))),
                )?;
                Some(url.trim().to_owned())
            }
            None => None,
        };
        let to_name = match &self.to_name {
            Some(inline) => {
                let name = self.render_named(inline.name, view(Mode::ToName))?;
                // A display name is one line in a header: a line break or other control
                // character from a cell fails the donor, as it does in the subject, rather
                // than being quietly changed into something else.
                if let Some(c) = name.trim().chars().find(|c| c.is_control()) {
                    return Err(RenderError {
                        file: self.campaign_file.display().to_string(),
                        line: inline.line,
                        message: format!(
                            "[message] to_name renders with the control character U+{:04X} for this donor ({name:?}); a display name is one line: clean the column in the export",
                            u32::from(c)
                        ),
                    });
                }
                let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
                (!name.is_empty()).then_some(name)
            }
            None => None,
        };

        let header = |inline: &Option<Inline>| -> Result<Option<String>, RenderError> {
            let Some(inline) = inline else {
                return Ok(None);
            };
            let value = self.render_named(inline.name, view(Mode::ToName))?;
            let value = value.trim();
            Ok((!value.is_empty()).then(|| value.to_owned()))
        };
        let list_id = header(&self.list_id)?;
        let feedback_id = header(&self.feedback_id)?;

        let body = view(Mode::Body(unsubscribe_url.as_deref().map(Value::from)));
        let subject_name = format!("{template}/subject.txt");
        let subject = self.render_named(&subject_name, body.clone())?;
        let subject = subject.trim();
        if subject.contains(['\n', '\r']) {
            return Err(RenderError {
                file: self.display_name(&subject_name),
                line: None,
                message: format!(
                    "the subject renders to several lines ({subject:?}); a subject must be one line, so remove the line breaks or the block tags that leave them"
                ),
            });
        }
        if subject.is_empty() {
            return Err(RenderError {
                file: self.display_name(&subject_name),
                line: None,
                message: "the subject renders empty for this donor; give it text that does not depend only on empty columns (e.g. use `fallback`)".into(),
            });
        }
        let subject = subject.to_owned();
        let text = self.render_named(&format!("{template}/body.txt"), body.clone())?;
        let html_name = format!("{template}/body.html");
        let html = if self.files.contains_key(&html_name) {
            Some(self.render_named(&html_name, body)?)
        } else {
            None
        };
        Ok(Rendered {
            subject,
            text,
            html,
            to_name,
            unsubscribe_url,
            list_id,
            feedback_id,
        })
    }

    /// SHA-256 (hex) over every template file's name and contents and the inline templates,
    /// so a change after sending started can be detected.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        for (name, source) in &self.files {
            part(b"file");
            part(name.as_bytes());
            part(source.as_bytes());
        }
        for inline in self.inlines() {
            part(b"inline");
            part(inline.name.as_bytes());
            part(inline.source.as_bytes());
        }
        hex(&hash.finalize())
    }

    /// The names of the template folders found (those with a `subject.txt` or `body.txt`).
    pub fn template_names(&self) -> Vec<&str> {
        let names: std::collections::BTreeSet<&str> = self
            .files
            .keys()
            .filter_map(|n| {
                n.strip_suffix("/subject.txt")
                    .or_else(|| n.strip_suffix("/body.txt"))
            })
            .filter(|n| !n.contains('/'))
            .collect();
        names.into_iter().collect()
    }

    /// Whether templates can use the filter `name`: asks the engine itself, so the answer
    /// always matches minijinja's list of built-ins.
    fn filter_exists(&self, name: &str) -> bool {
        let probe = format!("{{{{ none | {name} }}}}");
        match self.env.template_from_str(&probe) {
            Ok(t) => !matches!(t.render(()), Err(e) if e.kind() == ErrorKind::UnknownFilter),
            Err(_) => false,
        }
    }

    /// Filter names offered as suggestions for a misspelt filter.
    fn filter_names(&self) -> Vec<String> {
        const COMMON: [&str; 30] = [
            "money",
            "date",
            "fallback",
            "upper",
            "lower",
            "title",
            "capitalize",
            "trim",
            "default",
            "d",
            "urlencode",
            "replace",
            "length",
            "join",
            "first",
            "last",
            "round",
            "int",
            "float",
            "abs",
            "safe",
            "escape",
            "e",
            "indent",
            "wordcount",
            "truncate",
            "striptags",
            "format",
            "list",
            "string",
        ];
        COMMON
            .iter()
            .filter(|f| self.filter_exists(f))
            .map(|f| (*f).to_owned())
            .collect()
    }

    /// The inline templates of `[message]` that are set.
    fn inlines(&self) -> impl Iterator<Item = &Inline> {
        [
            &self.to_name,
            &self.unsubscribe_url,
            &self.list_id,
            &self.feedback_id,
        ]
        .into_iter()
        .flatten()
    }

    /// Whether `name` is an inline template (a `[message]` setting, not a file).
    fn is_inline(&self, name: &str) -> bool {
        self.inlines().any(|i| i.name == name)
    }

    /// The source of a template file or inline template.
    fn source(&self, name: &str) -> Option<&str> {
        if let Some(s) = self.files.get(name) {
            return Some(s);
        }
        self.inlines()
            .find(|i| i.name == name)
            .map(|i| i.source.as_str())
    }

    /// The lookups for `schema`, reused across renders: building them costs more than a render.
    fn index_for(&self, schema: &Schema) -> Arc<Index> {
        // A poisoned lock only means another thread panicked mid-update of a cache; the
        // value is still either absent or complete.
        let cached = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(index) = cached
            && index.matches(schema)
        {
            return index;
        }
        let index = Arc::new(Index::new(schema));
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Some(index.clone());
        index
    }

    fn render_named(&self, name: &str, ctx: Value) -> Result<String, RenderError> {
        let template = self.env.get_template(name).map_err(|_| RenderError {
            file: self.display_name(name),
            line: None,
            message: if self.files.contains_key(name) {
                "this template has errors and was not loaded; run `campaign check` to see them"
            } else {
                "this template file does not exist; every template folder needs subject.txt and body.txt (run `campaign check` to list what is missing)"
            }
            .into(),
        })?;
        template.render(ctx).map_err(|e| {
            let name = e.name().unwrap_or(name);
            if self.is_inline(name) {
                // An inline template is one setting: its own line 1 means nothing to the
                // reader, the setting's line in the campaign file does.
                RenderError {
                    file: self.campaign_file.display().to_string(),
                    line: self.inline_line(name),
                    message: format!("{name}: {}", describe(&e)),
                }
            } else {
                RenderError {
                    file: self.dir.join(name).display().to_string(),
                    line: e.line(),
                    message: describe(&e),
                }
            }
        })
    }

    /// How a template file's name is shown to the marketer: its path.
    fn display_name(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn inline_line(&self, name: &str) -> Option<usize> {
        self.inlines().find(|i| i.name == name).and_then(|i| i.line)
    }

    /// Every `extends`/`include`/`import` of a file that names no file: caught at load so a
    /// typo in a layout name never reaches a donor.
    fn missing_references(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let sources = self
            .files
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str(), self.dir.join(n), None))
            .chain(self.inlines().map(|i| {
                (
                    i.name,
                    i.source.as_str(),
                    self.campaign_file.clone(),
                    i.line,
                )
            }));
        for (_, source, file, inline_line) in sources {
            for r in check::references(source) {
                if !self.files.contains_key(&r.target) {
                    let close =
                        check::close_matches(&r.target, self.files.keys().map(String::as_str));
                    problems.push(Problem {
                        file: file.clone(),
                        line: inline_line.or(Some(r.line)),
                        message: format!(
                            "{} \"{}\": there is no such file in {}{}; names are paths inside the templates folder, written with '/'",
                            r.keyword,
                            r.target,
                            self.dir.display(),
                            check::did_you_mean(&close)
                        ),
                    });
                }
            }
        }
        problems
    }
}

fn new_environment(run: &RunInfo) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Debug mode names the missing variable in errors (`nope` is undefined). It costs only
    // when an error is raised; measured render speed is the same either way.
    env.set_debug(true);
    // The default delimiters always build; were that to change, the default syntax stays.
    if let Ok(syntax) = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    // Like Python's Jinja (MarkupSafe), and unlike minijinja's default, `/` is not escaped:
    // `https:&#x2f;&#x2f;` in an href is valid but breaks naive link checkers and trackers.
    env.set_formatter(|out, state, value| {
        let escape = state.auto_escape();
        if *escape != AutoEscape::Html || value.is_safe() {
            // Text as it is, which is what the default formatter writes for it, without going
            // through `fmt` (most values are text).
            return match value.as_str() {
                Some(s) if *escape == AutoEscape::None || value.is_safe() => {
                    out.write_str(s).map_err(minijinja::Error::from)
                }
                _ => escape_formatter(out, state, value),
            };
        }
        match value.as_str() {
            Some(s) => write_html_escaped(out, s),
            None => write_html_escaped(out, &value.to_string()),
        }
        .map_err(minijinja::Error::from)
    });
    let currency = run.currency.clone().unwrap_or_default();
    env.add_filter("money", move |value: &Value, symbol: Option<&str>| {
        filters::money(&currency, value, symbol)
    });
    env.add_filter("date", filters::date);
    env.add_filter("fallback", filters::fallback);
    env.add_filter("urlencode", filters::urlencode);
    env
}

/// Writes `s` with `&`, `<`, `>`, `"` and `'` escaped.
fn write_html_escaped(out: &mut minijinja::Output, s: &str) -> fmt::Result {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\''))
    {
        return out.write_str(s);
    }
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&#34;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.write_str(&s[last..i])?;
        out.write_str(entity)?;
        last = i + 1;
    }
    out.write_str(&s[last..])
}

/// A minijinja error as a sentence for a marketer, without the template name and line (the
/// caller puts those first).
fn describe(e: &minijinja::Error) -> String {
    let detail = e.detail().unwrap_or("");
    match e.kind() {
        ErrorKind::SyntaxError => format!("template syntax error: {detail}"),
        ErrorKind::UndefinedError => {
            let what = if detail.is_empty() {
                "a variable that does not exist".to_owned()
            } else {
                detail.to_owned()
            };
            if what.contains('.') {
                format!("{what}: there is no such attribute")
            } else {
                format!(
                    "{what}: no column or built-in variable has that name (run `campaign check` to see close matches)"
                )
            }
        }
        ErrorKind::UnknownFilter => {
            format!("{detail}; the filters are money, date, fallback and minijinja's built-ins")
        }
        ErrorKind::TemplateNotFound => {
            format!("{detail}; names are paths inside the templates folder, written with '/'")
        }
        ErrorKind::InvalidOperation if !detail.is_empty() => detail.to_owned(),
        kind if detail.is_empty() => kind.to_string(),
        kind => format!("{kind}: {detail}"),
    }
}

/// The 1-based line of `key = ...` in the campaign file's text.
fn setting_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Reads every file under `dir` (recursively) into `files`, keyed by `/`-separated relative name.
fn read_dir_into(
    dir: &Path,
    prefix: &str,
    files: &mut BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(Problem {
                file: dir.to_owned(),
                line: None,
                message: format!("cannot read this folder: {e}"),
            });
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            problems.push(Problem {
                file: path,
                line: None,
                message: "this name is not valid UTF-8; rename it with plain letters, digits, '_', '-' and '.'".into(),
            });
            continue;
        };
        // Editor swap files, .DS_Store and version-control folders are not templates.
        if file_name.starts_with('.') {
            continue;
        }
        let name = format!("{prefix}{file_name}");
        // metadata() follows symlinks, so a linked shared folder works like a real one.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => read_dir_into(&path, &format!("{name}/"), files, problems),
            Ok(_) => match std::fs::read(&path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(mut text) => {
                        // Windows editors may add a BOM, which would otherwise lead the subject.
                        if text.starts_with('\u{feff}') {
                            text.drain(..'\u{feff}'.len_utf8());
                        }
                        files.insert(name, text);
                    }
                    Err(_) => problems.push(Problem {
                        file: path,
                        line: None,
                        message: "this file is not UTF-8 text; save it as UTF-8 in your editor"
                            .into(),
                    }),
                },
                Err(e) => problems.push(Problem {
                    file: path,
                    line: None,
                    message: format!("cannot read this file: {e}"),
                }),
            },
            Err(e) => problems.push(Problem {
                file: path,
                line: None,
                message: format!("cannot read this file: {e}"),
            }),
        }
    }
}
