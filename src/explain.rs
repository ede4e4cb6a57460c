//! `campaign explain RUN EMAIL`: what happened to one donor in a run, from the run itself.
//!
//! Owns that report: `segment --explain` over the inputs the run's manifest records (the
//! export and its delimiter, campaign file, suppression lists and as-of date, so it cannot
//! disagree with the run by being given other ones), which suppression list and line dropped
//! the donor, and the donor's records in the ledger and its feedback file. It never writes
//! anything.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};

use crate::campaign::Campaign;
use crate::digest;
use crate::email::{Address, normalise};
use crate::ledger;
use crate::manifest::Manifest;
use crate::segment::{self, SegmentOptions};
use crate::suppress::Suppressions;

/// The report for `email` in the run at `dir`.
pub fn explain(dir: &Path, email: &str) -> Result<String> {
    let m = Manifest::load(dir)?;
    let addr = Address::parse(email).map_err(|e| anyhow!("{email:?} is not an address: {e}"))?;
    let key = addr.key();
    let mut out = String::new();
    // The inputs as recorded; each one changed since is said, as the verdict may differ.
    let donors = PathBuf::from(&m.input.path);
    let campaign_path = PathBuf::from(&m.campaign_file.path);
    let lists: Vec<PathBuf> = m
        .suppression_files
        .iter()
        .map(|f| PathBuf::from(&f.path))
        .collect();
    let mut changed = Vec::new();
    if digest::sha256_file(&donors).ok().as_deref() != Some(m.input.sha256.as_str()) {
        changed.push(donors.display().to_string());
    }
    if digest::sha256_file(&campaign_path).ok().as_deref() != Some(m.campaign_file.sha256.as_str())
    {
        changed.push(campaign_path.display().to_string());
    }
    for f in &m.suppression_files {
        if crate::suppress::sha256_of(Path::new(&f.path))
            .ok()
            .as_deref()
            != Some(f.sha256.as_str())
        {
            changed.push(f.path.clone());
        }
    }
    if !changed.is_empty() {
        let _ = writeln!(
            out,
            "note: changed (or gone) since the run was made, so this may not be what segment decided: {}",
            changed.join(", ")
        );
    }
    let campaign = Campaign::load(&campaign_path)
        .with_context(|| "reading the campaign file the run's manifest records".to_string())?;
    let opts = SegmentOptions {
        donors,
        // As the run read it, and given rather than guessed: the run was made from this
        // header, so it is not second-guessed.
        delimiter: Some(m.input.delimiter),
        campaign,
        suppress: lists.clone(),
        out: dir.to_owned(),
        chunk_size: m.chunk_size.max(1) as usize,
        as_of: m
            .as_of
            .parse()
            .map_err(|_| anyhow!("the manifest's as_of {:?} is not a date", m.as_of))?,
        force: false,
        max_reject_rate: 1.0,
        now: jiff::Timestamp::now(),
    };
    let verdict = segment::explain(&opts, email).map_err(|e| anyhow!("{e}"))?;
    out.push_str(&verdict);
    if verdict.contains("dropped: suppressed") {
        for (path, line) in suppressed_by(&lists, &addr)? {
            let _ = match line {
                Some(l) => writeln!(out, "  suppressed by {}:{l}", path.display()),
                None => writeln!(
                    out,
                    "  suppressed by {} (a run that sent, or may have sent, to them)",
                    path.display()
                ),
            };
        }
    }
    // The ledger: the donor's chunk is the one whose records name the key.
    let mut history = String::new();
    for seg in &m.segments {
        for chunk in &seg.chunks {
            for line in ledger::history(dir, &chunk.file, key)? {
                let _ = writeln!(history, "  {}: {line}", chunk.file);
            }
        }
    }
    if history.is_empty() {
        let _ = writeln!(
            out,
            "ledger: no record of {} (not attempted yet)",
            normalise(&addr)
        );
    } else {
        let _ = writeln!(out, "ledger:\n{history}");
    }
    Ok(out)
}

/// Which lists, and which line of each, suppress `addr`.
fn suppressed_by(lists: &[PathBuf], addr: &Address<'_>) -> Result<Vec<(PathBuf, Option<u64>)>> {
    let mut found = Vec::new();
    for p in lists {
        if Suppressions::load(std::slice::from_ref(p))?
            .check(addr, addr.key())
            .is_none()
        {
            continue;
        }
        let line = if p.join(crate::rundir::MANIFEST).is_file() {
            None
        } else {
            Suppressions::line_of(p, addr)?
        };
        found.push((p.clone(), line));
    }
    Ok(found)
}
