//! Resolves a syntax tree against the donor file's schema into an evaluable condition.
//!
//! Owns name resolution (columns, functions), type checking, constant folding (`today - 365d`
//! becomes a date once) and compiling text needles and regexes. It never sees row data.

use jiff::civil::Date;

use super::RuleError;
use super::eval::{
    Cond, Lit, Needle, Node, Operand, Row, TextTest, Val, Value, epoch_day, materialize,
};
use super::lexer::Unit;
use super::parse::{CmpOp, Expr, ExprKind, TextOp};
use crate::csvio::Fields;
use crate::schema::{ColumnType, Schema, TypedRow};

/// Function name, argument type, result type.
const FUNCTIONS: [(&str, ColumnType, ColumnType); 5] = [
    ("lower", ColumnType::Text, ColumnType::Text),
    ("upper", ColumnType::Text, ColumnType::Text),
    ("length", ColumnType::Text, ColumnType::Number),
    ("days_since", ColumnType::Date, ColumnType::Number),
    ("year", ColumnType::Date, ColumnType::Number),
];

const FUNCTION_HELP: &str =
    "the functions are lower(text), upper(text), length(text), days_since(date) and year(date)";

/// How many column names an unknown-column message lists before "…".
const MAX_LISTED: usize = 12;

pub(crate) fn check(
    expr: &Expr,
    src: &str,
    schema: &Schema,
    today: Date,
) -> Result<Node, RuleError> {
    Checker { src, schema, today }.cond(expr)
}

struct Checker<'a> {
    src: &'a str,
    schema: &'a Schema,
    today: Date,
}

fn error(
    span: std::ops::Range<usize>,
    message: impl Into<String>,
    help: Option<String>,
) -> RuleError {
    RuleError {
        span,
        message: message.into(),
        help,
    }
}

/// "a number", "text", … for messages.
fn a_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Number => "a number",
        ColumnType::Date => "a date",
        ColumnType::Bool => "true/false",
    }
}

/// A column name as it must be written in a rule.
fn written(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !super::parse::KEYWORDS
            .iter()
            .any(|k| name.eq_ignore_ascii_case(k));
    if plain {
        name.to_owned()
    } else {
        format!("`{name}`")
    }
}

/// A column name as a TOML key in `[columns]`.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

