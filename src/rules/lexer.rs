//! Splits rule source into tokens with byte spans.
//!
//! Owns literal syntax (numbers, text, dates, durations, backticked column names) and
//! operator spelling. It never knows about columns, types or what a keyword means in context.

use std::ops::Range;

use jiff::civil::Date;

use super::RuleError;

/// A unit of date arithmetic, as written after a number: `365d`, `6m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Days,
    Weeks,
    Months,
    Years,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A bare word: a keyword, column or function name. Keyword matching happens in the parser.
    Ident(String),
    /// A column name in backticks.
    Quoted(String),
    Number(f64),
    Text(String),
    Date(Date),
    Duration(i64, Unit),
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Plus,
    Minus,
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Range<usize>,
}

impl Tok {
    /// How the token is named in "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Quoted(s) => format!("`{s}`"),
            Tok::Number(n) => format!("the number {n}"),
            Tok::Text(s) => format!("the text \"{s}\""),
            Tok::Date(d) => format!("the date {d}"),
            Tok::Duration(..) => "a duration".to_owned(),
            Tok::Eq => "`=`".to_owned(),
            Tok::Ne => "`!=`".to_owned(),
            Tok::Lt => "`<`".to_owned(),
            Tok::Le => "`<=`".to_owned(),
            Tok::Gt => "`>`".to_owned(),
            Tok::Ge => "`>=`".to_owned(),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::LBracket => "`[`".to_owned(),
            Tok::RBracket => "`]`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Plus => "`+`".to_owned(),
            Tok::Minus => "`-`".to_owned(),
            Tok::Eof => "the end of the rule".to_owned(),
        }
    }
}

pub(crate) fn unit_from_word(word: &str) -> Option<Unit> {
    const UNITS: [(&str, Unit); 12] = [
        ("d", Unit::Days),
        ("day", Unit::Days),
        ("days", Unit::Days),
        ("w", Unit::Weeks),
        ("week", Unit::Weeks),
        ("weeks", Unit::Weeks),
        ("m", Unit::Months),
        ("month", Unit::Months),
        ("months", Unit::Months),
        ("y", Unit::Years),
        ("year", Unit::Years),
        ("years", Unit::Years),
    ];
    UNITS
        .iter()
        .find(|(w, _)| word.eq_ignore_ascii_case(w))
        .map(|&(_, u)| u)
}

pub(crate) const UNIT_HELP: &str =
    "use d (days), w (weeks), m (months) or y (years), like 365d or 6m";

fn err(span: Range<usize>, message: impl Into<String>, help: Option<&str>) -> RuleError {
    RuleError {
        span,
        message: message.into(),
        help: help.map(str::to_owned),
    }
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, RuleError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = src[i..].chars().next() {
        let start = i;
        let next = bytes.get(i + 1).copied();
        let (tok, end) = match c {
            c if c.is_whitespace() => {
                i += c.len_utf8();
                continue;
            }
            '(' => (Tok::LParen, i + 1),
            ')' => (Tok::RParen, i + 1),
            '[' => (Tok::LBracket, i + 1),
            ']' => (Tok::RBracket, i + 1),
            ',' => (Tok::Comma, i + 1),
            '+' => (Tok::Plus, i + 1),
            '-' => (Tok::Minus, i + 1),
            '=' => match next {
                Some(b'=') => (Tok::Eq, i + 2),
                Some(b'>') => {
                    return Err(err(
                        i..i + 2,
                        "`=>` is not an operator",
                        Some("write >= for \"at least\""),
                    ));
                }
                Some(b'<') => {
                    return Err(err(
                        i..i + 2,
                        "`=<` is not an operator",
                        Some("write <= for \"at most\""),
                    ));
                }
                _ => (Tok::Eq, i + 1),
            },
            '!' => match next {
                Some(b'=') => (Tok::Ne, i + 2),
                _ => {
                    return Err(err(
                        i..i + 1,
                        "unexpected `!`",
                        Some("write `not` to negate, or != for \"is not equal to\""),
                    ));
                }
            },
            '<' => match next {
                Some(b'=') => (Tok::Le, i + 2),
                Some(b'>') => (Tok::Ne, i + 2),
                _ => (Tok::Lt, i + 1),
            },
            '>' => match next {
                Some(b'=') => (Tok::Ge, i + 2),
                _ => (Tok::Gt, i + 1),
            },
            '&' => {
                return Err(err(
                    i..i + 1 + usize::from(next == Some(b'&')),
                    "unexpected `&`",
                    Some("write `and`"),
                ));
            }
            '|' => {
                return Err(err(
                    i..i + 1 + usize::from(next == Some(b'|')),
                    "unexpected `|`",
                    Some("write `or`"),
                ));
            }
            '"' | '\'' => lex_text(src, i, c)?,
            '`' => {
                let close = src[i + 1..].find('`').ok_or_else(|| {
                    err(
                        i..src.len(),
                        "this column name has no closing backtick `",
                        None,
                    )
                })?;
                let name = &src[i + 1..i + 1 + close];
                if name.is_empty() {
                    return Err(err(i..i + 2, "empty column name between backticks", None));
                }
                (Tok::Quoted(name.to_owned()), i + close + 2)
            }
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|b| b.is_ascii_digit())) => {
                lex_number(src, i)?
            }
            c if c.is_alphabetic() || c == '_' => {
                let end = src[i..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(src.len(), |n| i + n);
                let word = &src[i..end];
                if !word.is_ascii() {
                    return Err(err(
                        i..end,
                        format!("`{word}` is not a valid column name"),
                        Some(&format!(
                            "put column names with accents, spaces or dashes in backticks: `{word}`"
                        )),
                    ));
                }
                (Tok::Ident(word.to_owned()), end)
            }
            c => {
                return Err(err(
                    i..i + c.len_utf8(),
                    format!("unexpected character `{c}`"),
                    None,
                ));
            }
        };
        tokens.push(Token {
            tok,
            span: start..end,
        });
        i = end;
    }
    tokens.push(Token {
        tok: Tok::Eof,
        span: src.len()..src.len(),
    });
    Ok(tokens)
}

