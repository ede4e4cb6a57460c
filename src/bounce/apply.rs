//! Acting on what was read: the suppression list gets every address that must not be mailed
//! again, and, given a run, each donor's chunk gets a feedback record.
//!
//! Owns matching a report to a run's donor (VERP key, then the original Message-ID, then the
//! address) and appending to the list (de-duplicated, synced before success is reported).
//! It never rewrites the list, never writes the ledger file itself (only the chunks'
//! feedback files, through [`crate::ledger::record_feedback`]), and never suppresses on a
//! temporary failure.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};
use jiff::Timestamp;

use super::{Outcome, Reading};
use crate::email::{Address, RecipientKey, normalise};
use crate::ledger::{self, ChunkStates, FeedbackKind, Session};
use crate::manifest::Manifest;
use crate::run;
use crate::server::SuppressionList;

/// A run to record feedback in: its directory and manifest (its campaign file is not
/// needed, so a mail host can hold the run without the templates).
pub struct Run<'a> {
    /// The run directory.
    pub dir: &'a Path,
    /// Its manifest.
    pub manifest: &'a Manifest,
}

/// What acting on the readings did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Applied {
    /// Addresses appended to the list.
    pub added: usize,
    /// Addresses that were on the list already.
    pub already_listed: usize,
    /// Feedback records written to the run's chunks.
    pub recorded: usize,
    /// Reports about a donor who is not in the run (or was never sent to by it).
    pub not_in_run: usize,
    /// Reports that name no address and match no donor: nothing could be suppressed.
    pub unmatched: usize,
}

/// A recipient that suppresses, with what is known of it.
struct Wanted<'r> {
    address: Option<String>,
    key: Option<RecipientKey>,
    kind: FeedbackKind,
    status: Option<&'r str>,
    diagnostic: &'r str,
}

/// Appends the suppressing recipients of `readings` to `out` and, with `run`, records them
/// in the run's feedback files.
pub fn apply(
    readings: &[Reading],
    out: &Path,
    run: Option<&Run<'_>>,
    now: Timestamp,
) -> Result<Applied> {
    let mut applied = Applied::default();
    let campaign = run.map(|r| r.manifest.campaign_id.as_str());
    let mut wanted: Vec<Wanted<'_>> = Vec::new();
    for r in readings {
        let suppressing: Vec<_> = r
            .recipients
            .iter()
            .filter(|x| x.outcome.suppresses())
            .collect();
        // The run's own message, when the report returns exactly one.
        let original = r
            .verp
            .or_else(|| {
                let ours: Vec<RecipientKey> = r
                    .originals
                    .iter()
                    .filter(|(c, _)| Some(c.as_str()) == campaign)
                    .map(|(_, k)| *k)
                    .collect();
                (ours.len() == 1).then(|| ours[0])
            })
            .filter(|_| suppressing.len() == 1);
        for x in suppressing {
            let by_address = x
                .address
                .as_deref()
                .and_then(|a| Address::parse(a).ok().map(|p| p.key()));
            wanted.push(Wanted {
                address: x.address.clone(),
                key: original.or(by_address),
                kind: match x.outcome {
                    Outcome::Complaint => FeedbackKind::Complaint,
                    Outcome::Unsubscribe => FeedbackKind::Unsubscribe,
                    _ => FeedbackKind::Bounce,
                },
                status: x.status.as_deref(),
                diagnostic: &x.diagnostic,
            });
        }
    }
    if let Some(run) = run {
        record(run, &mut wanted, &mut applied, now)?;
    }
    let mut addresses = BTreeSet::new();
    for w in &wanted {
        match &w.address {
            Some(a) => {
                addresses.insert(a.clone());
            }
            None => applied.unmatched += 1,
        }
    }
    let (added, already) = append(out, &addresses)?;
    applied.added = added;
    applied.already_listed = already;
    Ok(applied)
}

