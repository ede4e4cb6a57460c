//! The campaign-specific filters: `money`, `date` and `fallback`.
//!
//! Owns turning numbers and ISO dates into donor-facing text. Never looks at the donor row or
//! the environment: each filter is a pure function of its arguments (and, for `money`, the
//! run's currency symbol captured when the filter is registered).

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

use crate::schema::{parse_date, parse_number};

/// `value | money` / `value | money("€")`: thousands separators, two decimals, and no `.00`
/// on whole amounts. Empty, none and undefined render as `""` so `| fallback(...)` can follow.
pub(crate) fn money(
    default_symbol: &str,
    value: &Value,
    symbol: Option<&str>,
) -> Result<String, Error> {
    let symbol = symbol.unwrap_or(default_symbol);
    let amount = match value.kind() {
        ValueKind::Undefined | ValueKind::None => return Ok(String::new()),
        ValueKind::Number => f64::try_from(value.clone()).map_err(|_| not_a_number(value))?,
        ValueKind::String => {
            let text = value.as_str().unwrap_or_default().trim();
            if text.is_empty() {
                return Ok(String::new());
            }
            parse_number(text).ok_or_else(|| not_a_number(value))?
        }
        _ => return Err(not_a_number(value)),
    };
    format_money(amount, symbol).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("money: {amount} is too large to show as an amount"),
        )
    })
}

/// A value as the marketer wrote it: text in double quotes, anything else as printed.
fn shown(value: &Value) -> String {
    match value.as_str() {
        Some(s) => format!("\"{s}\""),
        None => value.to_string(),
    }
}

fn not_a_number(value: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "money: {} is not a number; use it on a column declared `number` in [columns], or on plain numeric text like 1250.50",
            shown(value)
        ),
    )
}

/// Formats `amount` as `£1,250.50` / `£25` / `-£3.10`; `None` when it does not fit in cents.
pub(crate) fn format_money(amount: f64, symbol: &str) -> Option<String> {
    // Round to whole cents first, so 0.999 becomes 1 and is shown without decimals.
    let cents = (amount * 100.0).round();
    if !cents.is_finite() || cents.abs() >= 9.0e15 {
        return None;
    }
    // Exact: |cents| < 2^53, so the conversion neither truncates nor saturates.
    let cents = cents as i64;
    let (mut whole, frac) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    let digits = &buf[start..];
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + symbol.len() + 4);
    if cents < 0 {
        out.push('-');
    }
    out.push_str(symbol);
    for (i, &d) in digits.iter().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(char::from(d));
    }
    if frac != 0 {
        out.push('.');
        out.push(char::from(b'0' + (frac / 10) as u8));
        out.push(char::from(b'0' + (frac % 10) as u8));
    }
    Some(out)
}

/// `value | date("%-d %B %Y")`: an ISO `YYYY-MM-DD` date formatted with strftime codes.
/// Empty, none and undefined render as `""`.
pub(crate) fn date(value: &Value, format: &str) -> Result<String, Error> {
    let text = match value.kind() {
        ValueKind::Undefined | ValueKind::None => return Ok(String::new()),
        ValueKind::String => value.as_str().unwrap_or_default().trim(),
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "date: {} is not a date; use it on a column declared `date` in [columns] (YYYY-MM-DD)",
                    shown(value)
                ),
            ));
        }
    };
    if text.is_empty() {
        return Ok(String::new());
    }
    let day = parse_date(text).map_err(|hint| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("date: {text:?} is not a date: {hint}"),
        )
    })?;
    jiff::fmt::strtime::format(format, day).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "date: the format {format:?} cannot be used for a date ({e}); try \"%-d %B %Y\""
            ),
        )
    })
}

/// `value | fallback("friend")`: `value` unless it is empty, only spaces, none or undefined.
pub(crate) fn fallback(value: &Value, replacement: Value) -> Value {
    let empty = match value.kind() {
        ValueKind::Undefined | ValueKind::None => true,
        ValueKind::String => value.as_str().is_none_or(|s| s.trim().is_empty()),
        _ => false,
    };
    if empty { replacement } else { value.clone() }
}

/// `urlencode`, as minijinja's, but with lower-case hex (`%c3%a9`): SpamAssassin's
/// UNRESOLVED_TEMPLATE rule (+3.0) takes upper-case `%XY` runs in a URL for an unfilled
/// template placeholder.
pub(super) fn urlencode(value: &Value) -> Result<String, Error> {
    // Text, nearly always: encoded here directly (minijinja's set: all but letters, digits,
    // `/`, `.`, `-` and `_`), rather than encoded and then copied to lower the escapes.
    if let Some(text) = value.as_str() {
        let mut out = String::with_capacity(text.len() + text.len() / 2);
        let keep = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_');
        crate::percent::encode(text, keep, crate::percent::LOWER, &mut out);
        return Ok(out);
    }
    let encoded = minijinja::filters::urlencode(value)?;
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            out.push(c);
            if c == '%' {
                hex_left = 2;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_of_text_is_minijinjas_in_lower_case() {
        for text in [
            "",
            "plain",
            "a b&c=d?e#f%g+h",
            "zoë+ann@park.example/ x",
            "田中/~!*'();:@$,[]<>\"\\^`{|}\u{7f}\t\n",
            "spring-gala_2026.v2",
        ] {
            let ours = urlencode(&Value::from(text)).unwrap();
            let theirs = minijinja::filters::urlencode(&Value::from(text)).unwrap();
            assert_eq!(ours, theirs.to_lowercase(), "{text:?}");
        }
        // Not text: minijinja's own rules, escapes lowered.
        assert_eq!(urlencode(&Value::from(12.5)).unwrap(), "12.5");
    }

    #[test]
    fn urlencode_writes_lower_case_escapes() {
        let got = urlencode(&Value::from("zoë+ann@park.example/ x")).unwrap();
        assert_eq!(got, "zo%c3%ab%2bann%40park.example/%20x");
        assert_eq!(urlencode(&Value::from(())).unwrap(), "");
    }
}