impl Checker<'_> {
    fn text(&self, e: &Expr) -> &str {
        &self.src[e.span.clone()]
    }

    /// "total_given is a number column" / "\"abc\" is text".
    fn describe(&self, e: &Expr, ty: ColumnType) -> String {
        match &e.kind {
            ExprKind::Column(name) => format!("{name} is a {ty} column"),
            _ => format!("{} is {}", self.text(e), a_type(ty)),
        }
    }

    fn cond(&self, e: &Expr) -> Result<Node, RuleError> {
        let cond = match &e.kind {
            ExprKind::Or(items) => Cond::Or(self.flatten(items, |c| matches!(c, Cond::Or(_)))?),
            ExprKind::And(items) => Cond::And(self.flatten(items, |c| matches!(c, Cond::And(_)))?),
            ExprKind::Not(inner) => Cond::Not(Box::new(self.cond(inner)?)),
            ExprKind::Compare {
                op,
                op_span,
                lhs,
                rhs,
            } => {
                let (l, r) = (self.operand(lhs)?, self.operand(rhs)?);
                if l.ty != r.ty {
                    return Err(error(
                        op_span.clone(),
                        self.mismatch(lhs, l.ty, rhs, r.ty),
                        self.mismatch_help(lhs, l.ty, rhs, r.ty),
                    ));
                }
                if l.ty == ColumnType::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                    return Err(error(
                        op_span.clone(),
                        "true/false values can only be compared with = or !=",
                        None,
                    ));
                }
                Cond::Compare {
                    op: *op,
                    lhs: l,
                    rhs: r,
                }
            }
            ExprKind::In {
                lhs, list, negated, ..
            } => {
                let l = self.operand(lhs)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let o = self.operand(item)?;
                    if o.ty != l.ty {
                        return Err(error(
                            item.span.clone(),
                            self.mismatch(lhs, l.ty, item, o.ty),
                            self.mismatch_help(lhs, l.ty, item, o.ty),
                        ));
                    }
                    let Value::Const(lit) = o.value else {
                        return Err(error(
                            item.span.clone(),
                            "a list after `in` can only hold fixed values, like \"UK\", 100 or 2025-01-31",
                            Some("to compare two columns, use = or !=".to_owned()),
                        ));
                    };
                    items.push(lit);
                }
                Cond::In {
                    lhs: l,
                    items,
                    negated: *negated,
                }
            }
            ExprKind::TextTest {
                lhs,
                op,
                arg,
                negated,
                op_span,
            } => {
                let word = &self.src[op_span.clone()];
                let l = self.operand(lhs)?;
                if l.ty != ColumnType::Text {
                    let help = match (&lhs.kind, l.ty) {
                        (_, ColumnType::Number | ColumnType::Date) => {
                            Some("compare numbers and dates with =, <, >, <= or >=".to_owned())
                        }
                        _ => None,
                    };
                    return Err(error(
                        op_span.clone(),
                        format!("`{word}` works on text, but {}", self.describe(lhs, l.ty)),
                        help,
                    ));
                }
                let a = self.operand(arg)?;
                let pattern = match (&a.value, a.ty) {
                    (Value::Const(Lit::Text(s)), ColumnType::Text) => s.to_string(),
                    _ => {
                        return Err(error(
                            arg.span.clone(),
                            format!("`{word}` needs fixed text in double quotes, like \"gmail\""),
                            None,
                        ));
                    }
                };
                let test = match op {
                    TextOp::Contains => TextTest::Contains(Needle::new(&pattern)),
                    TextOp::StartsWith => TextTest::StartsWith(Needle::new(&pattern)),
                    TextOp::EndsWith => TextTest::EndsWith(Needle::new(&pattern)),
                    TextOp::Matches => {
                        TextTest::Matches(regex::Regex::new(&pattern).map_err(|e| {
                            let detail = e.to_string();
                            let last = detail
                                .lines()
                                .rev()
                                .find(|l| !l.trim().is_empty())
                                .unwrap_or("");
                            error(
                                arg.span.clone(),
                                "this is not a valid regular expression",
                                Some(last.trim().trim_start_matches("error: ").to_owned()),
                            )
                        })?)
                    }
                };
                Cond::Text {
                    lhs: l,
                    test: Box::new(test),
                    negated: *negated,
                }
            }
            ExprKind::IsEmpty { lhs, negated } => Cond::IsEmpty {
                lhs: self.operand(lhs)?,
                negated: *negated,
            },
            _ => {
                let o = self.operand(e)?;
                if o.ty != ColumnType::Bool {
                    let what = self.text(e);
                    let example = match o.ty {
                        ColumnType::Number => format!("{what} > 0"),
                        ColumnType::Date => format!("{what} >= today - 365d"),
                        _ => format!("{what} = \"something\" or {what} is not empty"),
                    };
                    return Err(error(
                        e.span.clone(),
                        format!("{} is {}, not a condition", what, a_type(o.ty)),
                        Some(format!("compare it with something, like {example}")),
                    ));
                }
                Cond::Truthy(o)
            }
        };
        Ok(Node {
            cond,
            span: e.span.clone(),
        })
    }

    /// `a and (b and c)` is one list of three, which reads better in explanations.
    fn flatten(&self, items: &[Expr], same: fn(&Cond) -> bool) -> Result<Vec<Node>, RuleError> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let node = self.cond(item)?;
            if same(&node.cond) {
                if let Cond::And(inner) | Cond::Or(inner) = node.cond {
                    out.extend(inner);
                }
            } else {
                out.push(node);
            }
        }
        Ok(out)
    }

    fn mismatch(&self, l: &Expr, lt: ColumnType, r: &Expr, rt: ColumnType) -> String {
        format!("{} but {}", self.describe(l, lt), self.describe(r, rt))
    }

    fn mismatch_help(&self, l: &Expr, lt: ColumnType, r: &Expr, rt: ColumnType) -> Option<String> {
        for ((a, at), (b, bt)) in [((l, lt), (r, rt)), ((r, rt), (l, lt))] {
            let b_text = match &b.kind {
                ExprKind::Text(s) => Some(s.as_str()),
                _ => None,
            };
            match (&a.kind, at) {
                (ExprKind::Column(name), ColumnType::Text) if bt != ColumnType::Text => {
                    return Some(format!(
                        "declare the column in [columns] as {} = \"{bt}\"",
                        toml_key(name)
                    ));
                }
                (_, ColumnType::Date)
                    if b_text.is_some_and(|s| crate::schema::parse_date(s.trim()).is_ok()) =>
                {
                    return Some(format!(
                        "write dates without quotes: {}",
                        b_text.unwrap_or_default().trim()
                    ));
                }
                (_, ColumnType::Number)
                    if b_text.is_some_and(|s| crate::schema::parse_number(s.trim()).is_some()) =>
                {
                    return Some(format!(
                        "write numbers without quotes: {}",
                        b_text.unwrap_or_default().trim()
                    ));
                }
                (_, ColumnType::Bool) if b_text.is_some() => {
                    return Some("write true or false without quotes".to_owned());
                }
                (_, ColumnType::Date) if bt == ColumnType::Number => {
                    return Some(
                        "compare dates with a date like 2025-01-31 or today - 365d; days_since(date) gives a number of days"
                            .to_owned(),
                    );
                }
                _ => {}
            }
        }
        None
    }

    fn operand(&self, e: &Expr) -> Result<Operand, RuleError> {
        let (value, ty) = self.value(e)?;
        let value = if value.is_const() && !matches!(value, Value::Const(_)) {
            self.fold(&value, e)?
        } else {
            value
        };
        Ok(Operand {
            value,
            ty,
            span: e.span.clone(),
            shown: !e.kind.is_literal(),
        })
    }

    /// Computes a row-independent value once.
    fn fold(&self, value: &Value, e: &Expr) -> Result<Value, RuleError> {
        let typed = TypedRow::default();
        let row = Row {
            fields: Fields::new("", &[]),
            typed: &typed,
        };
        let mut buf = String::new();
        let lit = match value.eval(&row) {
            Val::Text(s, case) => Lit::Text(materialize(s, case, &mut buf).into()),
            Val::Num(n) => Lit::Number(n),
            Val::Date(d) => Lit::Date(d),
            Val::Bool(b) => Lit::Bool(b),
            Val::Missing => {
                return Err(error(
                    e.span.clone(),
                    "this date is outside the years -9999 to 9999",
                    None,
                ));
            }
        };
        Ok(Value::Const(lit))
    }

    fn value(&self, e: &Expr) -> Result<(Value, ColumnType), RuleError> {
        Ok(match &e.kind {
            ExprKind::Number(n) => (Value::Const(Lit::Number(*n)), ColumnType::Number),
            ExprKind::Text(s) => (Value::Const(Lit::Text(s.as_str().into())), ColumnType::Text),
            ExprKind::Date(d) => (Value::Const(Lit::Date(*d)), ColumnType::Date),
            ExprKind::Bool(b) => (Value::Const(Lit::Bool(*b)), ColumnType::Bool),
            ExprKind::Today => (Value::Const(Lit::Date(self.today)), ColumnType::Date),
            ExprKind::Column(name) => match self.schema.column(name) {
                Some(c) => (
                    Value::Column {
                        index: c.index,
                        ty: c.ty,
                    },
                    c.ty,
                ),
                None => return Err(self.unknown_column(name, e)),
            },
            ExprKind::Call { name, arg } => {
                let Some(&(fname, input, output)) =
                    FUNCTIONS.iter().find(|f| f.0.eq_ignore_ascii_case(name))
                else {
                    let name_span = e.span.start..e.span.start + name.len();
                    return Err(error(
                        name_span,
                        format!("unknown function `{name}`"),
                        Some(FUNCTION_HELP.to_owned()),
                    ));
                };
                let (v, t) = self.value(arg)?;
                if t != input {
                    return Err(error(
                        arg.span.clone(),
                        format!(
                            "{fname}() needs {}, but {}",
                            a_type(input),
                            self.describe(arg, t)
                        ),
                        match (&arg.kind, t) {
                            (ExprKind::Column(c), ColumnType::Text) => Some(format!(
                                "declare the column in [columns] as {} = \"{input}\"",
                                toml_key(c)
                            )),
                            _ => Some(FUNCTION_HELP.to_owned()),
                        },
                    ));
                }
                let v = Box::new(v);
                let value = match fname {
                    "lower" => Value::Lower(v),
                    "upper" => Value::Upper(v),
                    "length" => Value::Length(v),
                    "days_since" => Value::DaysSince(v, epoch_day(self.today)),
                    _ => Value::Year(v),
                };
                (value, output)
            }
            ExprKind::Offset {
                base,
                negative,
                amount,
                unit,
                op_span,
            } => {
                let (v, t) = self.value(base)?;
                if t != ColumnType::Date {
                    let help = match (&base.kind, t) {
                        (ExprKind::Column(c), ColumnType::Text) => Some(format!(
                            "declare the column in [columns] as {} = \"date\"",
                            toml_key(c)
                        )),
                        _ => Some(
                            "only dates can have time added or subtracted, like today - 30d"
                                .to_owned(),
                        ),
                    };
                    return Err(error(
                        op_span.clone(),
                        format!(
                            "can only add or subtract time from a date, but {}",
                            self.describe(base, t)
                        ),
                        help,
                    ));
                }
                let n = if *negative { -amount } else { *amount };
                let span = jiff::Span::new();
                let span = match unit {
                    Unit::Days => span.try_days(n),
                    Unit::Weeks => span.try_weeks(n),
                    Unit::Months => span.try_months(n),
                    Unit::Years => span.try_years(n),
                }
                .map_err(|_| {
                    error(
                        e.span.clone(),
                        format!("{amount} is too large an amount of time"),
                        None,
                    )
                })?;
                (Value::Offset(Box::new(v), span), ColumnType::Date)
            }
            ExprKind::Or(_)
            | ExprKind::And(_)
            | ExprKind::Not(_)
            | ExprKind::Compare { .. }
            | ExprKind::In { .. }
            | ExprKind::TextTest { .. }
            | ExprKind::IsEmpty { .. } => {
                return Err(error(
                    e.span.clone(),
                    "expected a value here, but this is a condition",
                    Some("conditions can only be joined with and, or, not".to_owned()),
                ));
            }
        })
    }

    fn unknown_column(&self, name: &str, e: &Expr) -> RuleError {
        let columns = self.schema.columns();
        let mut listed: Vec<String> = columns
            .iter()
            .take(MAX_LISTED)
            .map(|c| written(&c.name))
            .collect();
        if columns.len() > MAX_LISTED {
            listed.push("…".to_owned());
        }
        let listing = format!("columns in the donor file: {}", listed.join(", "));
        let suggestions = self.schema.suggest(name);
        let help = match suggestions.first() {
            Some(best) => {
                let how = if written(best) == *best {
                    String::new()
                } else {
                    format!(" (write it as {})", written(best))
                };
                format!("did you mean \"{best}\"?{how} {listing}")
            }
            None if matches!(e.kind, ExprKind::Column(_)) && !self.text(e).starts_with('`') => {
                format!(
                    "{listing}; if you meant the text {name}, put it in double quotes: \"{name}\""
                )
            }
            None => listing,
        };
        error(
            e.span.clone(),
            format!("unknown column \"{name}\""),
            Some(help),
        )
    }
}
