//! The segment rule language: compiling a `when = "…"` rule against the donor file's columns,
//! deciding whether a row matches, and explaining why.
//!
//! This module owns the rule syntax, its type checking and its evaluation, and compiling a
//! campaign's rules together with their errors worded for the campaign file
//! ([`compile_rules`]). It never reads files, never parses cells (see [`crate::schema`]) and
//! never decides which segment a row goes to.
//!
//! # The rule language
//!
//! A rule is a condition about one donor row, for example
//!
//! ```text
//! total_given >= 1000 and last_gift_date >= today - 365d
//! country in ["UK", "IE"] and not email ends with "@example.org"
//! ```
//!
//! Tip: in the campaign file, write rules in single quotes so double quotes need no escaping:
//! `when = 'country = "UK"'`.
//!
//! ## Values
//!
//! | kind   | written as                                                                 |
//! |--------|----------------------------------------------------------------------------|
//! | number | `1000`, `12.5`, `-3`                                                       |
//! | text   | `"UK"` or `'UK'`; `\"`, `\'` and `\\` are escapes, other backslashes stay as they are (so `"^\d+$"` works) |
//! | date   | `2025-01-31` (no quotes), or `today` (the `--as-of` date, otherwise the current date) |
//! | bool   | `true`, `false`                                                            |
//!
//! **Columns** are written by their header name: `total_given`. Names with anything other
//! than letters, digits and `_` (spaces, dashes, accents), or names that are keywords, go in
//! backticks: `` `Last Gift` ``. Column names must match the header exactly, including case.
//! A column is text unless `[columns]` in the campaign file declares it `number`, `date` or
//! `bool`. Text cells are compared with leading and trailing spaces removed.
//!
//! Keywords (`and`, `or`, `not`, `in`, `contains`, `starts with`, `ends with`, `matches`,
//! `is empty`, `true`, `false`, `today`) can be written in any case: `AND` works.
//!
//! ## Conditions
//!
//! | write                       | meaning                                                      |
//! |-----------------------------|--------------------------------------------------------------|
//! | `a = b`, `a == b`           | equal                                                        |
//! | `a != b`, `a <> b`          | not equal                                                    |
//! | `a < b`, `<=`, `>`, `>=`    | less / greater; numbers by value, dates by calendar, text by raw character order (case matters) |
//! | `a in [x, y, z]`            | equal to one of the listed fixed values (all of one type)    |
//! | `a not in [x, y]`           | equal to none of them                                        |
//! | `a contains "x"`            | text contains `x`                                            |
//! | `a starts with "x"`         | text starts with `x`                                         |
//! | `a ends with "x"`           | text ends with `x`                                           |
//! | `a matches "regex"`         | text matches the regular expression (Rust `regex` syntax; it may match anywhere, use `^…$` for the whole text) |
//! | `a is empty`, `a is not empty` | the cell is empty (works for every type)                  |
//! | `gift_aid`                  | a bool column on its own is a condition: true when the cell is true |
//! | `not c`, `c and d`, `c or d`, `( … )` | combine conditions                                 |
//!
//! `not` can also be put before a test: `email not contains "@"`, `name not matches "^[A-Z]"`.
//!
//! Precedence, tightest first: comparisons and tests, then `not`, then `and`, then `or`. So
//! `not country = "UK"` means "country is not UK", and `a or b and c` means `a or (b and c)`.
//! Use parentheses when in doubt. Comparisons cannot be chained (`1 < a < 5`); write
//! `a > 1 and a < 5`.
//!
//! **Letter case.** Text `=`, `!=`, `in`, `contains`, `starts with` and `ends with` ignore
//! letter case, for accented letters too: `country = "uk"` matches `UK`, and
//! `"ÉCOLE" = "école"`. `<`, `>`, `<=`, `>=` on text compare exactly. `matches` is
//! case-sensitive unless the pattern starts with `(?i)`.
//!
//! ## Dates
//!
//! Add or subtract an amount of time from a date with a number and a unit: `d` days, `w`
//! weeks, `m` months, `y` years (`day(s)`, `week(s)`, `month(s)`, `year(s)` also work, and a
//! space is allowed: `365 d`). Examples: `today - 365d`, `last_gift_date + 6m`,
//! `first_gift_date <= today - 2y`. Month and year steps that land on a day the month does not
//! have stop at the month's last day: 2025-03-31 - 1m is 2025-02-28. Amounts are whole numbers.
//! Only dates can be added to; there is no other arithmetic.
//!
//! ## Functions
//!
//! | function         | gives                                                           |
//! |------------------|-----------------------------------------------------------------|
//! | `lower(text)`    | the text in lower case                                          |
//! | `upper(text)`    | the text in upper case                                          |
//! | `length(text)`   | number of characters                                            |
//! | `days_since(date)` | number of days from the date to `today` (negative for future dates) |
//! | `year(date)`     | the year as a number                                            |
//!
//! ## Empty cells
//!
//! An empty cell of a `number`, `date` or `bool` column is *missing*. A missing value is never
//! equal to, less than or greater than anything: `=`, `<`, `<=`, `>`, `>=`, `in` and the text
//! tests are false, while `!=` and `not in` are true. `is empty` is true. A function of a
//! missing value is missing. A missing bool is not true, so `gift_aid` is false and
//! `not gift_aid` is true for it. An empty cell of a text column is just empty text `""`:
//! `country = ""` and `country is empty` both match it.
//!
//! ## Checked before any row is read
//!
//! Unknown columns (with suggestions), unknown functions, comparing values of different types
//! (a number column with `"abc"`), bad regular expressions and syntax errors are all reported
//! when the campaign is loaded, pointing at the exact place in the rule.

