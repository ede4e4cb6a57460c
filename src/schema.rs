//! Column schema of a donor file: which header columns exist, which of them the campaign file
//! declares as `number`, `date` or `bool`, and how one row's cells parse into typed values.
//!
//! This module owns header validation (empty or duplicate names, declared columns that the
//! export lacks), column-name suggestions for typos, and cell parsing. It never reads files,
//! never decides what to do with a rejected row, and never evaluates rules.
//!
//! # How cells are read
//!
//! Columns not listed under `[columns]` in the campaign file are text and are never parsed.
//! Declared columns are parsed once per row, before any rule looks at them:
//!
//! * Leading and trailing spaces (and tabs) are ignored.
//! * An empty or all-space cell is *missing*, whatever the declared type. It is not an error and
//!   it is never treated as 0, `false` or a date.
//! * `number`: an optional `+` or `-`, digits, and optionally one `.` with more digits:
//!   `1000`, `-3.5`, `1000.50`, `.5` and `5.` are all accepted. Thousands separators (`1,000`),
//!   currency signs (`£10`), exponents (`1e3`), `NaN` and `inf` are rejected.
//! * `date`: `YYYY-MM-DD` only (`2025-01-31`), and it must be a real calendar day:
//!   `2026-02-30` is rejected. No other formats are guessed, so `01/02/2025` can never be read
//!   as the wrong month.
//! * `bool`: `true`/`false`, `yes`/`no`, `y`/`n`, `1`/`0`, in any letter case.
//!
//! A cell that does not parse rejects the whole row with a [`ValueError`] explaining why.

use std::fmt;

use jiff::civil::Date;

use crate::csvio::Fields;

/// Declared type of a column. Undeclared columns are Text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Free text; never parsed.
    Text,
    /// A decimal number such as `1000` or `-3.5`.
    Number,
    /// A calendar date written `YYYY-MM-DD`.
    Date,
    /// A yes/no flag.
    Bool,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Text => "text",
            ColumnType::Number => "number",
            ColumnType::Date => "date",
            ColumnType::Bool => "bool",
        })
    }
}

/// A parsed typed value of a declared column in one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Typed {
    /// The column is text: read the raw field instead.
    Text,
    /// The cell was empty (or only spaces).
    Missing,
    /// A parsed `number` cell.
    Number(f64),
    /// A parsed `date` cell.
    Date(Date),
    /// A parsed `bool` cell.
    Bool(bool),
}

/// Reusable per-row buffer of typed values, one slot per header column (Text for text columns).
#[derive(Default, Debug)]
pub struct TypedRow {
    values: Vec<Typed>,
}

impl TypedRow {
    /// The typed value of column `i` from the last [`Schema::parse_row`].
    ///
    /// # Panics
    ///
    /// Panics if `i` is not a column of the schema that filled this row (programmer error).
    pub fn get(&self, i: usize) -> Typed {
        self.values[i]
    }

    /// Like `get`, but a row that was never filled reads as missing instead of panicking, so
    /// rule evaluation cannot crash a run.
    pub(crate) fn slot(&self, i: usize) -> Typed {
        self.values.get(i).copied().unwrap_or(Typed::Missing)
    }
}

/// One column of the donor file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Header name exactly as in the file.
    pub name: String,
    /// 0-based position in the header.
    pub index: usize,
    /// Declared type, `Text` unless `[columns]` says otherwise.
    pub ty: ColumnType,
}

/// The columns of a donor file and their declared types.
#[derive(Clone, Debug)]
pub struct Schema {
    columns: Vec<Column>,
    /// `(index, type)` of every column that needs parsing, so `parse_row` skips text columns.
    parsed: Vec<(usize, ColumnType)>,
}

