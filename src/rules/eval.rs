//! The compiled form of a rule and its evaluation against one row.
//!
//! Owns the runtime semantics: missing values, case-insensitive text comparison, date
//! arithmetic. One evaluator serves both `matches` (with the no-op [`NoTrace`], compiled away)
//! and `explain` (with a recording tracer). It never reports errors: anything that could fail
//! was rejected by `check` at compile time, and what is left at run time (a date pushed out of
//! range) evaluates as missing.

use std::cmp::Ordering;
use std::ops::Range;

use jiff::civil::Date;
use memchr::memmem;
use regex::Regex;

use super::Scratch;
use super::parse::CmpOp;
use crate::csvio::Fields;
use crate::schema::{ColumnType, Typed, TypedRow};

/// A constant, after folding (`today - 365d` is a `Date` here).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    Text(Box<str>),
    Number(f64),
    Date(Date),
    Bool(bool),
}

/// A typed value expression.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Const(Lit),
    Column {
        index: usize,
        ty: ColumnType,
    },
    Lower(Box<Value>),
    Upper(Box<Value>),
    Length(Box<Value>),
    /// Days from the date to `today`, which is stored as a day number.
    DaysSince(Box<Value>, i64),
    Year(Box<Value>),
    Offset(Box<Value>, jiff::Span),
}

/// A value with where it came from, so errors and explanations can quote it.
#[derive(Clone, Debug)]
pub(crate) struct Operand {
    pub value: Value,
    pub ty: ColumnType,
    pub span: Range<usize>,
    /// Explanations print this operand's value; literals are not repeated back.
    pub shown: bool,
}

/// Lowercased text to search for, prepared once.
#[derive(Clone, Debug)]
pub(crate) struct Needle {
    pub folded: String,
    pub ascii: bool,
    pub finder: memmem::Finder<'static>,
}

impl Needle {
    pub(crate) fn new(text: &str) -> Needle {
        let folded: String = text.chars().flat_map(char::to_lowercase).collect();
        let finder = memmem::Finder::new(folded.as_bytes()).into_owned();
        Needle {
            ascii: folded.is_ascii(),
            folded,
            finder,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum TextTest {
    Contains(Needle),
    StartsWith(Needle),
    EndsWith(Needle),
    Matches(Regex),
}

#[derive(Clone, Debug)]
pub(crate) enum Cond {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// A bool value used as a condition; missing counts as false.
    Truthy(Operand),
    Compare {
        op: CmpOp,
        lhs: Operand,
        rhs: Operand,
    },
    In {
        lhs: Operand,
        items: Vec<Lit>,
        negated: bool,
    },
    Text {
        lhs: Operand,
        /// Boxed because a prepared search is large and this variant is rare.
        test: Box<TextTest>,
        negated: bool,
    },
    IsEmpty {
        lhs: Operand,
        negated: bool,
    },
}

/// A condition and the part of the rule source it was written as.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub cond: Cond,
    pub span: Range<usize>,
}

/// How a text value is to be read: `lower(x)` is not materialised until something needs the
/// actual characters, which keeps `lower(x) = "a"` allocation-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Case {
    Raw,
    Lower,
    Upper,
}

/// One evaluated value, borrowing from the row or the rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Missing,
    Text(&'a str, Case),
    Num(f64),
    Date(Date),
    Bool(bool),
}

pub(crate) struct Row<'a> {
    pub fields: Fields<'a>,
    pub typed: &'a TypedRow,
}

