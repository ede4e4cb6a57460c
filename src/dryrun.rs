//! `campaign send --dry-run`: render every message of a run, write previews, send nothing.
//!
//! Owns fanning a run's chunks out over a thread pool for rendering, the preview files
//! (`RUN/previews/<segment>/NNN-<donor>.eml`, its HTML part beside it as `.html`, and
//! `edge-<kind>-<donor>` previews of the longest row, the first non-ASCII one and the first
//! with an empty name, which templates break on), `RUN/previews/index.html`, and the
//! render-failures file
//! (`RUN/previews/failures.csv`: segment, chunk, line, email, reason). It never opens a
//! network connection and never writes the ledger. Rendering itself is [`crate::prepare`],
//! the same code a real send uses; opening the run is [`crate::run`].

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::prepare::{Preparer, Workspace};
use crate::progress::{Event, Progress};
use crate::run::{self, OpenedRun, Selection};
use crate::rundir::{PREVIEWS_DIR, RENDER_FAILURES};
use crate::suppress::Suppressions;

/// What to render.
#[derive(Debug, Clone)]
pub struct DryRunOptions {
    /// Preview files per segment.
    pub previews: usize,
    /// Render at most this many messages (in run order).
    pub limit: Option<u64>,
    /// Worker threads.
    pub concurrency: usize,
    /// Lists given to `send --suppress`: their donors are counted, not rendered, as a send
    /// would skip them.
    pub suppressions: Option<std::sync::Arc<Suppressions>>,
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
    /// Donors whose address has non-ASCII characters before the @: they need a relay that
    /// offers SMTPUTF8, and wait (deferred) through one that does not.
    pub need_smtputf8: u64,
    /// Donors a list given to `send --suppress` stops: not rendered.
    pub suppressed: u64,
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
    /// Donors needing a relay with SMTPUTF8, in all segments.
    pub fn need_smtputf8(&self) -> u64 {
        self.segments.iter().map(|s| s.need_smtputf8).sum()
    }

    /// Messages that failed to render, in all segments.
    pub fn failed(&self) -> u64 {
        self.segments.iter().map(|s| s.failed).sum()
    }

    /// Messages rendered, in all segments.
    pub fn rendered(&self) -> u64 {
        self.segments.iter().map(|s| s.rendered).sum()
    }
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
    need_smtputf8: u64,
    suppressed: u64,
    bytes: u64,
    failures: Vec<Failure>,
    edges: Edges,
}

/// A rendered message kept as a candidate edge-case preview.
#[derive(Clone)]
struct Candidate {
    /// How it compares (the row's length, for the longest).
    size: usize,
    email: String,
    bytes: Vec<u8>,
}

/// Donors worth a preview beyond the first ones, because templates break on them: the
/// longest row, the first with non-ASCII text, the first with an empty name field.
#[derive(Default, Clone)]
struct Edges {
    longest: Option<Candidate>,
    non_ascii: Option<Candidate>,
    empty_name: Option<Candidate>,
}

impl Edges {
    /// Folds `later` (from a later chunk of the same segment) in.
    fn merge(&mut self, later: Edges) {
        if later.longest.as_ref().map(|c| c.size) > self.longest.as_ref().map(|c| c.size) {
            self.longest = later.longest;
        }
        self.non_ascii = self.non_ascii.take().or(later.non_ascii);
        self.empty_name = self.empty_name.take().or(later.empty_name);
    }
}