/// Finds each wanted donor's chunk, fills in addresses the report hid, and writes the
/// feedback records, one append per chunk.
fn record(
    run: &Run<'_>,
    wanted: &mut [Wanted<'_>],
    applied: &mut Applied,
    now: Timestamp,
) -> Result<()> {
    let mut open: HashSet<RecipientKey> = wanted.iter().filter_map(|w| w.key).collect();
    let mut chunk_of: HashMap<RecipientKey, (usize, usize)> = HashMap::new();
    'chunks: for (s, seg) in run.manifest.segments.iter().enumerate() {
        for (c, chunk) in seg.chunks.iter().enumerate() {
            if open.is_empty() {
                break 'chunks;
            }
            let states = ChunkStates::read(run.dir, &chunk.file)?;
            open.retain(|k| {
                let sent = states.get(*k).is_some();
                if sent {
                    chunk_of.insert(*k, (s, c));
                }
                !sent
            });
        }
    }
    // Addresses for reports that hid them, from the chunks.
    let mut hidden: HashMap<(usize, usize), Vec<RecipientKey>> = HashMap::new();
    for w in wanted.iter().filter(|w| w.address.is_none()) {
        if let Some(k) = w.key
            && let Some(at) = chunk_of.get(&k)
        {
            hidden.entry(*at).or_default().push(k);
        }
    }
    let addresses = run::Addresses::new(run.manifest);
    let mut found: HashMap<RecipientKey, String> = HashMap::new();
    for ((s, c), keys) in &hidden {
        let Some(addresses) = &addresses else { break };
        let bytes = run::read_chunk(run.dir, &run.manifest.segments[*s].chunks[*c])?;
        run::for_each_row(&bytes, |rec| {
            if let Some((key, email)) = addresses.key_of(rec)
                && keys.contains(&key)
            {
                found.insert(key, email);
            }
            Ok(())
        })?;
    }
    let mut by_chunk: HashMap<(usize, usize), Vec<ledger::Report<'_>>> = HashMap::new();
    for w in wanted.iter_mut() {
        let Some(key) = w.key else { continue };
        let Some(at) = chunk_of.get(&key) else {
            applied.not_in_run += 1;
            continue;
        };
        if w.address.is_none() {
            w.address = found.get(&key).cloned();
        }
        by_chunk.entry(*at).or_default().push(ledger::Report {
            key,
            kind: w.kind,
            status: w.status,
            text: w.diagnostic,
        });
    }
    let session = Session::new(now);
    let mut chunks: Vec<_> = by_chunk.into_iter().collect();
    chunks.sort_by_key(|(at, _)| *at);
    for ((s, c), reports) in chunks {
        let file = &run.manifest.segments[s].chunks[c].file;
        ledger::record_feedback(run.dir, file, &session, &reports, now)?;
        applied.recorded += reports.len();
    }
    Ok(())
}

/// Appends the addresses not yet in `out` with one write and syncs it; returns (added, already
/// there). A new file starts with a comment saying what it is.
fn append(out: &Path, addresses: &BTreeSet<String>) -> Result<(usize, usize)> {
    let existing = match fs::read(out) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    let listed: HashSet<String> = existing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            Address::parse(l)
                .map(|a| normalise(&a))
                .unwrap_or_else(|_| l.to_ascii_lowercase())
        })
        .collect();
    let new: Vec<&str> = addresses
        .iter()
        .filter(|a| !listed.contains(*a))
        .map(String::as_str)
        .collect();
    let already = addresses.len() - new.len();
    if new.is_empty() {
        return Ok((0, already));
    }
    SuppressionList::open(out)
        .and_then(|list| list.append_all(&new, Some(LIST_HEADER)))
        .map_err(anyhow::Error::new)?;
    Ok((new.len(), already))
}

/// The first line of a list `campaign bounces` creates.
const LIST_HEADER: &str = "# Bounced, complained or unsubscribed: written by `campaign bounces`; pass to `campaign segment --suppress` and `campaign send --suppress`.";