impl Value {
    pub(crate) fn eval<'a>(&'a self, row: &Row<'a>) -> Val<'a> {
        match self {
            Value::Const(lit) => match lit {
                Lit::Text(s) => Val::Text(s, Case::Raw),
                Lit::Number(n) => Val::Num(*n),
                Lit::Date(d) => Val::Date(*d),
                Lit::Bool(b) => Val::Bool(*b),
            },
            Value::Column {
                index,
                ty: ColumnType::Text,
            } => Val::Text(row.fields.get_or_empty(*index).trim_ascii(), Case::Raw),
            Value::Column { index, .. } => typed_val(row.typed.slot(*index), row, *index),
            Value::Lower(v) => recase(v.eval(row), Case::Lower),
            Value::Upper(v) => recase(v.eval(row), Case::Upper),
            Value::Length(v) => match v.eval(row) {
                Val::Text(s, case) => Val::Num(cased_chars(s, case).count() as f64),
                _ => Val::Missing,
            },
            Value::DaysSince(v, today) => match v.eval(row) {
                Val::Date(d) => Val::Num((today - epoch_day(d)) as f64),
                _ => Val::Missing,
            },
            Value::Year(v) => match v.eval(row) {
                Val::Date(d) => Val::Num(f64::from(d.year())),
                _ => Val::Missing,
            },
            Value::Offset(v, span) => match v.eval(row) {
                Val::Date(d) => d.checked_add(*span).map_or(Val::Missing, Val::Date),
                _ => Val::Missing,
            },
        }
    }

    /// Whether the value is the same for every row, so it can be computed once at compile time.
    pub(crate) fn is_const(&self) -> bool {
        match self {
            Value::Const(_) => true,
            Value::Column { .. } => false,
            Value::Lower(v)
            | Value::Upper(v)
            | Value::Length(v)
            | Value::DaysSince(v, _)
            | Value::Year(v)
            | Value::Offset(v, _) => v.is_const(),
        }
    }
}

fn recase(v: Val<'_>, case: Case) -> Val<'_> {
    match v {
        Val::Text(s, _) => Val::Text(s, case),
        other => other,
    }
}

/// Days since 1970-01-01 (proleptic Gregorian), so `days_since` is a subtraction per row.
pub(crate) fn epoch_day(d: Date) -> i64 {
    let (m, day) = (i64::from(d.month()), i64::from(d.day()));
    let y = i64::from(d.year()) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Characters of `s` as `case` says, without allocating.
pub(crate) fn cased_chars(s: &str, case: Case) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(move |c| CaseIter::new(c, case))
}

enum CaseIter {
    Raw(std::iter::Once<char>),
    Lower(std::char::ToLowercase),
    Upper(std::char::ToUppercase),
}

impl CaseIter {
    fn new(c: char, case: Case) -> CaseIter {
        match case {
            Case::Raw => CaseIter::Raw(std::iter::once(c)),
            Case::Lower => CaseIter::Lower(c.to_lowercase()),
            Case::Upper => CaseIter::Upper(c.to_uppercase()),
        }
    }
}

impl Iterator for CaseIter {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        match self {
            CaseIter::Raw(i) => i.next(),
            CaseIter::Lower(i) => i.next(),
            CaseIter::Upper(i) => i.next(),
        }
    }
}

/// The text with its case transform applied, using `buf` only when a transform is needed.
pub(crate) fn materialize<'b>(s: &'b str, case: Case, buf: &'b mut String) -> &'b str {
    match case {
        Case::Raw => s,
        _ => {
            buf.clear();
            buf.extend(cased_chars(s, case));
            buf
        }
    }
}

/// Lowercases `s` into `buf` for case-insensitive searching.
fn fold_into<'b>(s: &str, buf: &'b mut String) -> &'b str {
    buf.clear();
    if s.is_ascii() {
        buf.push_str(s);
        buf.make_ascii_lowercase();
    } else {
        buf.extend(s.chars().flat_map(char::to_lowercase));
    }
    buf
}

/// Case-insensitive equality (simple Unicode lowercase), with an ASCII fast path.
pub(crate) fn text_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
    }
}

