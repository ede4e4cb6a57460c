//! `campaign send --dry-run`: render every message of a run, write previews, send nothing.
//!
//! Owns fanning a run's chunks out over a thread pool for rendering, the preview files
//! (`RUN/previews/<segment>/NNN.eml`) and the render-failures file
//! (`RUN/previews/failures.csv`: segment, chunk, line, email, reason). It never opens a
//! network connection and never touches the ledger. Rendering itself is [`crate::prepare`],
//! the same code a real send uses.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::campaign::Campaign;
use crate::manifest::Manifest;
use crate::prepare::{self, Preparer, Workspace};
use crate::unsubscribe::UnsubscribeSecret;

/// The directory of previews inside a run.
pub const PREVIEWS_DIR: &str = "previews";

/// A run's manifest with the campaign file that goes with it.
pub struct LoadedRun {
    /// The manifest.
    pub manifest: Manifest,
    /// The campaign file (from the manifest, or the override).
    pub campaign: Campaign,
    /// Things worth telling the operator.
    pub warnings: Vec<String>,
}

/// Reads a run's manifest and its campaign file: the one recorded in the manifest, or
/// `campaign_override`. Config errors (unreadable campaign) are returned as `Err`.
pub fn load_run(run: &Path, campaign_override: Option<&Path>) -> Result<LoadedRun> {
    let manifest = Manifest::load(run)?;
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
    if let Ok(sha) = crate::suppress::sha256_of(&path)
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
    Ok(LoadedRun {
        manifest,
        campaign,
        warnings,
    })
}

/// Reads the unsubscribe secret, or explains why a dry run carries placeholder tokens.
pub fn secret_or_warning(warnings: &mut Vec<String>) -> Result<Option<UnsubscribeSecret>> {
    match UnsubscribeSecret::from_env() {
        Ok(Some(s)) => Ok(Some(s)),
        Ok(None) => {
            warnings.push(format!(
                "{} is not set: unsubscribe links in previews carry a placeholder token; a real send needs the secret",
                UnsubscribeSecret::ENV
            ));
            Ok(None)
        }
        Err(e) => Err(anyhow!(e)),
    }
}

/// What to render.
#[derive(Debug, Clone)]
pub struct DryRunOptions {
    /// The run directory.
    pub run: PathBuf,
    /// Preview files per segment.
    pub previews: usize,
    /// Render at most this many messages (in run order).
    pub limit: Option<u64>,
    /// Only these segments (all when empty).
    pub segments: Vec<String>,
    /// Worker threads.
    pub concurrency: usize,
}

/// One segment's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentTally {
    /// The segment.
    pub segment: String,
    /// Messages that rendered.
    pub rendered: u64,
    /// Donors whose message could not be rendered.
    pub failed: u64,
    /// Preview files written.
    pub previews: u64,
}

/// The result of a dry run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRunReport {
    /// Per segment, in run order.
    pub segments: Vec<SegmentTally>,
    /// Total size of the rendered messages.
    pub bytes: u64,
    /// Where failures are listed.
    pub failures_file: PathBuf,
    /// Where previews are.
    pub previews_dir: PathBuf,
}

impl DryRunReport {
    /// Messages that failed to render, in all segments.
    pub fn failed(&self) -> u64 {
        self.segments.iter().map(|s| s.failed).sum()
    }

    /// Messages rendered, in all segments.
    pub fn rendered(&self) -> u64 {
        self.segments.iter().map(|s| s.rendered).sum()
    }
}

/// The indexes of the manifest's segments `names` selects (all when empty); an unknown name
/// is an error listing the run's segments.
pub fn select_segments(manifest: &Manifest, names: &[String]) -> Result<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..manifest.segments.len()).collect());
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
        .collect()
}

/// One chunk to render, with where its rows stand in the segment and in the run.
struct Job {
    seg: usize,
    chunk: usize,
    seg_offset: u64,
    run_offset: u64,
}

/// A donor whose message failed to render.
struct Failure {
    chunk: String,
    line: u64,
    email: String,
    reason: String,
}

struct JobResult {
    seg: usize,
    rendered: u64,
    previews: u64,
    bytes: u64,
    failures: Vec<Failure>,
}

/// The chunks of the selected segments in run order, cut at `limit` messages.
fn plan(manifest: &Manifest, selected: &[usize], limit: Option<u64>) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut run_offset = 0;
    for &seg in selected {
        let mut seg_offset = 0;
        for (chunk, c) in manifest.segments[seg].chunks.iter().enumerate() {
            if limit.is_some_and(|l| run_offset >= l) {
                return jobs;
            }
            jobs.push(Job {
                seg,
                chunk,
                seg_offset,
                run_offset,
            });
            seg_offset += c.rows;
            run_offset += c.rows;
        }
    }
    jobs
}