mod check;
mod compile;
mod eval;
mod lexer;
mod parse;

use std::fmt;
use std::ops::Range;

use jiff::civil::Date;

use crate::csvio::Fields;
use crate::schema::{Schema, TypedRow};
pub use compile::{compile_rules, rule_problem};
use eval::{Fast, Node, Operand, Row, Tracer, Val};

/// A compiled segment rule.
#[derive(Debug, Clone)]
pub struct Rule {
    source: String,
    root: Node,
    /// `root` as `matches` evaluates it; `explain` walks `root` itself.
    fast: Fast,
}

/// Reusable working space for [`Rule::matches`], so that evaluating non-ASCII text or
/// case-insensitive searches does not allocate for every row. Keep one per thread.
#[derive(Default, Debug)]
pub struct Scratch {
    buf: String,
}

impl Rule {
    /// Two stages inside: parse (syntax only) then resolve columns/types against the schema.
    ///
    /// `today` is what the keyword `today` means; expressions that do not depend on the row,
    /// such as `today - 365d`, are computed here once.
    pub fn compile(source: &str, schema: &Schema, today: Date) -> Result<Rule, RuleError> {
        let tokens = lexer::lex(source)?;
        let ast = parse::parse(&tokens, source)?;
        let root = check::check(&ast, source, schema, today)?;
        Ok(Rule {
            source: source.to_owned(),
            fast: Fast::new(&root),
            root,
        })
    }

    /// The syntax stage alone, for checking a campaign file without a donor export: column
    /// names and types are not checked.
    pub fn check_syntax(source: &str) -> Result<(), RuleError> {
        let tokens = lexer::lex(source)?;
        parse::parse(&tokens, source)?;
        Ok(())
    }

    /// Hot path. No heap allocation per call in the common case (ASCII data). `scratch` is reusable space for
    /// e.g. Unicode case folding of non-ASCII text.
    ///
    /// `typed` must have been filled by [`Schema::parse_row`] for this row, with the schema the
    /// rule was compiled against.
    pub fn matches(&self, fields: &Fields<'_>, typed: &TypedRow, scratch: &mut Scratch) -> bool {
        let row = Row {
            fields: *fields,
            typed,
        };
        self.fast.matches(&row, scratch)
    }

    /// Human explanation for `campaign segment --explain EMAIL`: the overall result and every
    /// comparison or test with the actual row values.
    ///
    /// Unlike [`Rule::matches`], every part of an `and`/`or` is evaluated and listed, even when
    /// an earlier part already decided the result, so the reader sees every value.
    pub fn explain(&self, fields: &Fields<'_>, typed: &TypedRow) -> Explanation {
        let row = Row {
            fields: *fields,
            typed,
        };
        let mut tracer = Explainer {
            src: &self.source,
            depth: 0,
            lines: Vec::new(),
        };
        let matched = eval::eval(&self.root, &row, &mut Scratch::default(), &mut tracer);
        Explanation {
            matched,
            lines: tracer.lines,
        }
    }

