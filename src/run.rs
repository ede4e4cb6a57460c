//! An opened run directory: what `send`, its dry run and the reports read from a run.
//!
//! Owns opening a run (its manifest, and the campaign file the manifest names or the one
//! `--campaign` gives, with the warnings worth telling the operator), choosing segments by
//! name, reading a chunk back with its SHA-256 check, walking a chunk's rows, and the
//! segment definitions as the manifest recorded them. It never writes into the run, never
//! renders or sends, and never reads the ledger.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::campaign::{Campaign, SegmentDef, SegmentName};
use crate::csvio::{RawReader, RawRecord};
use crate::manifest::{self, Manifest};

/// A run's manifest with the campaign file that goes with it.
pub struct OpenedRun {
    dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The campaign file (from the manifest, or the override).
    pub campaign: Campaign,
    /// Things worth telling the operator before work starts.
    pub warnings: Vec<String>,
}

/// Indexes of the manifest's segments chosen for this command, in run order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection(Vec<usize>);

impl Selection {
    /// Every segment of `manifest`.
    pub fn all(manifest: &Manifest) -> Selection {
        Selection((0..manifest.segments.len()).collect())
    }

    /// The segment indexes, in run order.
    pub fn indexes(&self) -> &[usize] {
        &self.0
    }

    /// Donors in the selected segments, at most `limit`: the size of a progress bar.
    pub fn planned_rows(&self, manifest: &Manifest, limit: Option<u64>) -> u64 {
        let total: u64 = self.0.iter().map(|&s| manifest.segments[s].rows).sum();
        limit.map_or(total, |l| l.min(total))
    }
}

impl OpenedRun {
    /// Reads a run's manifest and its campaign file: the one recorded in the manifest, or
    /// `campaign_override`. Refuses a campaign file of another campaign.
    pub fn open(dir: &Path, campaign_override: Option<&Path>) -> Result<OpenedRun> {
        let manifest = Manifest::load(dir)?;
        let path = campaign_override
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(&manifest.campaign_file.path));
        let campaign = Campaign::load(&path).with_context(|| {
            if campaign_override.is_none() {
                "the run's manifest names this campaign file; pass --campaign FILE if it moved"
                    .to_string()
            } else {
                "reading --campaign".to_string()
            }
        })?;
        let mut warnings = Vec::new();
        // Hashed the way `segment` recorded it, so the comparison means what it says.
        if let Ok(sha) = crate::digest::sha256_file(&path)
            && sha != manifest.campaign_file.sha256
        {
            warnings.push(format!(
                "{} changed since this run was segmented; changed rules or segments do not apply until you segment again (templates and [message] changes do apply)",
                path.display()
            ));
        }
        if campaign.id.as_str() != manifest.campaign_id {
            bail!(
                "{} is campaign {:?} but the run is campaign {:?}; pass the campaign file the run was made with",
                path.display(),
                campaign.id.as_str(),
                manifest.campaign_id
            );
        }
        Ok(OpenedRun {
            dir: dir.to_owned(),
            manifest,
            campaign,
            warnings,
        })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segments `names` selects (all when empty); an unknown name is an error listing
    /// the run's segments.
    pub fn select(&self, names: &[String]) -> Result<Selection> {
        select(&self.manifest, names)
    }

    /// Reads a chunk file and checks it is the one `segment` wrote.
    pub fn read_chunk(&self, chunk: &manifest::Chunk) -> Result<Vec<u8>> {
        read_chunk(&self.dir, chunk)
    }

    /// The segments as the manifest records them (names and templates are fixed when a run
    /// is segmented; the campaign file may have changed since).
    pub fn segment_defs(&self) -> Result<Vec<SegmentDef>> {
        self.manifest
            .segments
            .iter()
            .map(|s| {
                Ok(SegmentDef {
                    name: SegmentName::new(&s.name).map_err(|e| anyhow!("manifest: {e}"))?,
                    when: s.rule.clone(),
                    template: s.template.clone(),
                })
            })
            .collect()
    }
}

/// The segments of `manifest` that `names` selects (all when empty).
pub fn select(manifest: &Manifest, names: &[String]) -> Result<Selection> {
    if names.is_empty() {
        return Ok(Selection::all(manifest));
    }
    names
        .iter()
        .map(|n| {
            manifest
                .segments
                .iter()
                .position(|s| &s.name == n)
                .ok_or_else(|| {
                    anyhow!(
                        "--segment {n:?}: the run has no such segment; it has {}",
                        manifest
                            .segments
                            .iter()
                            .map(|s| format!("{:?}", s.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect::<Result<_>>()
        .map(Selection)
}

/// Reads the address of a chunk row, with nothing but the manifest: for the report files
/// and `campaign bounces`, which need no templates. The same parse as a donor reader's.
pub struct Addresses {
    column: usize,
}

impl Addresses {
    /// The reader for `manifest`'s chunks; `None` if its header lacks the email column (a
    /// damaged manifest).
    pub fn new(manifest: &manifest::Manifest) -> Option<Addresses> {
        manifest
            .header
            .iter()
            .position(|h| *h == manifest.email_column)
            .map(|column| Addresses { column })
    }

    /// The row's recipient key and normalised address; `None` when it does not read.
    pub fn key_of(&self, rec: &RawRecord<'_>) -> Option<(crate::email::RecipientKey, String)> {
        let fields = rec.fields().ok()?;
        if self.column >= fields.len() {
            return None;
        }
        let a = crate::email::Address::parse(fields.get(self.column)).ok()?;
        Some((a.key(), crate::email::normalise(&a)))
    }
}

/// Reads the chunk file of `run` and checks it against the manifest's SHA-256.
pub fn read_chunk(run: &Path, chunk: &manifest::Chunk) -> Result<Vec<u8>> {
    let path = run.join(&chunk.file);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let sha = crate::digest::sha256_hex(&bytes);
    if sha != chunk.sha256 {
        bail!(
            "{} has changed since `campaign segment` wrote it (SHA-256 differs from the manifest): it was edited, or lost data in a crash. Chunks must not be edited; segment again (with --force if nothing was sent yet)",
            path.display()
        );
    }
    Ok(bytes)
}

/// Checks a chunk held the rows the manifest says, once they are counted (before anything is
/// sent from them): the hash covers the chunk, not the manifest's counts.
pub fn check_rows(run: &Path, chunk: &manifest::Chunk, counted: u64) -> Result<()> {
    if counted != chunk.rows {
        bail!(
            "{} has {counted} donor rows but {} says {}: the manifest was edited or damaged; segment the export again",
            run.join(&chunk.file).display(),
            run.join(crate::rundir::MANIFEST).display(),
            chunk.rows
        );
    }
    Ok(())
}

/// Calls `each` for every data row of a chunk (the header is skipped), with the row's line in
/// the chunk file.
pub fn for_each_row(
    bytes: &[u8],
    mut each: impl FnMut(&RawRecord<'_>) -> Result<()>,
) -> Result<()> {
    let mut rdr = RawReader::new(bytes);
    if rdr.next_record()?.is_none() {
        return Ok(());
    }
    while let Some(rec) = rdr.next_record()? {
        each(&rec)?;
    }
    Ok(())
}
