//! The per-donor context templates render against.
//!
//! Owns the mapping from variable names to a donor's values, built once per schema
//! ([`Index`]) so that each render only converts the row's cells ([`Row`]). Never renders and
//! never decides which template a donor gets.

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Value};

use crate::schema::{Schema, Typed};

use super::Donor;

/// Names the engine provides besides the columns. `email` is special: a column of that name
/// wins, because a donor file with an `email` column means exactly that address.
pub(crate) const BUILTINS: [&str; 5] = ["donor", "segment", "campaign", "today", "email"];

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
    root: HashMap<String, Slot>,
    columns: HashMap<String, usize>,
}

impl Index {
    pub(crate) fn new(schema: &Schema) -> Index {
        let header: Vec<String> = schema.columns().iter().map(|c| c.name.clone()).collect();
        let columns: HashMap<String, usize> = header
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut root: HashMap<String, Slot> = columns
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
        Typed::Date(d) => Value::from(d.to_string()),
        Typed::Bool(b) => Value::from(b),
    }
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