fn order(op: CmpOp, ord: Ordering) -> bool {
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

pub(crate) fn compare(op: CmpOp, a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        // Missing equals nothing, not even another missing value.
        (Val::Missing, _) | (_, Val::Missing) => op == CmpOp::Ne,
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(&y).is_some_and(|o| order(op, o)),
        (Val::Date(x), Val::Date(y)) => order(op, x.cmp(&y)),
        (Val::Bool(x), Val::Bool(y)) => order(op, x.cmp(&y)),
        (Val::Text(x, cx), Val::Text(y, cy)) => match op {
            CmpOp::Eq => text_eq(x, y),
            CmpOp::Ne => !text_eq(x, y),
            _ if cx == Case::Raw && cy == Case::Raw => order(op, x.cmp(y)),
            _ => order(op, cased_chars(x, cx).cmp(cased_chars(y, cy))),
        },
        // The type checker rules out mixed types; treat them as unequal rather than panic.
        _ => op == CmpOp::Ne,
    }
}

fn in_list(v: Val<'_>, items: &[Lit]) -> bool {
    match v {
        Val::Missing => false,
        Val::Text(s, _) => items
            .iter()
            .any(|i| matches!(i, Lit::Text(t) if text_eq(s, t))),
        Val::Num(n) => items.iter().any(|i| matches!(i, Lit::Number(m) if n == *m)),
        Val::Date(d) => items.iter().any(|i| matches!(i, Lit::Date(e) if d == *e)),
        Val::Bool(b) => items.iter().any(|i| matches!(i, Lit::Bool(c) if b == *c)),
    }
}

fn text_test(v: Val<'_>, test: &TextTest, scratch: &mut Scratch) -> bool {
    let Val::Text(s, case) = v else { return false };
    match test {
        TextTest::Contains(n) => {
            n.folded.is_empty()
                || n.finder
                    .find(fold_into(s, &mut scratch.buf).as_bytes())
                    .is_some()
        }
        TextTest::StartsWith(n) => {
            let k = n.folded.len();
            if n.ascii && s.is_ascii() {
                s.len() >= k && s.as_bytes()[..k].eq_ignore_ascii_case(n.folded.as_bytes())
            } else {
                fold_into(s, &mut scratch.buf).starts_with(&n.folded)
            }
        }
        TextTest::EndsWith(n) => {
            let k = n.folded.len();
            if n.ascii && s.is_ascii() {
                s.len() >= k
                    && s.as_bytes()[s.len() - k..].eq_ignore_ascii_case(n.folded.as_bytes())
            } else {
                fold_into(s, &mut scratch.buf).ends_with(&n.folded)
            }
        }
        TextTest::Matches(re) => re.is_match(materialize(s, case, &mut scratch.buf)),
    }
}

fn is_empty(v: Val<'_>) -> bool {
    match v {
        Val::Missing => true,
        Val::Text(s, _) => s.is_empty(),
        _ => false,
    }
}