    /// The rule as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Why a rule did or did not match one row; `Display` prints it as indented lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Whether the rule matched the row.
    pub matched: bool,
    /// `(depth, text)` for every group and test, in rule order.
    lines: Vec<(usize, String)>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.matched {
            "rule matched"
        } else {
            "rule did not match"
        })?;
        for (depth, line) in &self.lines {
            write!(f, "\n{:width$}{line}", "", width = 2 * (depth + 1))?;
        }
        Ok(())
    }
}

/// Records evaluation as explanation lines.
struct Explainer<'s> {
    src: &'s str,
    depth: usize,
    lines: Vec<(usize, String)>,
}

impl Tracer for Explainer<'_> {
    const ON: bool = true;

    fn open(&mut self, node: &Node) -> usize {
        let label = match node.cond {
            eval::Cond::And(_) => "all of these must be true",
            eval::Cond::Or(_) => "at least one of these must be true",
            _ => "not (true when the following is false)",
        };
        self.lines.push((self.depth, label.to_owned()));
        self.depth += 1;
        self.lines.len() - 1
    }

    fn close(&mut self, handle: usize, result: bool) {
        self.depth = self.depth.saturating_sub(1);
        if let Some((_, line)) = self.lines.get_mut(handle) {
            line.push_str(&format!(" -> {result}"));
        }
    }

    fn leaf(&mut self, node: &Node, values: &[(&Operand, Val<'_>)], result: bool) {
        let quoted = self.src.get(node.span.clone()).unwrap_or_default();
        let shown: Vec<String> = values
            .iter()
            .filter(|(o, _)| o.shown)
            .map(|(o, v)| {
                format!(
                    "{} is {}",
                    self.src.get(o.span.clone()).unwrap_or_default(),
                    show(*v)
                )
            })
            .collect();
        let line = if shown.is_empty() {
            format!("`{quoted}` -> {result}")
        } else {
            format!("`{quoted}`: {} -> {result}", shown.join(", "))
        };
        self.lines.push((self.depth, line));
    }
}

fn show(v: Val<'_>) -> String {
    match v {
        Val::Missing => "empty".to_owned(),
        Val::Text(s, case) => format!("\"{}\"", eval::materialize(s, case, &mut String::new())),
        Val::Num(n) => n.to_string(),
        Val::Date(d) => d.to_string(),
        Val::Bool(b) => b.to_string(),
    }
}

/// A rule that does not compile. `span` is a byte range into the rule source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Byte range of the offending part of the rule source (empty at the end for "ran out").
    pub span: Range<usize>,
    /// What is wrong, in plain words.
    pub message: String,
    /// How to fix it, when there is a likely fix.
    pub help: Option<String>,
}

impl RuleError {
    /// Start of the span, moved to a character boundary inside `source`.
    fn start(&self, source: &str) -> usize {
        let mut start = self.span.start.min(source.len());
        while !source.is_char_boundary(start) {
            start -= 1;
        }
        start
    }

    /// 1-based column (in chars) of the span start, within its line.
    pub fn column(&self, source: &str) -> usize {
        let start = self.start(source);
        let line_start = source[..start].rfind('\n').map_or(0, |n| n + 1);
        source[line_start..start].chars().count() + 1
    }

    /// Multi-line rendering: the source line, a caret line (`^` under the span, at least one ^, in chars not bytes), the message, then `help: ...` if any.
    pub fn render(&self, source: &str) -> String {
        let start = self.start(source);
        let line_start = source[..start].rfind('\n').map_or(0, |n| n + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |n| start + n);
        let mut end = self.span.end.clamp(start, line_end);
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        let line = source[line_start..line_end].trim_end_matches('\r');
        // Tabs are copied so the carets line up however the terminal shows them.
        let pad: String = source[line_start..start]
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = "^".repeat(source[start..end].chars().count().max(1));
        let mut out = format!("{line}\n{pad}{carets}\n{}", self.message);
        if let Some(help) = &self.help {
            out.push_str("\nhelp: ");
            out.push_str(help);
        }
        out
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleError {}

#[cfg(test)]
mod tests;