impl Schema {
    /// header: CSV header names (BOM already stripped); declared: (column name, type) from the campaign file, in file order.
    ///
    /// Header names are matched exactly (case and spaces matter). Declaring a column as
    /// `text` is allowed and changes nothing. If a column is declared twice, the last wins.
    pub fn new(
        header: &[String],
        declared: &[(String, ColumnType)],
    ) -> Result<Schema, SchemaError> {
        let mut columns: Vec<Column> = Vec::with_capacity(header.len());
        for (index, name) in header.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(SchemaError::EmptyHeader {
                    position: index + 1,
                });
            }
            if let Some(first) = columns.iter().find(|c| c.name == *name) {
                return Err(SchemaError::DuplicateHeader {
                    name: name.clone(),
                    first: first.index + 1,
                    second: index + 1,
                });
            }
            columns.push(Column {
                name: name.clone(),
                index,
                ty: ColumnType::Text,
            });
        }
        let mut schema = Schema {
            columns,
            parsed: Vec::new(),
        };
        for (name, ty) in declared {
            match schema.columns.iter_mut().find(|c| c.name == *name) {
                Some(column) => column.ty = *ty,
                None => {
                    let suggestions = schema
                        .suggest(name)
                        .into_iter()
                        .map(str::to_owned)
                        .collect();
                    return Err(SchemaError::DeclaredColumnMissing {
                        name: name.clone(),
                        suggestions,
                    });
                }
            }
        }
        schema.parsed = schema
            .columns
            .iter()
            .filter(|c| c.ty != ColumnType::Text)
            .map(|c| (c.index, c.ty))
            .collect();
        Ok(schema)
    }

    /// Number of header columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the header has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The column with exactly this header name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// All columns in header order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Up to 3 header names close to `name` (strsim, case-insensitive; include case-only differences), best first.
    pub fn suggest(&self, name: &str) -> Vec<&str> {
        let wanted = name.to_lowercase();
        let mut scored: Vec<(f64, &str)> = self
            .columns
            .iter()
            .filter_map(|c| {
                let have = c.name.to_lowercase();
                // A case-only difference is the most likely typo of all, so it ranks first.
                let score = if have == wanted {
                    2.0
                } else {
                    strsim::jaro_winkler(&wanted, &have)
                };
                (score >= 0.8).then_some((score, c.name.as_str()))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(3).map(|(_, n)| n).collect()
    }

    /// Parse every declared (non-text) column of the row into `out` (resized to len()). Fast, no allocation.
    ///
    /// A row shorter than the header reads its absent cells as missing. The first cell that
    /// does not parse stops parsing and is returned; `out` is then partly filled and must not
    /// be used for that row.
    pub fn parse_row(&self, fields: &Fields<'_>, out: &mut TypedRow) -> Result<(), ValueError> {
        if out.values.len() != self.columns.len() {
            out.values.clear();
            out.values.resize(self.columns.len(), Typed::Text);
        }
        for &(index, ty) in &self.parsed {
            let raw = fields.get_or_empty(index);
            out.values[index] = match parse_value(raw, ty) {
                Ok(v) => v,
                Err(hint) => {
                    return Err(ValueError {
                        column: self.columns[index].name.clone(),
                        value: shorten(raw.trim_ascii()),
                        expected: ty,
                        hint,
                    });
                }
            };
        }
        Ok(())
    }
}

/// Keeps rejection reasons readable when a cell holds a whole paragraph.
fn shorten(value: &str) -> String {
    const MAX: usize = 60;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

const NUMBER_HINT: &str = "write plain numbers like 1000 or 1000.50";
const DATE_HINT: &str = "write dates as YYYY-MM-DD, like 2025-01-31";
const CALENDAR_HINT: &str = "that day does not exist in the calendar: check the day and month";
const BOOL_HINT: &str = "write true/false, yes/no, y/n or 1/0";

/// Parses one cell as `ty`; the error is the hint telling the marketer how to fix the cell.
fn parse_value(raw: &str, ty: ColumnType) -> Result<Typed, &'static str> {
    let s = raw.trim_ascii();
    if s.is_empty() {
        return Ok(Typed::Missing);
    }
    match ty {
        ColumnType::Text => Ok(Typed::Text),
        ColumnType::Number => parse_number(s).map(Typed::Number).ok_or(NUMBER_HINT),
        ColumnType::Date => parse_date(s).map(Typed::Date),
        ColumnType::Bool => parse_bool(s).map(Typed::Bool).ok_or(BOOL_HINT),
    }
}

/// `[+-]? digits [. digits]` with at least one digit. Validated by hand first because Rust's
/// float parser also accepts `1e3`, `inf` and `NaN`, which are never intended in an export.
///
/// Amounts of up to 15 significant digits (every real one) are computed here, in the same
/// pass: the digits as an integer are exact in an `f64`, and so is a power of ten up to
/// 10^22, so one IEEE division rounds correctly, giving exactly what `str::parse` gives
/// (the fast path of Clinger's algorithm, which `str::parse` also takes, after more checks).
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let b = s.as_bytes();
    let (negative, body) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut digits = 0usize;
    let mut mantissa = 0u64;
    let mut dot = None;
    for (i, &c) in body.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            }
            b'.' if dot.is_none() => dot = Some(i),
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    let frac = dot.map_or(0, |d| body.len() - d - 1);
    if digits <= 15 && frac < POW10.len() {
        let n = match frac {
            0 => mantissa as f64,
            _ => mantissa as f64 / POW10[frac],
        };
        return Some(if negative { -n } else { n });
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Exactly `YYYY-MM-DD`, read byte by byte because this runs for every row.
pub(crate) fn parse_date(s: &str) -> Result<Date, &'static str> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(DATE_HINT);
    }
    let num = |range: std::ops::Range<usize>| -> Result<i16, &'static str> {
        b[range].iter().try_fold(0i16, |acc, &c| {
            if c.is_ascii_digit() {
                Ok(acc * 10 + i16::from(c - b'0'))
            } else {
                Err(DATE_HINT)
            }
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let month = i8::try_from(month).map_err(|_| CALENDAR_HINT)?;
    let day = i8::try_from(day).map_err(|_| CALENDAR_HINT)?;
    Date::new(year, month, day).map_err(|_| CALENDAR_HINT)
}

fn parse_bool(s: &str) -> Option<bool> {
    let is = |w: &str| s.eq_ignore_ascii_case(w);
    // Each accepted word's first letter says which words it can be, so this runs per row
    // without trying all eight.
    match s.as_bytes().first()?.to_ascii_lowercase() {
        b't' => is("true").then_some(true),
        b'y' => (is("yes") || is("y")).then_some(true),
        b'1' => is("1").then_some(true),
        b'f' => is("false").then_some(false),
        b'n' => (is("no") || is("n")).then_some(false),
        b'0' => is("0").then_some(false),
        _ => None,
    }
}

/// Why the donor file's header cannot be used with this campaign.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// `[columns]` declares a column the donor file does not have.
    #[error(
        "the campaign file declares column \"{name}\" under [columns], but the donor file has no such column{}; fix the name in [columns] in the campaign file, or fix the export",
        did_you_mean(suggestions)
    )]
    DeclaredColumnMissing {
        /// The declared name.
        name: String,
        /// Close header names, best first.
        suggestions: Vec<String>,
    },
    /// Two header columns have the same name, so rules could not tell them apart.
    #[error(
        "the donor file has two columns named \"{name}\" (columns {first} and {second}); rename one of them in the export"
    )]
    DuplicateHeader {
        /// The repeated name.
        name: String,
        /// 1-based position of the first occurrence.
        first: usize,
        /// 1-based position of the second occurrence.
        second: usize,
    },
    /// A header cell is blank.
    #[error(
        "column {position} of the donor file has no name in the header row; give it a name in the export, or remove the column"
    )]
    EmptyHeader {
        /// 1-based position of the blank header cell.
        position: usize,
    },
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = suggestions.iter().map(|s| format!("\"{s}\"")).collect();
    format!(" (did you mean {}?)", quoted.join(" or "))
}

