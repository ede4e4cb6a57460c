//! The per-donor context templates render against.
//!
//! Owns the mapping from variable names to a donor's values, built once per schema
//! ([`Index`]) so that each render only converts the row's cells ([`Row`]). Never renders and
//! never decides which template a donor gets.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Value};

use crate::schema::{Schema, Typed};

use super::Donor;

/// Names the engine provides besides the columns. `email` is special: a column of that name
/// wins, because a donor file with an `email` column means exactly that address.
pub(crate) const BUILTINS: [&str; 5] = ["donor", "segment", "campaign", "today", "email"];

/// FxHash (rustc's): a multiply and a rotate per eight bytes. Every variable a template uses
/// is looked up by name at each use, 25-odd times a message; SipHash was most of the lookup.
/// The names are the donor file's header and the built-ins, fixed before any render, so
/// there is nothing to flood.
#[derive(Default)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map from variable or column names.
type ByName<V> = HashMap<String, V, BuildHasherDefault<NameHasher>>;

/// Where a root variable's value comes from.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Column(usize),
    Donor,
    Email,
    Segment,
    Campaign,
    Today,
    UnsubscribeUrl,
    UnsubscribeToken,
}

/// Name lookups for one donor-file header, shared by every render with that header.
#[derive(Debug)]
pub(crate) struct Index {
    header: Vec<String>,
    root: ByName<Slot>,
    columns: ByName<usize>,
}

impl Index {
    pub(crate) fn new(schema: &Schema) -> Index {
        let header: Vec<String> = schema.columns().iter().map(|c| c.name.clone()).collect();
        let columns: ByName<usize> = header
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut root: ByName<Slot> = columns
            .iter()
            .map(|(n, &i)| (n.clone(), Slot::Column(i)))
            .collect();
        // Built-ins are inserted after the columns so that they win: templates written against
        // the documented names keep working whatever the export calls its columns. A hidden
        // column is still reachable as `donor["segment"]`.
        for (name, slot) in [
            ("donor", Slot::Donor),
            ("segment", Slot::Segment),
            ("campaign", Slot::Campaign),
            ("today", Slot::Today),
            ("unsubscribe_url", Slot::UnsubscribeUrl),
            ("unsubscribe_token", Slot::UnsubscribeToken),
        ] {
            root.insert(name.to_owned(), slot);
        }
        root.entry("email".to_owned()).or_insert(Slot::Email);
        Index {
            header,
            root,
            columns,
        }
    }

    /// Whether this index was built for `schema`'s header.
    pub(crate) fn matches(&self, schema: &Schema) -> bool {
        let cols = schema.columns();
        cols.len() == self.header.len() && cols.iter().zip(&self.header).all(|(c, h)| c.name == *h)
    }
}

/// Values constant for a whole run.
#[derive(Debug)]
pub(crate) struct RunValues {
    pub(crate) campaign: Value,
    pub(crate) today: Value,
}

/// One donor's values, converted once and shared by the renders of all message parts.
#[derive(Debug)]
pub(crate) struct Row {
    columns: Vec<Value>,
    email: Value,
    segment: Value,
}

impl Row {
    pub(crate) fn new(donor: &Donor<'_>) -> Row {
        let columns = donor
            .schema
            .columns()
            .iter()
            .map(|c| cell_value(donor, c.index))
            .collect();
        Row {
            columns,
            email: Value::from(donor.email),
            segment: Value::from(donor.segment),
        }
    }
}

fn cell_value(donor: &Donor<'_>, i: usize) -> Value {
    match donor.typed.slot(i) {
        Typed::Text => Value::from(donor.fields.get_or_empty(i).trim()),
        Typed::Missing => Value::from(""),
        Typed::Number(n) => number_value(n),
        Typed::Date(d) => date_value(d),
        Typed::Bool(b) => Value::from(b),
    }
}

/// A date as `YYYY-MM-DD`, as jiff prints it, without going through `fmt` for the years
/// every donor file has.
fn date_value(d: jiff::civil::Date) -> Value {
    let (y, m, day) = (d.year(), d.month(), d.day());
    if !(1000..=9999).contains(&y) {
        return Value::from(d.to_string());
    }
    let digit = |n: i16| b'0' + (n % 10) as u8;
    let (m, day) = (i16::from(m), i16::from(day));
    let text = [
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        b'-',
        digit(m / 10),
        digit(m),
        b'-',
        digit(day / 10),
        digit(day),
    ];
    // Digits and dashes only: always UTF-8.
    Value::from(std::str::from_utf8(&text).unwrap_or_default())
}

/// Whole amounts become integers so `{{ gift_count }}` prints `3`, not `3.0`.
pub(crate) fn number_value(n: f64) -> Value {
    // 2^53: every whole f64 below it converts to i64 exactly.
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// Which message part is being rendered; it decides the extra variables in scope.
#[derive(Debug)]
pub(crate) enum Mode {
    /// The inline `unsubscribe_url` template: sees `unsubscribe_token`.
    Unsubscribe(Value),
    /// The inline `to_name` template: no `unsubscribe_url` yet.
    ToName,
    /// Subject and bodies: `unsubscribe_url` when configured.
    Body(Option<Value>),
}

/// The root context of one render.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) run: Arc<RunValues>,
    pub(crate) index: Arc<Index>,
    pub(crate) row: Arc<Row>,
    pub(crate) mode: Mode,
}

impl Object for View {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        Some(match self.index.root.get(key)? {
            Slot::Column(i) => self.row.columns.get(*i)?.clone(),
            Slot::Donor => Value::from_object(DonorMap {
                index: self.index.clone(),
                row: self.row.clone(),
            }),
            Slot::Email => self.row.email.clone(),
            Slot::Segment => self.row.segment.clone(),
            Slot::Campaign => self.run.campaign.clone(),
            Slot::Today => self.run.today.clone(),
            Slot::UnsubscribeUrl => match &self.mode {
                Mode::Body(Some(url)) => url.clone(),
                _ => return None,
            },
            Slot::UnsubscribeToken => match &self.mode {
                Mode::Unsubscribe(token) => token.clone(),
                _ => return None,
            },
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = self
            .index
            .root
            .keys()
            .filter(|k| self.get_value_by_str(k).is_some())
            .map(|k| Value::from(k.as_str()))
            .collect();
        Enumerator::Values(keys)
    }
}

/// `donor`: every column by its exact header name, for names that are not identifiers.
#[derive(Debug)]
struct DonorMap {
    index: Arc<Index>,
    row: Arc<Row>,
}

impl Object for DonorMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.row.columns.get(*self.index.columns.get(key)?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.index
                .header
                .iter()
                .map(|h| Value::from(h.as_str()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_jiff_prints_them() {
        for (y, m, d) in [
            (2026, 1, 27),
            (1000, 12, 31),
            (9999, 2, 3),
            (999, 5, 6),
            (1, 1, 1),
        ] {
            let date = jiff::civil::date(y, m, d);
            assert_eq!(date_value(date).as_str(), Some(date.to_string().as_str()));
        }
    }
}
