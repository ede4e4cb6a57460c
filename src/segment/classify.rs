//! The classifying stage: what each row is, up to dedupe.
//!
//! Owns the verdict on a row: validating it (UTF-8, field count, the address, typed values,
//! read by [`crate::donor`] as `send` reads them), keying its address,
//! checking it against the suppression lists and finding the first segment whose rule
//! matches. A batch is classified on two workers at once (given cores to spare), each row's
//! verdict kept with its key for the router, and rejected rows are counted by kind for the summary. [`Classifier`] makes
//! the decision for one row; `--explain` uses its [`Classifier::classify`], which also
//! dedupes. It never dedupes a batch (its rows are assessed independently and the router
//! dedupes them in input order) and never writes anything.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use jiff::civil::Date;

use crate::campaign::Campaign;
use crate::csvio::{RawRecord, RecordBatch};
use crate::donor::{DonorReader, RowProblem};
use crate::email::{KeySet, RecipientKey};
use crate::rules::{Rule, Scratch, compile_rules};
use crate::schema::{Schema, TypedRow};
use crate::suppress::{Suppressed, Suppressions};

/// Where one row went.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// Failed validation.
    Rejected {
        /// Short kind used to group reasons ("email", "column total_given", ...).
        kind: String,
        /// The full reason.
        reason: String,
    },
    /// On a suppression list.
    Suppressed(Suppressed),
    /// Same address as an earlier valid row.
    Duplicate,
    /// The index of the first segment whose rule matched.
    Segment(usize),
    /// Matched no rule.
    Unmatched,
}

/// The per-row decision, shared by `segment` and `segment --explain` so both always agree.
pub(super) struct Classifier {
    reader: DonorReader,
    rules: Vec<Option<Rule>>,
    /// Shared between the classifiers of one run; lists can hold millions of addresses.
    suppressions: Arc<Suppressions>,
    seen: KeySet,
    typed: TypedRow,
    scratch: Scratch,
    /// The key of the last row whose address was valid.
    last_key: Option<RecipientKey>,
}

impl Classifier {
    /// Compiles the campaign's rules against the export's header.
    pub(super) fn new(
        campaign: &Campaign,
        donors: &Path,
        header: &[String],
        suppressions: Suppressions,
        as_of: Date,
    ) -> Result<Classifier> {
        let schema = Schema::new(header, &campaign.columns).map_err(|e| {
            anyhow!(
                "{} does not fit {}: {e}",
                donors.display(),
                campaign.path.display()
            )
        })?;
        let email_idx = match schema.column(&campaign.email_column) {
            Some(c) => c.index,
            None => {
                let close = schema.suggest(&campaign.email_column);
                let hint = if close.is_empty() {
                    String::new()
                } else {
                    format!(" Did you mean {}?", quoted_list(&close))
                };
                bail!(
                    "{} has no column {:?} for email addresses.{hint} Its columns are {}. Set email_column in the [campaign] table of {}.",
                    donors.display(),
                    campaign.email_column,
                    quoted_list(&header.iter().map(String::as_str).collect::<Vec<_>>()),
                    campaign.path.display()
                )
            }
        };
        let rules =
            compile_rules(campaign, &schema, as_of).map_err(|p| anyhow!("{}", p.join("\n")))?;
        Ok(Classifier {
            reader: DonorReader::new(schema, email_idx, &campaign.email_column),
            rules,
            suppressions: Arc::new(suppressions),
            seen: KeySet::default(),
            typed: TypedRow::default(),
            scratch: Scratch::default(),
            last_key: None,
        })
    }

    /// A second classifier for the same run, to classify rows on another thread; it shares
    /// the suppression lists and starts with no addresses seen.
    pub(super) fn twin(&self) -> Classifier {
        Classifier {
            reader: self.reader.clone(),
            rules: self.rules.clone(),
            suppressions: Arc::clone(&self.suppressions),
            seen: KeySet::default(),
            typed: TypedRow::default(),
            scratch: Scratch::default(),
            last_key: None,
        }
    }

    /// Decides where a data row goes, remembering its address for later duplicates.
    pub(super) fn classify(&mut self, rec: &RawRecord<'_>) -> Outcome {
        let outcome = self.assess(rec);
        match (&outcome, self.last_key) {
            (Outcome::Segment(_) | Outcome::Unmatched, Some(key)) if !self.seen.insert(key) => {
                Outcome::Duplicate
            }
            _ => outcome,
        }
    }

    /// Everything [`Classifier::classify`] decides except duplicates: `Segment` and
    /// `Unmatched` mean "valid and not suppressed", and the caller dedupes them by
    /// [`Classifier::last_key`] in input order. Lets dedupe run on another thread.
    pub(super) fn assess(&mut self, rec: &RawRecord<'_>) -> Outcome {
        self.last_key = None;
        let fields = match self.reader.fields(rec) {
            Ok(f) => f,
            Err(p) => return p.into(),
        };
        let addr = match self.reader.address(&fields) {
            Ok(a) => a,
            Err(p) => return p.into(),
        };
        let key = addr.key();
        // Remembered before the value checks so `--explain` finds rows rejected for values.
        self.last_key = Some(key);
        if let Err(p) = self.reader.typed(&fields, &mut self.typed) {
            return p.into();
        }
        if let Some(s) = self.suppressions.check(&addr, key) {
            return Outcome::Suppressed(s);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let hit = match rule {
                None => true,
                Some(r) => r.matches(&fields, &self.typed, &mut self.scratch),
            };
            if hit {
                return Outcome::Segment(i);
            }
        }
        Outcome::Unmatched
    }

