//! `segment --explain EMAIL`: where every row with one address goes, and why.
//!
//! Owns that report: each matching row's fate and each rule's verdict on it with the values it
//! compared, decided by the same [`Classifier`](super::classify::Classifier) `segment` uses,
//! so the two always agree. It never writes a file and never starts the pipeline's threads.

use anyhow::anyhow;

use super::classify::Outcome;
use super::{Input, SegmentError, SegmentOptions, csv_error, open_input};
use crate::email::Address;

/// `segment --explain EMAIL`: where every row with this address goes and why, each rule's
/// verdict on it with the values it compared. Writes nothing.
pub fn explain(opts: &SegmentOptions, email: &str) -> Result<String, SegmentError> {
    use std::fmt::Write as _;
    let target = Address::parse(email)
        .map_err(|e| SegmentError::Config(anyhow!("--explain {email:?} is not an address: {e}")))?
        .key();
    let Input {
        mut rdr,
        mut classifier,
        ..
    } = open_input(opts)?;
    let mut out = String::new();
    let mut first_line = None;
    while let Some(rec) = rdr
        .next_record()
        .map_err(|e| SegmentError::Other(csv_error(&opts.donors, e)))?
    {
        let outcome = classifier.classify(&rec);
        if classifier.last_key() != Some(target) {
            continue;
        }
        let verdict = match &outcome {
            Outcome::Segment(i) => format!(
                "goes to segment {:?}",
                opts.campaign.segments[*i].name.as_str()
            ),
            Outcome::Unmatched => "matches no segment (written to dropped/unmatched.csv)".into(),
            Outcome::Duplicate => format!(
                "dropped as a duplicate of line {}",
                first_line.unwrap_or_default()
            ),
            Outcome::Suppressed(s) => format!("dropped: {}", s.reason()),
            Outcome::Rejected { reason, .. } => format!("rejected: {reason}"),
        };
        let _ = writeln!(out, "line {}: {verdict}", rec.line);
        if first_line.is_none() && !matches!(outcome, Outcome::Rejected { .. }) {
            first_line = Some(rec.line);
        }
        if let Some(verdicts) = classifier.explain_rules(&rec) {
            let note = match outcome {
                Outcome::Segment(_) | Outcome::Unmatched => "",
                _ => " (not applied, the row was dropped first)",
            };
            let _ = writeln!(out, "  rules in order, first match wins{note}:");
            let winner = match outcome {
                Outcome::Segment(i) => i,
                _ => usize::MAX,
            };
            for (i, (def, v)) in opts.campaign.segments.iter().zip(verdicts).enumerate() {
                let tag = match i.cmp(&winner) {
                    std::cmp::Ordering::Equal => " <- first match",
                    std::cmp::Ordering::Greater => " (not reached)",
                    std::cmp::Ordering::Less => "",
                };
                let _ = writeln!(out, "  segment {:?}{tag}:", def.name.as_str());
                for l in v.lines() {
                    let _ = writeln!(out, "    {l}");
                }
            }
        }
    }
    if out.is_empty() {
        return Err(SegmentError::Other(anyhow!(
            "no row of {} has the address {email:?} (compared case-insensitively)",
            opts.donors.display()
        )));
    }
    Ok(format!(
        "{email} in {} (as of {}):\n{out}",
        opts.donors.display(),
        opts.as_of
    ))
}