fn render_chunk(
    run: &Path,
    manifest: &Manifest,
    preparer: &Preparer,
    opts: &DryRunOptions,
    job: &Job,
    ws: &mut Workspace,
) -> Result<JobResult> {
    let segment = &manifest.segments[job.seg];
    let chunk = &segment.chunks[job.chunk];
    let bytes = prepare::read_chunk(run, chunk)?;
    let mut out = JobResult {
        seg: job.seg,
        rendered: 0,
        previews: 0,
        bytes: 0,
        failures: Vec::new(),
    };
    let preview_dir = run.join(PREVIEWS_DIR).join(&segment.name);
    let mut i = 0u64;
    prepare::for_each_row(&bytes, |rec| {
        let in_run = job.run_offset + i;
        let in_seg = job.seg_offset + i;
        i += 1;
        if opts.limit.is_some_and(|l| in_run >= l) {
            return Ok(());
        }
        match preparer.prepare(segment, rec, ws) {
            Ok(p) => {
                out.rendered += 1;
                out.bytes += p.bytes.len() as u64;
                if (in_seg as usize) < opts.previews {
                    let path = preview_dir.join(format!("{:03}.eml", in_seg + 1));
                    fs::write(&path, &p.bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    out.previews += 1;
                }
            }
            Err(e) => out.failures.push(Failure {
                chunk: chunk.file.clone(),
                line: rec.line,
                email: e.email,
                reason: e.reason,
            }),
        }
        Ok(())
    })?;
    Ok(out)
}

/// Renders the run's messages with `preparer`, writing previews and the failures file.
pub fn dry_run(
    manifest: &Manifest,
    preparer: &Preparer,
    opts: &DryRunOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<DryRunReport> {
    let run = &opts.run;
    let selected = select_segments(manifest, &opts.segments)?;
    let previews_dir = run.join(PREVIEWS_DIR);
    if previews_dir.exists() {
        fs::remove_dir_all(&previews_dir)
            .with_context(|| format!("clearing old previews in {}", previews_dir.display()))?;
    }
    for &s in &selected {
        let d = previews_dir.join(&manifest.segments[s].name);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let jobs = plan(manifest, &selected, opts.limit);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.concurrency.max(1))
        .thread_name(|i| format!("render-{i}"))
        .build()
        .context("starting the worker threads")?;
    let results: Vec<Result<JobResult>> = pool.install(|| {
        jobs.par_iter()
            .map_init(Workspace::default, |ws, job| {
                let r = render_chunk(run, manifest, preparer, opts, job, ws);
                if let (Some(pb), Ok(r)) = (progress, &r) {
                    pb.inc(r.rendered + r.failures.len() as u64);
                }
                r
            })
            .collect()
    });

    let mut tallies: Vec<SegmentTally> = selected
        .iter()
        .map(|&s| SegmentTally {
            segment: manifest.segments[s].name.clone(),
            rendered: 0,
            failed: 0,
            previews: 0,
        })
        .collect();
    let mut bytes = 0;
    let failures_file = previews_dir.join("failures.csv");
    let mut w = csv::Writer::from_path(&failures_file)
        .with_context(|| format!("creating {}", failures_file.display()))?;
    w.write_record(["segment", "chunk", "line", "email", "reason"])?;
    // Results come back in job order, so the failures file is in run order.
    for r in results {
        let r = r?;
        let t = tallies
            .iter_mut()
            .find(|t| t.segment == manifest.segments[r.seg].name)
            .ok_or_else(|| anyhow!("internal: result for an unselected segment"))?;
        t.rendered += r.rendered;
        t.failed += r.failures.len() as u64;
        t.previews += r.previews;
        bytes += r.bytes;
        for f in r.failures {
            w.write_record([
                t.segment.as_str(),
                &f.chunk,
                &f.line.to_string(),
                &f.email,
                &f.reason,
            ])?;
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", failures_file.display()))?;
    Ok(DryRunReport {
        segments: tallies,
        bytes,
        failures_file,
        previews_dir,
    })
}

/// The message one donor would get, for a quick look; searches the run for the address.
pub fn find_message(
    run: &Path,
    manifest: &Manifest,
    preparer: &Preparer,
    email: &str,
) -> Result<Vec<u8>> {
    let target = crate::email::Address::parse(email)
        .map_err(|e| anyhow!("{email:?} is not an address: {e}"))?
        .key();
    let mut ws = Workspace::default();
    for segment in &manifest.segments {
        for chunk in &segment.chunks {
            let bytes = prepare::read_chunk(run, chunk)?;
            let mut found: Option<Result<Vec<u8>>> = None;
            prepare::for_each_row(&bytes, |rec| {
                if found.is_some() {
                    return Ok(());
                }
                match preparer.prepare(segment, rec, &mut ws) {
                    Ok(p) if p.key == target => found = Some(Ok(p.bytes)),
                    Ok(_) => {}
                    Err(e) => {
                        let same =
                            crate::email::Address::parse(&e.email).is_ok_and(|a| a.key() == target);
                        if same {
                            found = Some(Err(anyhow!(
                                "{}:{}: the message for {email} cannot be rendered: {}",
                                chunk.file,
                                rec.line,
                                e.reason
                            )));
                        }
                    }
                }
                Ok(())
            })?;
            if let Some(r) = found {
                return r;
            }
        }
    }
    bail!(
        "no donor in this run has the address {email:?}; it may have been dropped by segment (see the run's dropped/ files)"
    )
}

/// Chunks in the manifest, for sizing a progress bar.
pub fn planned_rows(manifest: &Manifest, selected: &[usize], limit: Option<u64>) -> u64 {
    let total: u64 = selected.iter().map(|&s| manifest.segments[s].rows).sum();
    limit.map_or(total, |l| l.min(total))
}
