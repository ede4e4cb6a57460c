//! Turns tokens into a syntax tree, checking syntax only.
//!
//! Owns precedence, keywords and "expected X, found Y" messages. It never looks at the
//! schema: whether a name is a real column, or whether types fit, is decided in `check`.

use std::ops::Range;

use jiff::civil::Date;

use super::RuleError;
use super::lexer::{Tok, Token, UNIT_HELP, Unit, unit_from_word};

/// Words with a meaning of their own; a column with one of these names needs backticks.
pub(crate) const KEYWORDS: [&str; 14] = [
    "and", "or", "not", "in", "contains", "starts", "ends", "with", "matches", "is", "empty",
    "true", "false", "today",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
    Matches,
}

#[derive(Clone, Debug)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub span: Range<usize>,
}

#[derive(Clone, Debug)]
pub(crate) enum ExprKind {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        op: CmpOp,
        op_span: Range<usize>,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    In {
        lhs: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    TextTest {
        lhs: Box<Expr>,
        op: TextOp,
        arg: Box<Expr>,
        negated: bool,
        op_span: Range<usize>,
    },
    IsEmpty {
        lhs: Box<Expr>,
        negated: bool,
    },
    Number(f64),
    Text(String),
    Date(Date),
    Bool(bool),
    Today,
    Column(String),
    Call {
        name: String,
        arg: Box<Expr>,
    },
    Offset {
        base: Box<Expr>,
        negative: bool,
        amount: i64,
        unit: Unit,
        op_span: Range<usize>,
    },
}

impl ExprKind {
    /// A literal as written in the rule, which explanations need not repeat back.
    pub(crate) fn is_literal(&self) -> bool {
        matches!(
            self,
            ExprKind::Number(_) | ExprKind::Text(_) | ExprKind::Date(_) | ExprKind::Bool(_)
        )
    }
}

pub(crate) fn parse(tokens: &[Token], src: &str) -> Result<Expr, RuleError> {
    if tokens.len() <= 1 {
        return Err(RuleError {
            span: 0..src.len(),
            message: "the rule is empty".to_owned(),
            help: Some("write a condition, like total_given >= 100".to_owned()),
        });
    }
    let mut p = Parser { tokens, pos: 0 };
    let expr = p.or()?;
    if !matches!(p.peek(), Tok::Eof) {
        let help = match p.peek() {
            Tok::Comma => Some("write numbers without thousands separators, like 1000".to_owned()),
            Tok::RParen => Some("this `)` has no matching `(`".to_owned()),
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                Some("comparisons cannot be chained; join them with `and`".to_owned())
            }
            Tok::Ident(_) | Tok::Quoted(_) | Tok::Text(_) | Tok::Number(_) | Tok::Date(_) => {
                Some("join conditions with `and` or `or`; put text in double quotes".to_owned())
            }
            _ => None,
        };
        return Err(p.expected("`and`, `or` or the end of the rule", help));
    }
    Ok(expr)
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].tok
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.pos + ahead).min(last)].tok
    }

    fn span(&self) -> Range<usize> {
        self.tokens[self.pos].span.clone()
    }

    fn prev_end(&self) -> usize {
        self.pos
            .checked_sub(1)
            .map_or(0, |p| self.tokens[p].span.end)
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        is_kw(self.peek(), kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.bump();
        }
        yes
    }

    fn expected(&self, what: &str, help: Option<String>) -> RuleError {
        RuleError {
            span: self.span(),
            message: format!("expected {what}, found {}", self.peek().describe()),
            help,
        }
    }

    /// A rule cut short after `and`/`or`/`not` gets a clearer message than "expected a value".
    fn not_at_end(&self, kw: &str) -> Result<(), RuleError> {
        match self.peek() {
            Tok::Eof | Tok::RParen => {
                Err(self.expected(&format!("a condition after `{kw}`"), None))
            }
            _ => Ok(()),
        }
    }

    fn or(&mut self) -> Result<Expr, RuleError> {
        let mut items = vec![self.and()?];
        while self.eat_kw("or") {
            self.not_at_end("or")?;
            items.push(self.and()?);
        }
        Ok(join(items, ExprKind::Or))
    }

    fn and(&mut self) -> Result<Expr, RuleError> {
        let mut items = vec![self.not()?];
        while self.eat_kw("and") {
            self.not_at_end("and")?;
            items.push(self.not()?);
        }
        Ok(join(items, ExprKind::And))
    }

    fn not(&mut self) -> Result<Expr, RuleError> {
        if self.is_kw("not") {
            let start = self.bump().span.start;
            self.not_at_end("not")?;
            let inner = self.not()?;
            let span = start..inner.span.end;
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(inner)),
                span,
            });
        }
        self.test()
    }

    /// A value optionally followed by one comparison or test.
    fn test(&mut self) -> Result<Expr, RuleError> {
        let lhs = self.value()?;
        let start = lhs.span.start;
        let op = match self.peek() {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            let op_tok = self.bump();
            let rhs = self.value_after(&op_tok)?;
            let span = start..rhs.span.end;
            return Ok(Expr {
                kind: ExprKind::Compare {
                    op,
                    op_span: op_tok.span,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            });
        }
        if self.is_kw("is") {
            self.bump();
            let negated = self.eat_kw("not");
            if !self.is_kw("empty") {
                let what = if negated {
                    "`empty` after `is not`"
                } else {
                    "`empty` or `not empty` after `is`"
                };
                return Err(self.expected(what, Some("to compare values use = or !=".to_owned())));
            }
            let end = self.bump().span.end;
            return Ok(Expr {
                kind: ExprKind::IsEmpty {
                    lhs: Box::new(lhs),
                    negated,
                },
                span: start..end,
            });
        }
        // `x not in [..]`, `x not contains ".."`: a `not` here negates the test that follows.
        let negated = self.is_kw("not")
            && ["in", "contains", "starts", "ends", "matches"]
                .iter()
                .any(|k| is_kw(self.peek_at(1), k));
        let not_start = self.span().start;
        if negated {
            self.bump();
        }
        let op_start = if negated {
            not_start
        } else {
            self.span().start
        };
        if self.is_kw("in") {
            self.bump();
            let (list, end) = self.list()?;
            return Ok(Expr {
                kind: ExprKind::In {
                    lhs: Box::new(lhs),
                    list,
                    negated,
                },
                span: start..end,
            });
        }
        let text_op = if self.is_kw("contains") {
            Some((TextOp::Contains, None))
        } else if self.is_kw("starts") {
            Some((TextOp::StartsWith, Some("with")))
        } else if self.is_kw("ends") {
            Some((TextOp::EndsWith, Some("with")))
        } else if self.is_kw("matches") {
            Some((TextOp::Matches, None))
        } else {
            None
        };
        if let Some((op, second)) = text_op {
            let first = self.bump();
            let mut op_tok = first.clone();
            if let Some(second) = second {
                if !self.eat_kw(second) {
                    return Err(
                        self.expected(&format!("`{second}` after {}", first.tok.describe()), None)
                    );
                }
                op_tok.span.end = self.prev_end();
            }
            let arg = self.value_after(&op_tok)?;
            let span = start..arg.span.end;
            return Ok(Expr {
                kind: ExprKind::TextTest {
                    lhs: Box::new(lhs),
                    op,
                    arg: Box::new(arg),
                    negated,
                    op_span: op_start..op_tok.span.end,
                },
                span,
            });
        }
        Ok(lhs)
    }

    fn value_after(&mut self, op: &Token) -> Result<Expr, RuleError> {
        if matches!(self.peek(), Tok::Eof) || self.is_kw("and") || self.is_kw("or") {
            return Err(self.expected(&format!("a value after {}", op.tok.describe()), None));
        }
        self.value()
    }

    /// `[a, b, c]` after `in`; returns the items and the end of `]`.
    fn list(&mut self) -> Result<(Vec<Expr>, usize), RuleError> {
        if !matches!(self.peek(), Tok::LBracket) {
            return Err(self.expected("a list like [\"UK\", \"IE\"] after `in`", None));
        }
        self.bump();
        let mut items = Vec::new();
        loop {
            if matches!(self.peek(), Tok::RBracket) {
                break;
            }
            items.push(self.value()?);
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RBracket => break,
                _ => return Err(self.expected("`,` or `]` in the list", None)),
            }
        }
        let end = self.bump().span.end;
        Ok((items, end))
    }

    /// A primary value followed by any `+ 30d` / `- 6m` date offsets.
    fn value(&mut self) -> Result<Expr, RuleError> {
        let mut base = self.primary()?;
        while matches!(self.peek(), Tok::Plus | Tok::Minus) {
            let op = self.bump();
            let negative = op.tok == Tok::Minus;
            let (amount, unit, end) = match self.peek().clone() {
                Tok::Duration(n, unit) => (n, unit, self.bump().span.end),
                Tok::Number(n) => {
                    let num = self.bump();
                    // `365 d` with a space is accepted as well as `365d`.
                    let unit = match self.peek() {
                        Tok::Ident(w) => unit_from_word(w),
                        _ => None,
                    };
                    match unit {
                        Some(unit) if n.fract() == 0.0 && n.abs() < 1e15 => {
                            (n as i64, unit, self.bump().span.end)
                        }
                        _ => {
                            return Err(RuleError {
                                span: num.span,
                                message: format!("{n} needs a unit of time"),
                                help: Some(format!(
                                    "{UNIT_HELP}; only dates can be added to or subtracted from"
                                )),
                            });
                        }
                    }
                }
                _ => {
                    return Err(self.expected(
                        &format!("an amount of time like 30d after {}", op.tok.describe()),
                        Some(UNIT_HELP.to_owned()),
                    ));
                }
            };
            let span = base.span.start..end;
            base = Expr {
                kind: ExprKind::Offset {
                    base: Box::new(base),
                    negative,
                    amount,
                    unit,
                    op_span: op.span,
                },
                span,
            };
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<Expr, RuleError> {
        let t = self.span();
        let kind = match self.peek().clone() {
            Tok::Number(n) => ExprKind::Number(n),
            Tok::Minus if matches!(self.peek_at(1), Tok::Number(_)) => {
                self.bump();
                let Tok::Number(n) = self.peek().clone() else {
                    unreachable!("checked by the guard")
                };
                let end = self.bump().span.end;
                return Ok(Expr {
                    kind: ExprKind::Number(-n),
                    span: t.start..end,
                });
            }
            Tok::Text(s) => ExprKind::Text(s),
            Tok::Date(d) => ExprKind::Date(d),
            Tok::Quoted(name) => ExprKind::Column(name),
            Tok::Ident(w) if w.eq_ignore_ascii_case("true") => ExprKind::Bool(true),
            Tok::Ident(w) if w.eq_ignore_ascii_case("false") => ExprKind::Bool(false),
            Tok::Ident(w) if w.eq_ignore_ascii_case("today") => ExprKind::Today,
            Tok::Ident(w) if matches!(self.peek_at(1), Tok::LParen) => {
                self.bump();
                self.bump();
                let arg = self.or()?;
                if !matches!(self.peek(), Tok::RParen) {
                    return Err(self.expected(&format!("`)` to close {w}("), None));
                }
                let end = self.bump().span.end;
                return Ok(Expr {
                    kind: ExprKind::Call {
                        name: w,
                        arg: Box::new(arg),
                    },
                    span: t.start..end,
                });
            }
            Tok::Ident(w) if KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                return Err(self.expected(
                    "a value",
                    Some(format!(
                        "`{w}` is a keyword; if it is a column name, write it in backticks: `{w}`"
                    )),
                ));
            }
            Tok::Ident(w) => ExprKind::Column(w),
            Tok::LParen => {
                self.bump();
                let inner = self.or()?;
                if !matches!(self.peek(), Tok::RParen) {
                    return Err(
                        self.expected("`)`", Some("every `(` needs a matching `)`".to_owned()))
                    );
                }
                let end = self.bump().span.end;
                // Keep the parentheses in the span so explanations quote what was written.
                return Ok(Expr {
                    kind: inner.kind,
                    span: t.start..end,
                });
            }
            Tok::LBracket => {
                return Err(self.expected(
                    "a value",
                    Some("a list [..] can only follow `in` or `not in`".to_owned()),
                ));
            }
            Tok::Duration(..) => {
                return Err(self.expected(
                    "a value",
                    Some("an amount of time goes after a date, like today - 30d".to_owned()),
                ));
            }
            _ => return Err(self.expected("a value", None)),
        };
        self.bump();
        Ok(Expr { kind, span: t })
    }
}

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
}

fn join(mut items: Vec<Expr>, make: fn(Vec<Expr>) -> ExprKind) -> Expr {
    if items.len() == 1 {
        return items.remove(0);
    }
    let span = items[0].span.start..items[items.len() - 1].span.end;
    Expr {
        kind: make(items),
        span,
    }
}