/// Text in `"…"` or `'…'`. Only `\"`, `\'` and `\\` are escapes; any other backslash is kept,
/// so regular expressions such as `"^\d+$"` need no doubling.
fn lex_text(src: &str, start: usize, quote: char) -> Result<(Tok, usize), RuleError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '\\' => match chars.clone().next() {
                Some((_, n)) if n == '"' || n == '\'' || n == '\\' => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push('\\'),
            },
            c if c == quote => return Ok((Tok::Text(out), start + 1 + off + 1)),
            c => out.push(c),
        }
    }
    Err(err(
        start..src.len(),
        format!("this text has no closing {quote}"),
        Some(&format!("end the text with {quote}")),
    ))
}

/// Numbers, dates (`2025-01-31`) and durations (`365d`), which all start with a digit.
fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), RuleError> {
    let b = src.as_bytes();
    let digits_end = |from: usize| {
        (from..b.len())
            .find(|&j| !b[j].is_ascii_digit())
            .unwrap_or(b.len())
    };
    let int_end = digits_end(start);

    // A date is exactly 4-2-2 digits; anything else starting with digits is a number.
    if int_end - start == 4
        && b.get(int_end) == Some(&b'-')
        && digits_end(int_end + 1) == int_end + 3
        && b.get(int_end + 3) == Some(&b'-')
        && digits_end(int_end + 4) == int_end + 6
    {
        let end = int_end + 6;
        let text = &src[start..end];
        return match crate::schema::parse_date(text) {
            Ok(d) => Ok((Tok::Date(d), end)),
            Err(_) => Err(err(
                start..end,
                format!("{text} is not a real calendar date"),
                Some("check the day and month"),
            )),
        };
    }

    let mut end = int_end;
    if b.get(end) == Some(&b'.') {
        end = digits_end(end + 1);
    }
    let number = &src[start..end];
    let word_end = src[end..]
        .find(|c: char| !c.is_alphanumeric())
        .map_or(src.len(), |n| end + n);
    if word_end > end {
        let word = &src[end..word_end];
        let Some(unit) = unit_from_word(word) else {
            return Err(err(
                end..word_end,
                format!("`{word}` is not a unit of time"),
                Some(UNIT_HELP),
            ));
        };
        let amount = number.parse::<i64>().map_err(|_| {
            err(
                start..word_end,
                "durations need a whole number",
                Some("write 6m or 183d, not 0.5y"),
            )
        })?;
        return Ok((Tok::Duration(amount, unit), word_end));
    }
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok((Tok::Number(n), end)),
        _ => Err(err(
            start..end,
            format!("{number} is not a number this rule can use"),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_and_literals() {
        assert_eq!(
            toks("a == 1 <> 2.5 != <= >= < > = ( ) [ ] , + -"),
            vec![
                Tok::Ident("a".into()),
                Tok::Eq,
                Tok::Number(1.0),
                Tok::Ne,
                Tok::Number(2.5),
                Tok::Ne,
                Tok::Le,
                Tok::Ge,
                Tok::Lt,
                Tok::Gt,
                Tok::Eq,
                Tok::LParen,
                Tok::RParen,
                Tok::LBracket,
                Tok::RBracket,
                Tok::Comma,
                Tok::Plus,
                Tok::Minus,
                Tok::Eof
            ]
        );
        assert_eq!(
            toks(r#"`Last Gift` "a\"b\\c\d" 'it\'s' 2025-01-31 365d 6 m 2Years"#),
            vec![
                Tok::Quoted("Last Gift".into()),
                Tok::Text(r#"a"b\c\d"#.into()),
                Tok::Text("it's".into()),
                Tok::Date(Date::constant(2025, 1, 31)),
                Tok::Duration(365, Unit::Days),
                Tok::Number(6.0),
                Tok::Ident("m".into()),
                Tok::Duration(2, Unit::Years),
                Tok::Eof
            ]
        );
        assert_eq!(lex("ab  ").unwrap()[1].span, 4..4);
    }

    #[test]
    fn lexical_errors() {
        let e = lex("x = \"abc").unwrap_err();
        assert_eq!(
            (e.span.clone(), e.message.as_str()),
            (4..8, "this text has no closing \"")
        );
        let e = lex("d > 2026-02-30").unwrap_err();
        assert_eq!(e.span, 4..14);
        assert!(e.message.contains("not a real calendar date"));
        let e = lex("today - 3q").unwrap_err();
        assert_eq!(e.span, 9..10);
        let e = lex("a && b").unwrap_err();
        assert_eq!((e.span, e.help.as_deref()), (2..4, Some("write `and`")));
        let e = lex("a => 1").unwrap_err();
        assert!(e.help.unwrap().contains(">="));
        let e = lex("prénom = 1").unwrap_err();
        assert!(e.help.unwrap().contains("backticks"));
    }
}