/// Receives what evaluation saw. `ON` is a constant so the no-op tracer costs nothing.
pub(crate) trait Tracer {
    const ON: bool;
    /// An `and`/`or`/`not` group starts; returns a handle for `close`.
    fn open(&mut self, node: &Node) -> usize;
    fn close(&mut self, handle: usize, result: bool);
    /// A comparison or test was evaluated with these operand values.
    fn leaf(&mut self, node: &Node, values: &[(&Operand, Val<'_>)], result: bool);
}

/// The tracer for `matches`: records nothing.
pub(crate) struct NoTrace;

impl Tracer for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn open(&mut self, _: &Node) -> usize {
        0
    }
    #[inline(always)]
    fn close(&mut self, _: usize, _: bool) {}
    #[inline(always)]
    fn leaf(&mut self, _: &Node, _: &[(&Operand, Val<'_>)], _: bool) {}
}

/// Evaluates a condition. With a tracer that is `ON`, `and`/`or` evaluate every part (no
/// short-circuit) so an explanation can show all of them.
pub(crate) fn eval<T: Tracer>(
    node: &Node,
    row: &Row<'_>,
    scratch: &mut Scratch,
    t: &mut T,
) -> bool {
    match &node.cond {
        Cond::And(items) | Cond::Or(items) => {
            let all = matches!(node.cond, Cond::And(_));
            if T::ON {
                let h = t.open(node);
                let mut result = all;
                for item in items {
                    let r = eval(item, row, scratch, t);
                    result = if all { result && r } else { result || r };
                }
                t.close(h, result);
                result
            } else if all {
                items.iter().all(|i| eval(i, row, scratch, t))
            } else {
                items.iter().any(|i| eval(i, row, scratch, t))
            }
        }
        Cond::Not(inner) => {
            let h = if T::ON { t.open(node) } else { 0 };
            let r = !eval(inner, row, scratch, t);
            if T::ON {
                t.close(h, r);
            }
            r
        }
        Cond::Truthy(v) => leaf1(node, v, row, t, |x| x == Val::Bool(true)),
        Cond::Compare { op, lhs, rhs } => {
            let (a, b) = (lhs.value.eval(row), rhs.value.eval(row));
            let r = compare(*op, a, b);
            if T::ON {
                t.leaf(node, &[(lhs, a), (rhs, b)], r);
            }
            r
        }
        Cond::In {
            lhs,
            items,
            negated,
        } => leaf1(node, lhs, row, t, |v| in_list(v, items) != *negated),
        Cond::Text { lhs, test, negated } => leaf1(node, lhs, row, t, |v| {
            text_test(v, test, scratch) != *negated
        }),
        Cond::IsEmpty { lhs, negated } => leaf1(node, lhs, row, t, |v| is_empty(v) != *negated),
    }
}

/// A condition as [`super::Rule::matches`] evaluates it: a column compared with a constant,
/// the commonest leaf by far, becomes a direct test of the row's cell, with no operand to
/// evaluate and no pair of values to match up; anything else is left to [`eval`]. Same
/// results as `eval` by construction (missing, case and order rules alike), which every rule
/// test checks by comparing `matches` with `explain`.
#[derive(Clone, Debug)]
pub(crate) enum Fast {
    All(Vec<Fast>),
    Any(Vec<Fast>),
    Not(Box<Fast>),
    /// A `number` column against a number.
    Number {
        index: usize,
        op: CmpOp,
        k: f64,
    },
    /// A `date` column against a date (`today - 365d` is one, folded at compile time).
    Date {
        index: usize,
        op: CmpOp,
        k: Date,
    },
    /// A `bool` column used as a condition.
    IsTrue {
        index: usize,
    },
    /// A text column `in` a list of texts.
    TextIn {
        index: usize,
        items: Vec<Box<str>>,
        negated: bool,
    },
    Other(Node),
}

impl Fast {
    pub(crate) fn new(node: &Node) -> Fast {
        match &node.cond {
            Cond::And(items) => Fast::All(items.iter().map(Fast::new).collect()),
            Cond::Or(items) => Fast::Any(items.iter().map(Fast::new).collect()),
            Cond::Not(inner) => Fast::Not(Box::new(Fast::new(inner))),
            Cond::Compare { op, lhs, rhs } => {
                let (column, k, op) = match (&lhs.value, &rhs.value) {
                    (Value::Column { index, ty }, Value::Const(k)) => ((*index, *ty), k, *op),
                    (Value::Const(k), Value::Column { index, ty }) => {
                        ((*index, *ty), k, flipped(*op))
                    }
                    _ => return Fast::Other(node.clone()),
                };
                match (column, k) {
                    ((index, ColumnType::Number), Lit::Number(k)) => {
                        Fast::Number { index, op, k: *k }
                    }
                    ((index, ColumnType::Date), Lit::Date(k)) => Fast::Date { index, op, k: *k },
                    _ => Fast::Other(node.clone()),
                }
            }
            Cond::Truthy(Operand {
                value:
                    Value::Column {
                        index,
                        ty: ColumnType::Bool,
                    },
                ..
            }) => Fast::IsTrue { index: *index },
            Cond::In {
                lhs:
                    Operand {
                        value:
                            Value::Column {
                                index,
                                ty: ColumnType::Text,
                            },
                        ..
                    },
                items,
                negated,
            } => {
                let texts: Option<Vec<Box<str>>> = items
                    .iter()
                    .map(|i| match i {
                        Lit::Text(t) => Some(t.clone()),
                        _ => None,
                    })
                    .collect();
                match texts {
                    Some(items) => Fast::TextIn {
                        index: *index,
                        items,
                        negated: *negated,
                    },
                    None => Fast::Other(node.clone()),
                }
            }
            _ => Fast::Other(node.clone()),
        }
    }

    pub(crate) fn matches(&self, row: &Row<'_>, scratch: &mut Scratch) -> bool {
        match self {
            Fast::All(items) => items.iter().all(|i| i.matches(row, scratch)),
            Fast::Any(items) => items.iter().any(|i| i.matches(row, scratch)),
            Fast::Not(inner) => !inner.matches(row, scratch),
            Fast::Number { index, op, k } => match row.typed.slot(*index) {
                Typed::Number(n) => n.partial_cmp(k).is_some_and(|o| order(*op, o)),
                Typed::Missing => *op == CmpOp::Ne,
                other => compare(*op, typed_val(other, row, *index), Val::Num(*k)),
            },
            Fast::Date { index, op, k } => match row.typed.slot(*index) {
                Typed::Date(d) => order(*op, d.cmp(k)),
                Typed::Missing => *op == CmpOp::Ne,
                other => compare(*op, typed_val(other, row, *index), Val::Date(*k)),
            },
            Fast::IsTrue { index } => row.typed.slot(*index) == Typed::Bool(true),
            Fast::TextIn {
                index,
                items,
                negated,
            } => {
                let s = row.fields.get_or_empty(*index).trim_ascii();
                items.iter().any(|t| text_eq(s, t)) != *negated
            }
            Fast::Other(node) => eval(node, row, scratch, &mut NoTrace),
        }
    }
}

/// `k op column` as `column op' k`.
fn flipped(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        same => same,
    }
}

/// A typed cell as [`Value::eval`] reads it.
fn typed_val<'a>(t: Typed, row: &Row<'a>, index: usize) -> Val<'a> {
    match t {
        Typed::Number(n) => Val::Num(n),
        Typed::Date(d) => Val::Date(d),
        Typed::Bool(b) => Val::Bool(b),
        Typed::Missing => Val::Missing,
        Typed::Text => Val::Text(row.fields.get_or_empty(index).trim_ascii(), Case::Raw),
    }
}

#[inline(always)]
fn leaf1<'a, T: Tracer>(
    node: &Node,
    operand: &'a Operand,
    row: &Row<'a>,
    t: &mut T,
    test: impl FnOnce(Val<'a>) -> bool,
) -> bool {
    let v = operand.value.eval(row);
    let r = test(v);
    if T::ON {
        t.leaf(node, &[(operand, v)], r);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_days_agree_with_jiff() {
        let epoch = Date::constant(1970, 1, 1);
        for d in [
            Date::constant(1970, 1, 1),
            Date::constant(2000, 2, 29),
            Date::constant(2026, 3, 1),
            Date::constant(1969, 12, 31),
            Date::constant(1, 1, 1),
            Date::constant(-44, 3, 15),
            Date::constant(9999, 12, 31),
        ] {
            let want = d.since(epoch).unwrap().get_days() as i64;
            assert_eq!(epoch_day(d), want, "{d}");
        }
    }

    #[test]
    fn text_equality_ignores_case_including_unicode() {
        assert!(text_eq("UK", "uk"));
        assert!(text_eq("ÉCOLE", "école"));
        assert!(!text_eq("ecole", "école"));
        assert!(!text_eq("uk", "ukk"));
    }

    #[test]
    fn case_transforms_are_lazy_but_correct() {
        let mut buf = String::new();
        assert_eq!(materialize("Ça Va", Case::Upper, &mut buf), "ÇA VA");
        assert_eq!(cased_chars("ÀB", Case::Lower).collect::<String>(), "àb");
        assert!(!compare(
            CmpOp::Lt,
            Val::Text("B", Case::Lower),
            Val::Text("a", Case::Raw)
        ));
        assert!(compare(
            CmpOp::Lt,
            Val::Text("a", Case::Raw),
            Val::Text("B", Case::Lower)
        ));
    }
}