/// A file name part from an address: letters, digits, `.`, `-` and `_` only.
fn shell_safe(email: &str) -> String {
    email
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes a preview `stem.eml`, and `stem.html` when the message has an HTML part.
fn write_preview(dir: &std::path::Path, stem: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(format!("{stem}.eml"));
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    if let Some(html) = crate::message::view::html_part(bytes) {
        let path = dir.join(format!("{stem}.html"));
        fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The chunks of the selected segments in run order, cut at `limit` messages.
fn plan(run: &OpenedRun, selection: &Selection, limit: Option<u64>) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut run_offset = 0;
    for &seg in selection.indexes() {
        let mut seg_offset = 0;
        for (chunk, c) in run.manifest.segments[seg].chunks.iter().enumerate() {
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
    run: &OpenedRun,
    preparer: &Preparer,
    opts: &DryRunOptions,
    job: &Job,
    ws: &mut Workspace,
) -> Result<JobResult> {
    let segment = &run.manifest.segments[job.seg];
    let chunk = &segment.chunks[job.chunk];
    let bytes = run.read_chunk(chunk)?;
    let mut out = JobResult {
        seg: job.seg,
        rendered: 0,
        previews: 0,
        need_smtputf8: 0,
        suppressed: 0,
        bytes: 0,
        failures: Vec::new(),
        edges: Edges::default(),
    };
    let preview_dir = run.dir().join(PREVIEWS_DIR).join(&segment.name);
    let addresses = run::Addresses::new(&run.manifest);
    let name_columns: Vec<usize> = run
        .manifest
        .header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.to_ascii_lowercase().contains("name"))
        .map(|(i, _)| i)
        .collect();
    let mut i = 0u64;
    run::for_each_row(&bytes, |rec| {
        let in_run = job.run_offset + i;
        let in_seg = job.seg_offset + i;
        i += 1;
        if opts.limit.is_some_and(|l| in_run >= l) {
            return Ok(());
        }
        if let Some(list) = &opts.suppressions
            && preparer.suppressed(rec, list).is_some()
        {
            out.suppressed += 1;
            return Ok(());
        }
        match preparer.prepare(&segment.name, &segment.template, rec, ws) {
            Ok(p) => {
                out.rendered += 1;
                let to: &str = p.envelope.to().as_ref();
                out.need_smtputf8 += u64::from(!to.is_ascii());
                out.bytes += p.bytes.len() as u64;
                // Only the previewed donors' addresses are read, off the hot path.
                let email = || {
                    addresses
                        .as_ref()
                        .and_then(|a| a.key_of(rec))
                        .map(|(_, email)| email)
                        .unwrap_or_default()
                };
                if (in_seg as usize) < opts.previews {
                    let stem = format!("{:03}-{}", in_seg + 1, shell_safe(&email()));
                    write_preview(&preview_dir, &stem, &p.bytes)?;
                    out.previews += 1;
                }
                if opts.previews > 0 {
                    let candidate = || Candidate {
                        size: rec.raw.len(),
                        email: email(),
                        bytes: p.bytes.clone(),
                    };
                    let e = &mut out.edges;
                    if e.longest.as_ref().is_none_or(|c| rec.raw.len() > c.size) {
                        e.longest = Some(candidate());
                    }
                    if e.non_ascii.is_none() && !rec.raw.is_ascii() {
                        e.non_ascii = Some(candidate());
                    }
                    // A row without an empty field has none of these; most rows skip the parse.
                    let may_be_empty = rec.raw.first() == Some(&b',')
                        || rec.raw.last() == Some(&b',')
                        || memchr::memmem::find(rec.raw, b",,").is_some()
                        || memchr::memmem::find(rec.raw, b",\"\"").is_some();
                    if e.empty_name.is_none()
                        && may_be_empty
                        && rec.fields().is_ok_and(|f| {
                            name_columns
                                .iter()
                                .any(|&c| c < f.len() && f.get(c).trim().is_empty())
                        })
                    {
                        e.empty_name = Some(candidate());
                    }
                }
                ws.recycle(p.bytes);
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
    run::check_rows(run.dir(), chunk, i)?;
    Ok(out)
}

/// Renders the run's messages with `preparer`, writing previews and the failures file.
pub fn dry_run(
    run: &OpenedRun,
    selection: &Selection,
    preparer: &Preparer,
    opts: &DryRunOptions,
    progress: &dyn Progress,
) -> Result<DryRunReport> {
    let manifest = &run.manifest;
    let previews_dir = run.dir().join(PREVIEWS_DIR);
    if previews_dir.exists() {
        fs::remove_dir_all(&previews_dir)
            .with_context(|| format!("clearing old previews in {}", previews_dir.display()))?;
    }
    for &s in selection.indexes() {
        let d = previews_dir.join(&manifest.segments[s].name);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let jobs = plan(run, selection, opts.limit);
    let pool = rayon::ThreadPoolBuilder::new()
        // More threads than chunks would have nothing to do.
        .num_threads(opts.concurrency.clamp(1, jobs.len().max(1)))
        .thread_name(|i| format!("render-{i}"))
        .build()
        .context("starting the worker threads")?;
    // One workspace per thread for the whole run, not one per batch of jobs as `map_init`
    // would make: a workspace's encoded lines pay off over many messages.
    let spaces: Vec<Mutex<Workspace>> = (0..pool.current_num_threads())
        .map(|_| Mutex::default())
        .collect();
    let results: Vec<Result<JobResult>> = pool.install(|| {
        jobs.par_iter()
            .map(|job| {
                let thread = rayon::current_thread_index().unwrap_or(0);
                let mut ws = spaces[thread % spaces.len()]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let r = render_chunk(run, preparer, opts, job, &mut ws);
                if let Ok(r) = &r {
                    progress.event(Event::Handled {
                        segment: r.seg,
                        donors: r.rendered + r.suppressed + r.failures.len() as u64,
                    });
                }
                r
            })
            .collect()
    });

    let mut tallies: Vec<SegmentTally> = selection
        .indexes()
        .iter()
        .map(|&s| SegmentTally {
            segment: manifest.segments[s].name.clone(),
            rendered: 0,
            failed: 0,
            previews: 0,
            need_smtputf8: 0,
            suppressed: 0,
        })
        .collect();
    let mut bytes = 0;
    let failures_file = previews_dir.join(RENDER_FAILURES);
    let mut w = csv::Writer::from_path(&failures_file)
        .with_context(|| format!("creating {}", failures_file.display()))?;
    w.write_record(["segment", "chunk", "line", "email", "reason"])?;
    let mut edges: std::collections::BTreeMap<usize, Edges> = Default::default();
    // Results come back in job order, so the failures file is in run order.
    for r in results {
        let mut r = r?;
        edges
            .entry(r.seg)
            .or_default()
            .merge(std::mem::take(&mut r.edges));
        let t = tallies
            .iter_mut()
            .find(|t| t.segment == manifest.segments[r.seg].name)
            .ok_or_else(|| anyhow!("internal: result for an unselected segment"))?;
        t.rendered += r.rendered;
        t.failed += r.failures.len() as u64;
        t.previews += r.previews;
        t.need_smtputf8 += r.need_smtputf8;
        t.suppressed += r.suppressed;
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
    for (seg, e) in edges {
        let dir = previews_dir.join(&manifest.segments[seg].name);
        for (kind, c) in [
            ("longest", e.longest),
            ("non-ascii", e.non_ascii),
            ("empty-name", e.empty_name),
        ] {
            if let Some(c) = c {
                write_preview(
                    &dir,
                    &format!("edge-{kind}-{}", shell_safe(&c.email)),
                    &c.bytes,
                )?;
            }
        }
    }
    write_index(&previews_dir, manifest, selection)?;
    Ok(DryRunReport {
        segments: tallies,
        bytes,
        failures_file,
        previews_dir,
    })
}

/// `previews/index.html`: a link to every preview's HTML (and its .eml), by segment, to read
/// in a browser.
fn write_index(
    previews: &std::path::Path,
    manifest: &crate::manifest::Manifest,
    selection: &Selection,
) -> Result<()> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Previews</title></head>\n<body style=\"font-family:sans-serif\">\n<h1>Previews</h1>\n<p>Open a message's HTML part; the .eml beside it is the whole message as sent.</p>\n",
    );
    for &s in selection.indexes() {
        let name = &manifest.segments[s].name;
        let dir = previews.join(name);
        let mut files: Vec<String> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|f| f.ends_with(".eml"))
            .collect();
        files.sort();
        html.push_str(&format!("<h2>{name}</h2>\n<ul>\n"));
        for f in files {
            let stem = f.trim_end_matches(".eml");
            let link = if dir.join(format!("{stem}.html")).is_file() {
                format!(
                    "<a href=\"{name}/{stem}.html\">{stem}</a> (<a href=\"{name}/{f}\">.eml</a>)"
                )
            } else {
                format!("<a href=\"{name}/{f}\">{stem}</a> (text only)")
            };
            html.push_str(&format!("<li>{link}</li>\n"));
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</body></html>\n");
    let path = previews.join("index.html");
    fs::write(&path, html).with_context(|| format!("writing {}", path.display()))
}

/// The message one donor would get, for a quick look; searches the run for the address.
pub fn find_message(run: &OpenedRun, preparer: &Preparer, email: &str) -> Result<Vec<u8>> {
    let target = crate::email::Address::parse(email)
        .map_err(|e| anyhow!("{email:?} is not an address: {e}"))?
        .key();
    let mut ws = Workspace::default();
    for segment in &run.manifest.segments {
        for chunk in &segment.chunks {
            let bytes = run.read_chunk(chunk)?;
            let mut found: Option<Result<Vec<u8>>> = None;
            run::for_each_row(&bytes, |rec| {
                if found.is_some() {
                    return Ok(());
                }
                match preparer.prepare(&segment.name, &segment.template, rec, &mut ws) {
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

/// Checks the templates are the ones sending started with, if it has started: a preview of
/// other templates than the run is being sent with is worth a warning.
pub fn templates_unchanged(run: &OpenedRun, preparer: &Preparer) -> Result<()> {
    crate::ledger::check_templates(run.dir(), &preparer.templates().fingerprint())?;
    Ok(())
}