    /// The key of the address on the row last classified, if it was valid.
    pub(super) fn last_key(&self) -> Option<RecipientKey> {
        self.last_key
    }

    /// Each rule's verdict on a row, with the values it looked at; `None` when the row does not
    /// get as far as the rules (bad structure or values).
    pub(super) fn explain_rules(&mut self, rec: &RawRecord<'_>) -> Option<Vec<String>> {
        let fields = self.reader.fields(rec).ok()?;
        self.reader.typed(&fields, &mut self.typed).ok()?;
        Some(
            self.rules
                .iter()
                .map(|r| match r {
                    None => "no rule: takes every donor who reaches it -> matched".to_owned(),
                    Some(r) => r.explain(&fields, &self.typed).to_string(),
                })
                .collect(),
        )
    }
}

impl From<RowProblem> for Outcome {
    fn from(p: RowProblem) -> Outcome {
        Outcome::Rejected {
            kind: p.kind,
            reason: p.reason,
        }
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What classification decided about a row; duplicates are the router's call.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pre {
    /// Failed validation; the reason is `Batch::reasons[i]`.
    Rejected(u32),
    /// On a suppression list.
    Suppressed(Suppressed),
    /// Valid and not suppressed: the first matching segment (`None`: unmatched), subject to
    /// dedupe by key.
    Valid {
        key: RecipientKey,
        segment: Option<u32>,
    },
}

/// A run of consecutive input rows and what classification decided about each.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) records: RecordBatch,
    pub(super) pres: Vec<Pre>,
    /// Each rejected row's kind (for the summary) and reason (for the dropped file).
    pub(super) reasons: Vec<(String, String)>,
}

impl Batch {
    pub(super) fn clear(&mut self) {
        self.records.clear();
        self.pres.clear();
        self.reasons.clear();
    }

    /// Classifies every row, the first half with `classifiers.0` and the second with
    /// `classifiers.1`, at the same time on two rayon workers when `split`: classification is
    /// most of the parsing side's work, and rows are independent until dedupe, which the
    /// router does in input order.
    pub(super) fn classify(&mut self, classifiers: &mut (Classifier, Classifier), split: bool) {
        let n = self.records.len();
        let half = n / 2;
        self.pres.clear();
        self.pres.resize(n, Pre::Rejected(0));
        let (first, second) = self.pres.split_at_mut(half);
        let records = &self.records;
        let (c0, c1) = (&mut classifiers.0, &mut classifiers.1);
        let (mut r0, r1) = if split {
            rayon::join(
                || classify_rows(c0, records, 0, first),
                || classify_rows(c1, records, half, second),
            )
        } else {
            (
                classify_rows(c0, records, 0, first),
                classify_rows(c1, records, half, second),
            )
        };
        let offset = r0.len() as u32;
        for p in second.iter_mut() {
            if let Pre::Rejected(r) = p {
                *r += offset;
            }
        }
        r0.extend(r1);
        self.reasons = r0;
    }
}

/// Classifies records `from..from + out.len()` into `out`; returns the rejected rows' kinds
/// and reasons, which `Pre::Rejected` indexes.
fn classify_rows(
    c: &mut Classifier,
    records: &RecordBatch,
    from: usize,
    out: &mut [Pre],
) -> Vec<(String, String)> {
    let mut reasons = Vec::new();
    let records = records.checked(from..from + out.len());
    for (i, slot) in out.iter_mut().enumerate() {
        let outcome = c.assess(&records.get(from + i));
        *slot = match (outcome, c.last_key()) {
            (Outcome::Segment(i), Some(key)) => Pre::Valid {
                key,
                segment: Some(i as u32),
            },
            (Outcome::Unmatched, Some(key)) => Pre::Valid { key, segment: None },
            (Outcome::Suppressed(s), _) => Pre::Suppressed(s),
            (Outcome::Rejected { kind, reason }, _) => {
                reasons.push((kind, reason));
                Pre::Rejected(reasons.len() as u32 - 1)
            }
            // A valid row always has a key, and `assess` leaves duplicates to the router.
            (o, _) => unreachable!("assess returned {o:?} without a key"),
        };
    }
    reasons
}

/// Rejected rows counted by kind, for the summary when there are too many.
#[derive(Default)]
pub(super) struct Rejections {
    pub(super) rejected: u64,
    /// Kind -> (rows, first line, first reason).
    pub(super) kinds: HashMap<String, (u64, u64, String)>,
}

impl Rejections {
    pub(super) fn count(&mut self, batch: &Batch) {
        for (i, pre) in batch.pres.iter().enumerate() {
            if let Pre::Rejected(r) = pre {
                let (kind, reason) = &batch.reasons[*r as usize];
                self.rejected += 1;
                let e = self
                    .kinds
                    .entry(kind.clone())
                    .or_insert_with(|| (0, batch.records.line(i), reason.clone()));
                e.0 += 1;
            }
        }
    }
}