/// Why a row's value does not parse as its declared type; the row is rejected with this reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("column \"{column}\" is declared {expected} but holds \"{value}\": {hint}")]
pub struct ValueError {
    /// Header name of the offending column.
    pub column: String,
    /// The cell, trimmed (and shortened if very long).
    pub value: String,
    /// The type declared in `[columns]`.
    pub expected: ColumnType,
    /// How to fix the cell.
    pub hint: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<String> {
        [
            "email",
            "first_name",
            "total_given",
            "last_gift_date",
            "country",
            "gift_aid",
            "Last Gift",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn declared() -> Vec<(String, ColumnType)> {
        vec![
            ("total_given".into(), ColumnType::Number),
            ("last_gift_date".into(), ColumnType::Date),
            ("gift_aid".into(), ColumnType::Bool),
        ]
    }

    fn row(cells: &[&str]) -> (String, Vec<usize>) {
        let mut data = String::new();
        let mut ends = Vec::new();
        for c in cells {
            data.push_str(c);
            ends.push(data.len());
        }
        (data, ends)
    }

    fn parse(cells: &[&str]) -> Result<TypedRow, ValueError> {
        let schema = Schema::new(&header(), &declared()).unwrap();
        let (data, ends) = row(cells);
        let mut out = TypedRow::default();
        schema.parse_row(&Fields::new(&data, &ends), &mut out)?;
        Ok(out)
    }

    #[test]
    fn column_type_display_and_serde_names() {
        let names: Vec<String> = [
            ColumnType::Text,
            ColumnType::Number,
            ColumnType::Date,
            ColumnType::Bool,
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        assert_eq!(names, ["text", "number", "date", "bool"]);
    }

    #[test]
    fn declared_types_are_applied() {
        let schema = Schema::new(&header(), &declared()).unwrap();
        assert_eq!(schema.len(), 7);
        assert_eq!(schema.column("total_given").unwrap().ty, ColumnType::Number);
        assert_eq!(schema.column("email").unwrap().ty, ColumnType::Text);
        assert_eq!(schema.column("Last Gift").unwrap().index, 6);
        assert!(schema.column("Email").is_none(), "lookup is exact");
        assert_eq!(schema.columns()[3].name, "last_gift_date");
    }

    #[test]
    fn parses_valid_values() {
        let row = parse(&["a@b", "Ann", " 1000.50 ", "2026-02-28", "UK", "Yes", "x"]).unwrap();
        assert_eq!(row.get(0), Typed::Text);
        assert_eq!(row.get(2), Typed::Number(1000.5));
        assert_eq!(row.get(3), Typed::Date(Date::constant(2026, 2, 28)));
        assert_eq!(row.get(5), Typed::Bool(true));
    }

    #[test]
    fn numbers() {
        for (s, n) in [
            ("1000", 1000.0),
            ("-3.5", -3.5),
            ("+2", 2.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("007", 7.0),
        ] {
            assert_eq!(parse_number(s), Some(n), "{s}");
        }
        for s in [
            "1e3", "1,000", "£10", "NaN", "inf", "-", ".", "1.2.3", "10 000", "0x10", "--1",
        ] {
            assert_eq!(parse_number(s), None, "{s}");
        }
        assert_eq!(
            parse_number(&"9".repeat(400)),
            None,
            "overflow to infinity is rejected"
        );
    }

    /// The shortcut for short amounts must give bit for bit what the standard parser gives.
    #[test]
    fn numbers_match_the_standard_parser_bit_for_bit() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..200_000 {
            let mut s = String::new();
            match next(4) {
                0 => s.push('-'),
                1 => s.push('+'),
                _ => {}
            }
            let int_digits = next(18);
            for _ in 0..int_digits {
                s.push(char::from(b'0' + next(10) as u8));
            }
            if next(3) > 0 {
                s.push('.');
                for _ in 0..next(25) {
                    s.push(char::from(b'0' + next(10) as u8));
                }
            }
            let expected = s.parse::<f64>().ok().filter(|n| n.is_finite());
            let has_digit = s.bytes().any(|c| c.is_ascii_digit());
            let got = parse_number(&s);
            assert_eq!(
                got.map(f64::to_bits),
                expected.filter(|_| has_digit).map(f64::to_bits),
                "{s}"
            );
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2024-02-29"), Ok(Date::constant(2024, 2, 29)));
        assert_eq!(parse_date("2026-02-30"), Err(CALENDAR_HINT));
        assert_eq!(parse_date("2026-13-01"), Err(CALENDAR_HINT));
        assert_eq!(parse_date("2026-00-10"), Err(CALENDAR_HINT));
        for s in [
            "2026/01/01",
            "01/02/2025",
            "2026-1-01",
            "2026-01-1x",
            "20260101",
            "2026-01-011",
        ] {
            assert_eq!(parse_date(s), Err(DATE_HINT), "{s}");
        }
    }

    #[test]
    fn bools() {
        for s in ["true", "TRUE", "yes", "Y", "1"] {
            assert_eq!(parse_bool(s), Some(true), "{s}");
        }
        for s in ["false", "No", "n", "0"] {
            assert_eq!(parse_bool(s), Some(false), "{s}");
        }
        for s in ["2", "t", "ye", "yess", "on", "nope", "f", ""] {
            assert_eq!(parse_bool(s), None, "{s}");
        }
    }

    #[test]
    fn empty_cells_are_missing_for_every_type() {
        let row = parse(&["", "", "", "   ", "", "\t", ""]).unwrap();
        assert_eq!(row.get(2), Typed::Missing);
        assert_eq!(row.get(3), Typed::Missing);
        assert_eq!(row.get(5), Typed::Missing);
        // Short rows: absent cells are missing too.
        let row = parse(&["a@b"]).unwrap();
        assert_eq!(row.get(2), Typed::Missing);
    }

    #[test]
    fn bad_values_explain_themselves() {
        let err = parse(&["a@b", "Ann", "£1,000", "2026-01-01", "UK", "y", ""]).unwrap_err();
        assert_eq!(err.column, "total_given");
        assert_eq!(err.expected, ColumnType::Number);
        assert_eq!(
            err.to_string(),
            "column \"total_given\" is declared number but holds \"£1,000\": write plain numbers like 1000 or 1000.50"
        );
        let err = parse(&["a@b", "Ann", "1", "2026-02-30", "UK", "y", ""]).unwrap_err();
        assert_eq!(err.column, "last_gift_date");
        assert!(
            err.to_string().contains("does not exist in the calendar"),
            "{err}"
        );
        let err = parse(&["a@b", "Ann", "1", "31/01/2026", "UK", "y", ""]).unwrap_err();
        assert!(err.to_string().contains("YYYY-MM-DD"), "{err}");
        let err = parse(&["a@b", "Ann", "1", "2026-01-01", "UK", "maybe", ""]).unwrap_err();
        assert_eq!(err.column, "gift_aid");
        assert!(err.to_string().contains("yes/no"), "{err}");
        let long = "x".repeat(100);
        let err = parse(&["a@b", "Ann", &long, "", "", "", ""]).unwrap_err();
        assert_eq!(err.value.chars().count(), 61);
    }

    #[test]
    fn row_buffer_is_reused() {
        let schema = Schema::new(&header(), &declared()).unwrap();
        let mut out = TypedRow::default();
        let (d1, e1) = row(&["a", "b", "5", "", "", "n", ""]);
        schema.parse_row(&Fields::new(&d1, &e1), &mut out).unwrap();
        assert_eq!(out.get(2), Typed::Number(5.0));
        let (d2, e2) = row(&["a", "b", "", "", "", "", ""]);
        schema.parse_row(&Fields::new(&d2, &e2), &mut out).unwrap();
        assert_eq!(
            out.get(2),
            Typed::Missing,
            "no value leaks from the previous row"
        );
        assert_eq!(out.get(5), Typed::Missing);
    }

    #[test]
    fn duplicate_and_empty_headers() {
        let h: Vec<String> = ["email", "name", "email"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = Schema::new(&h, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                SchemaError::DuplicateHeader {
                    first: 1,
                    second: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("two columns named \"email\" (columns 1 and 3)"),
            "{err}"
        );
        let h: Vec<String> = ["email", " ", "x"].iter().map(|s| s.to_string()).collect();
        let err = Schema::new(&h, &[]).unwrap_err();
        assert!(
            matches!(err, SchemaError::EmptyHeader { position: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn declared_column_missing_suggests() {
        let err =
            Schema::new(&header(), &[("last_gift_dat".into(), ColumnType::Date)]).unwrap_err();
        match &err {
            SchemaError::DeclaredColumnMissing { name, suggestions } => {
                assert_eq!(name, "last_gift_dat");
                assert_eq!(suggestions[0], "last_gift_date");
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("did you mean \"last_gift_date\""), "{msg}");
        assert!(msg.contains("[columns]"), "{msg}");
        let err = Schema::new(&header(), &[("zzzz".into(), ColumnType::Date)]).unwrap_err();
        assert!(!err.to_string().contains("did you mean"), "{err}");
    }

    #[test]
    fn suggestions_rank_case_only_differences_first() {
        let schema = Schema::new(&header(), &[]).unwrap();
        assert_eq!(schema.suggest("last gift")[0], "Last Gift");
        assert_eq!(schema.suggest("EMAIL"), vec!["email"]);
        assert_eq!(schema.suggest("totl_given")[0], "total_given");
        assert!(schema.suggest("postcode").is_empty());
        assert!(schema.suggest("last").len() <= 3);
    }
}
