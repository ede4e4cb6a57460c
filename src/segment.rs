//! The master step: stream a donor export into a run directory of per-segment chunks.
//!
//! Owns the decision for every input row: rejected (invalid), suppressed, duplicate, a
//! segment, or unmatched, in that order; and writing each row, byte for byte, to exactly one
//! place in the run. It never sends or renders anything, and never loads the export whole:
//! memory is the dedupe set (16 bytes of hash per distinct donor) plus one chunk per segment.
//!
//! Three stages run at once, joined by bounded queues of row batches: the main thread reads,
//! hashes and splits lines, a classifying stage validates and applies rules (two rayon
//! workers per batch, the biggest share of the work), and a router thread dedupes in input
//! order and writes and hashes chunk files. The operating system spreads them over whatever
//! cores there are.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread;

use anyhow::{Context, Result, anyhow, bail};
use jiff::civil::Date;

use crate::campaign::Campaign;
use crate::csvio::{CsvError, Fields, RawReader, RawRecord, RecordBatch, push_field};
use crate::digest;
use crate::email::{Address, KeySet, RecipientKey};
use crate::manifest::{self, Chunk, DonorInput, Dropped, DroppedFiles, InputFile, Manifest};
use crate::rules::{Rule, Scratch, compile_rules};
use crate::rundir::{self, DROPPED_DIR, MANIFEST, ReplaceError, SEGMENTS_DIR, Staging};
use crate::schema::{Schema, TypedRow};
use crate::suppress::{self, Suppressed, Suppressions};

/// Default share of rejected rows above which `segment` refuses to make a run.
pub const DEFAULT_MAX_REJECT_RATE: f64 = 0.05;

/// Default data rows per chunk file.
pub const DEFAULT_CHUNK_SIZE: usize = 1000;

/// Everything `segment` needs, already checked.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// The donor export.
    pub donors: PathBuf,
    /// The campaign.
    pub campaign: Campaign,
    /// Suppression lists.
    pub suppress: Vec<PathBuf>,
    /// The run directory to create.
    pub out: PathBuf,
    /// Data rows per chunk, at least 1.
    pub chunk_size: usize,
    /// What `today` means in rules.
    pub as_of: Date,
    /// Replace an existing run that has not started sending.
    pub force: bool,
    /// Refuse the run when more than this share of rows is rejected.
    pub max_reject_rate: f64,
}

/// Why `segment` made no run, where the caller acts on the difference.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Too many rows failed validation: the export is probably broken.
    #[error("{0}")]
    TooManyRejected(Box<RejectSummary>),
    /// The export has a header and nothing else.
    #[error("{} has a header but no donor rows", .0.display())]
    NoRows(PathBuf),
    /// The campaign does not fit the export, or a setting or list is unusable: fix the
    /// configuration and run again.
    #[error(transparent)]
    Config(anyhow::Error),
    /// The target directory may not be replaced.
    #[error(transparent)]
    Replace(#[from] ReplaceError),
    /// Anything else (unreadable files, bad rules, I/O): a message with context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What the rejected rows of a refused export looked like.
#[derive(Debug)]
pub struct RejectSummary {
    /// The export.
    pub donors: PathBuf,
    /// Rejected rows.
    pub rejected: u64,
    /// Data rows read.
    pub rows: u64,
    /// The threshold in force.
    pub max_rate: f64,
    /// Per kind of problem: (kind, count, first line, first reason), most common first.
    pub kinds: Vec<(String, u64, u64, String)>,
}

impl std::fmt::Display for RejectSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} of {} rows ({:.1}%) failed validation, above the limit of {:.1}% (--max-reject-rate {}); no run was written.",
            self.donors.display(),
            self.rejected,
            self.rows,
            100.0 * self.rejected as f64 / self.rows.max(1) as f64,
            100.0 * self.max_rate,
            self.max_rate
        )?;
        for (kind, n, line, reason) in &self.kinds {
            writeln!(f, "  {n} × {kind}, first at line {line}: {reason}")?;
        }
        write!(
            f,
            "Fix the export (or the [columns] types in the campaign file), or raise --max-reject-rate if these rows really should be skipped."
        )
    }
}

/// Where one row went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
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
pub struct Classifier {
    schema: Schema,
    email_idx: usize,
    email_column: String,
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
    pub fn new(
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
            schema,
            email_idx,
            email_column: campaign.email_column.clone(),
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
    pub fn twin(&self) -> Classifier {
        Classifier {
            schema: self.schema.clone(),
            email_idx: self.email_idx,
            email_column: self.email_column.clone(),
            rules: self.rules.clone(),
            suppressions: Arc::clone(&self.suppressions),
            seen: KeySet::default(),
            typed: TypedRow::default(),
            scratch: Scratch::default(),
            last_key: None,
        }
    }

    /// Decides where a data row goes, remembering its address for later duplicates.
    pub fn classify(&mut self, rec: &RawRecord<'_>) -> Outcome {
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
    pub fn assess(&mut self, rec: &RawRecord<'_>) -> Outcome {
        self.last_key = None;
        let fields = match self.fields(rec) {
            Ok(f) => f,
            Err(o) => return o,
        };
        let addr = match Address::parse(fields.get(self.email_idx)) {
            Ok(a) => a,
            Err(e) => {
                return Outcome::Rejected {
                    kind: format!("bad address in {}", self.email_column),
                    reason: format!("{}: {e}", self.email_column),
                };
            }
        };
        let key = addr.key();
        // Remembered before the value checks so `--explain` finds rows rejected for values.
        self.last_key = Some(key);
        if let Err(e) = self.schema.parse_row(&fields, &mut self.typed) {
            return Outcome::Rejected {
                kind: format!("bad value in {}", e.column),
                reason: e.to_string(),
            };
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
    pub fn last_key(&self) -> Option<RecipientKey> {
        self.last_key
    }

    /// Each rule's verdict on a row, with the values it looked at; `None` when the row does not
    /// get as far as the rules (bad structure or values).
    pub fn explain_rules(&mut self, rec: &RawRecord<'_>) -> Option<Vec<String>> {
        let fields = self.fields(rec).ok()?;
        self.schema.parse_row(&fields, &mut self.typed).ok()?;
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

    fn fields<'r>(&self, rec: &RawRecord<'r>) -> Result<Fields<'r>, Outcome> {
        let fields = rec.fields().map_err(|_| {
            // Counted in the line as written, which is what an editor shows.
            let at = std::str::from_utf8(rec.raw)
                .err()
                .map_or(0, |e| e.valid_up_to() + 1);
            Outcome::Rejected {
                kind: "not UTF-8".into(),
                reason: format!(
                    "not valid UTF-8 (byte {at} of the line); re-export the file as UTF-8"
                ),
            }
        })?;
        if rec.field_count() != self.schema.len() {
            let spans = if rec.lines > 1 {
                format!(
                    "; it spans lines {}-{}, so a quote is probably not closed",
                    rec.line,
                    rec.line + rec.lines - 1
                )
            } else {
                String::new()
            };
            return Err(Outcome::Rejected {
                kind: "wrong number of fields".into(),
                reason: format!(
                    "has {} fields but the header has {}{spans}",
                    rec.field_count(),
                    self.schema.len()
                ),
            });
        }
        Ok(fields)
    }
}

/// Writes one dropped row: `line,reason,` then the original row (ending in `\n`).
fn push_dropped(out: &mut Vec<u8>, line: u64, reason: &str, raw_line: &[u8]) {
    out.extend_from_slice(line.to_string().as_bytes());
    out.push(b',');
    push_field(out, reason.as_bytes());
    out.push(b',');
    out.extend_from_slice(raw_line);
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kinds of dropped rows, in manifest order.
const DROPPED_KINDS: [&str; 4] = ["rejected", "duplicate", "suppressed", "unmatched"];

/// Write a dropped-rows buffer out past this size.
const DROPPED_FLUSH: usize = 1 << 20;

/// Rows in each batch passed from reading to classifying to routing.
const BATCH_ROWS: usize = 4096;

/// What classification decided about a row; duplicates are the router's call.
#[derive(Debug, Clone, Copy)]
enum Pre {
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
struct Batch {
    records: RecordBatch,
    pres: Vec<Pre>,
    /// Each rejected row's kind (for the summary) and reason (for the dropped file).
    reasons: Vec<(String, String)>,
}

impl Batch {
    fn clear(&mut self) {
        self.records.clear();
        self.pres.clear();
        self.reasons.clear();
    }

    /// Classifies every row, the first half with `classifiers.0` and the second with
    /// `classifiers.1` at the same time: classification is most of the parsing side's work,
    /// and rows are independent until dedupe, which the router does in input order.
    fn classify(&mut self, classifiers: &mut (Classifier, Classifier)) {
        let n = self.records.len();
        let half = n / 2;
        self.pres.clear();
        self.pres.resize(n, Pre::Rejected(0));
        let (first, second) = self.pres.split_at_mut(half);
        let records = &self.records;
        let (c0, c1) = (&mut classifiers.0, &mut classifiers.1);
        let (mut r0, r1) = rayon::join(
            || classify_rows(c0, records, 0, first),
            || classify_rows(c1, records, half, second),
        );
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

/// Rejected rows counted by kind, for the summary when there are too many.
#[derive(Default)]
struct Rejections {
    rejected: u64,
    /// Kind -> (rows, first line, first reason).
    kinds: HashMap<String, (u64, u64, String)>,
}

impl Rejections {
    fn count(&mut self, batch: &Batch) {
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

/// Classifies records `from..from + out.len()` into `out`; returns the rejected rows' kinds
/// and reasons, which `Pre::Rejected` indexes.
fn classify_rows(
    c: &mut Classifier,
    records: &RecordBatch,
    from: usize,
    out: &mut [Pre],
) -> Vec<(String, String)> {
    let mut reasons = Vec::new();
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

/// What the router thread produced.
struct Routed {
    chunks: Vec<Vec<Chunk>>,
    seg_rows: Vec<u64>,
    dropped: Dropped,
}

/// The router thread: dedupes valid rows in input order, copies each row to its chunk or
/// dropped file, and writes and hashes chunk files.
///
/// Dedupe lives here rather than with parsing because its random reads into a table of
/// hundreds of megabytes are the slowest single step at 10M rows; on its own thread it
/// overlaps with parsing instead of adding to it.
///
/// Chunk files are not synced one by one: at 10M rows that is 10,000 journal commits, more
/// than the rest of the step. The manifest (synced) records every chunk's SHA-256 and `send`
/// checks it before using a chunk, so a power cut that loses chunk data after the rename is
/// caught there, never sent from.
struct Router {
    root: PathBuf,
    segment_dirs: Vec<String>,
    header_len: usize,
    chunk_size: u64,
    seen: KeySet,
    bufs: Vec<Vec<u8>>,
    buf_rows: Vec<u64>,
    out: Routed,
    dropped_files: Vec<(PathBuf, File)>,
    dropped_bufs: Vec<Vec<u8>>,
    /// Reused per batch: the valid rows' keys and whether each was new.
    keys: Vec<RecipientKey>,
    fresh: Vec<bool>,
}

impl Router {
    fn new(
        root: PathBuf,
        segment_dirs: Vec<String>,
        chunk_header: &[u8],
        chunk_size: u64,
        expected_donors: usize,
    ) -> Result<Router> {
        let mut dropped_header = b"line,reason,".to_vec();
        dropped_header.extend_from_slice(chunk_header);
        let mut dropped_files = Vec::with_capacity(DROPPED_KINDS.len());
        for kind in DROPPED_KINDS {
            let path = root.join(DROPPED_DIR).join(format!("{kind}.csv"));
            let mut f =
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&dropped_header)
                .with_context(|| format!("writing {}", path.display()))?;
            dropped_files.push((path, f));
        }
        let n = segment_dirs.len();
        Ok(Router {
            root,
            header_len: chunk_header.len(),
            chunk_size,
            // Pre-sized so it never grows: growing briefly holds old and new tables at once,
            // which would be this step's peak of memory.
            seen: KeySet::with_capacity(expected_donors),
            bufs: vec![chunk_header.to_vec(); n],
            buf_rows: vec![0; n],
            out: Routed {
                chunks: vec![Vec::new(); n],
                seg_rows: vec![0; n],
                dropped: Dropped::default(),
            },
            dropped_files,
            dropped_bufs: vec![Vec::new(); DROPPED_KINDS.len()],
            segment_dirs,
            keys: Vec::with_capacity(BATCH_ROWS),
            fresh: Vec::with_capacity(BATCH_ROWS),
        })
    }

    fn route(&mut self, batch: &Batch) -> Result<()> {
        // Dedupe the whole batch at once, in input order, so the table's cache misses overlap.
        self.keys.clear();
        self.keys.extend(batch.pres.iter().filter_map(|p| match p {
            Pre::Valid { key, .. } => Some(*key),
            _ => None,
        }));
        self.fresh.clear();
        self.seen.insert_batch(&self.keys, &mut self.fresh);
        let mut fresh = std::mem::take(&mut self.fresh);
        let mut is_new = fresh.iter().copied();
        for (i, &pre) in batch.pres.iter().enumerate() {
            let raw = batch.records.terminated(i);
            let line = batch.records.line(i);
            match pre {
                Pre::Valid { segment, .. } => {
                    if !is_new.next().unwrap_or(false) {
                        self.out.dropped.duplicate += 1;
                        self.drop_row(1, line, DUPLICATE_REASON, raw)?;
                    } else if let Some(i) = segment {
                        self.add_to_chunk(i as usize, raw)?;
                    } else {
                        self.out.dropped.unmatched += 1;
                        self.drop_row(3, line, UNMATCHED_REASON, raw)?;
                    }
                }
                Pre::Suppressed(s) => {
                    self.out.dropped.suppressed += 1;
                    self.drop_row(2, line, s.reason(), raw)?;
                }
                Pre::Rejected(r) => {
                    self.out.dropped.rejected += 1;
                    self.drop_row(0, line, &batch.reasons[r as usize].1, raw)?;
                }
            }
        }
        fresh.clear();
        self.fresh = fresh;
        Ok(())
    }

    fn add_to_chunk(&mut self, i: usize, raw: &[u8]) -> Result<()> {
        self.bufs[i].extend_from_slice(raw);
        self.buf_rows[i] += 1;
        self.out.seg_rows[i] += 1;
        if self.buf_rows[i] == self.chunk_size {
            self.write_chunk(i)?;
        }
        Ok(())
    }

    fn write_chunk(&mut self, i: usize) -> Result<()> {
        let rel = format!(
            "{SEGMENTS_DIR}/{}/{:05}.csv",
            self.segment_dirs[i],
            self.out.chunks[i].len() + 1
        );
        let path = self.root.join(&rel);
        let bytes = &self.bufs[i];
        File::create(&path)
            .and_then(|mut f| f.write_all(bytes))
            .with_context(|| format!("writing {}", path.display()))?;
        self.out.chunks[i].push(Chunk {
            file: rel,
            rows: self.buf_rows[i],
            sha256: digest::sha256_hex(bytes),
        });
        // Keep the buffer (and its capacity) for the next chunk of this segment.
        self.bufs[i].truncate(self.header_len);
        self.buf_rows[i] = 0;
        Ok(())
    }

    fn drop_row(&mut self, kind: usize, line: u64, reason: &str, raw: &[u8]) -> Result<()> {
        push_dropped(&mut self.dropped_bufs[kind], line, reason, raw);
        if self.dropped_bufs[kind].len() > DROPPED_FLUSH {
            self.flush_dropped(kind)?;
        }
        Ok(())
    }

    fn flush_dropped(&mut self, kind: usize) -> Result<()> {
        let (path, f) = &mut self.dropped_files[kind];
        f.write_all(&self.dropped_bufs[kind])
            .with_context(|| format!("writing {}", path.display()))?;
        self.dropped_bufs[kind].clear();
        Ok(())
    }

    /// Writes the last, partial chunks and the dropped rows still buffered.
    fn finish(mut self) -> Result<Routed> {
        for i in 0..self.bufs.len() {
            if self.buf_rows[i] > 0 {
                self.write_chunk(i)?;
            }
        }
        for kind in 0..DROPPED_KINDS.len() {
            self.flush_dropped(kind)?;
        }
        for (path, f) in &self.dropped_files {
            f.sync_data()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        for d in &self.segment_dirs {
            rundir::sync_dir(&self.root.join(SEGMENTS_DIR).join(d))?;
        }
        rundir::sync_dir(&self.root.join(DROPPED_DIR))?;
        Ok(self.out)
    }
}

const DUPLICATE_REASON: &str = "duplicate: an earlier row has the same address";
const UNMATCHED_REASON: &str = "unmatched: no segment rule matched";

fn input_file(path: &Path, sha256: String) -> InputFile {
    InputFile {
        path: absolute(path),
        sha256,
    }
}

fn absolute(path: &Path) -> String {
    fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// Opens the export and reads its header. With `hash`, the reader computes the input's
/// SHA-256 as it reads ([`RawReader::sha256`]).
pub fn open_donors(path: &Path, hash: bool) -> Result<(RawReader<File>, Vec<String>, u64)> {
    let file =
        File::open(path).with_context(|| format!("cannot open donor file {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut rdr = RawReader::new(file);
    if hash {
        rdr = rdr.with_sha256();
    }
    let header = {
        let rec = rdr
            .next_record()
            .map_err(|e| csv_error(path, e))?
            .with_context(|| {
                format!(
                    "{} is empty; it needs a header line naming the columns",
                    path.display()
                )
            })?;
        let fields = rec.fields().map_err(|_| {
            anyhow!(
                "{}: line 1 (the header) is not valid UTF-8; re-export the file as UTF-8",
                path.display()
            )
        })?;
        (0..fields.len())
            .map(|i| fields.get(i).to_owned())
            .collect()
    };
    Ok((rdr, header, size))
}

fn csv_error(path: &Path, e: CsvError) -> anyhow::Error {
    anyhow!("{}: {e}", path.display())
}

/// Rough data rows in a file of `size` bytes, from the header's length, for pre-sizing.
fn estimate_rows(size: u64, header: &[String]) -> usize {
    // Exports run about 100 bytes a row; more columns mean longer rows.
    let per_row = (header.len() as u64 * 9).max(40);
    (size / per_row).min(200_000_000) as usize
}

/// The export opened at its first data row, with the classifier compiled for its header:
/// the common start of `run` and `explain`.
struct Input {
    rdr: RawReader<File>,
    header: Vec<String>,
    size: u64,
    classifier: Classifier,
    /// Suppression entries that were skipped, as warnings for the operator.
    warnings: Vec<String>,
}

fn open_input(opts: &SegmentOptions) -> Result<Input, SegmentError> {
    let mut suppressions = Suppressions::load(&opts.suppress).map_err(SegmentError::Config)?;
    let warnings = std::mem::take(&mut suppressions.ignored)
        .into_iter()
        .map(|i| {
            format!(
                "{}:{}: suppression entry ignored: {}",
                i.path.display(),
                i.line,
                i.reason
            )
        })
        .collect();
    let (rdr, header, size) = open_donors(&opts.donors, true)?;
    let classifier = Classifier::new(
        &opts.campaign,
        &opts.donors,
        &header,
        suppressions,
        opts.as_of,
    )
    .map_err(SegmentError::Config)?;
    Ok(Input {
        rdr,
        header,
        size,
        classifier,
        warnings,
    })
}

/// What a successful `segment` produced.
#[derive(Debug)]
pub struct SegmentReport {
    /// The manifest written to the run.
    pub manifest: Manifest,
    /// Things the operator should know that did not stop the run.
    pub warnings: Vec<String>,
}

/// Runs the master step and returns the manifest it wrote.
pub fn run(
    opts: &SegmentOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<SegmentReport, SegmentError> {
    rundir::check_replace(&opts.out, opts.force)?;
    let Input {
        mut rdr,
        header,
        size,
        classifier,
        warnings,
    } = open_input(opts)?;
    let suppression_files = opts
        .suppress
        .iter()
        .map(|p| Ok(input_file(p, suppress::sha256_of(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let campaign_file = input_file(
        &opts.campaign.path,
        digest::sha256_file(&opts.campaign.path)?,
    );

    let staging = Staging::create(&opts.out, opts.force)?;
    let root = staging.path().to_owned();
    let segment_dirs: Vec<String> = opts
        .campaign
        .segments
        .iter()
        .map(|s| s.name.as_str().to_owned())
        .collect();
    for d in &segment_dirs {
        let p = root.join(SEGMENTS_DIR).join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    fs::create_dir_all(root.join(DROPPED_DIR))
        .with_context(|| format!("creating {}", root.join(DROPPED_DIR).display()))?;

    let mut chunk_header = Vec::new();
    for (i, h) in header.iter().enumerate() {
        if i > 0 {
            chunk_header.push(b',');
        }
        push_field(&mut chunk_header, h.as_bytes());
    }
    chunk_header.push(b'\n');

    let (chunk_size, expected_donors) = (opts.chunk_size as u64, estimate_rows(size, &header));
    let router_root = root.clone();
    // Three stages, each on its own thread: reading and splitting lines (here), classifying
    // (two rayon workers per batch), routing. Bounded queues keep memory flat whichever is
    // slower; emptied batches come back to be refilled, so steady state allocates nothing.
    // A batch holds ~1.2 MB; two waiting per queue keep every stage fed (four measured no
    // faster) for ~5 MB less peak memory.
    let (tx, rx) = mpsc::sync_channel::<Batch>(2);
    let (routed_tx, routed_rx) = mpsc::sync_channel::<Batch>(2);
    let (free_tx, free_rx) = mpsc::channel::<Batch>();
    let router_handle = thread::Builder::new()
        .name("router".into())
        .spawn(move || -> Result<Routed> {
            // Built here, not before the thread starts: it allocates and touches the dedupe
            // table, which overlaps with reading the first batches this way.
            let mut router = Router::new(
                router_root,
                segment_dirs,
                &chunk_header,
                chunk_size,
                expected_donors,
            )?;
            for mut batch in routed_rx {
                router.route(&batch)?;
                batch.clear();
                let _ = free_tx.send(batch);
            }
            router.finish()
        })
        .context("starting the router thread")?;
    let classify_handle = thread::Builder::new()
        .name("classify".into())
        .spawn(move || -> Rejections {
            let mut classifiers = (classifier.twin(), classifier);
            let mut rejections = Rejections::default();
            for mut batch in rx {
                batch.classify(&mut classifiers);
                rejections.count(&batch);
                if routed_tx.send(batch).is_err() {
                    // The router stopped on an error; joining it reports that error.
                    break;
                }
            }
            rejections
        })
        .context("starting the classifying thread")?;

    let mut rows: u64 = 0;
    let mut batch = Batch::default();
    let read_result: Result<(), SegmentError> = loop {
        if let Some(pb) = progress {
            pb.set_position(rdr.bytes_read());
        }
        let mut end = Ok(false);
        while batch.records.len() < BATCH_ROWS {
            match rdr.next_record() {
                Ok(Some(rec)) => batch.records.push(&rec),
                Ok(None) => {
                    end = Ok(true);
                    break;
                }
                Err(e) => {
                    end = Err(csv_error(&opts.donors, e).into());
                    break;
                }
            }
        }
        rows += batch.records.len() as u64;
        if !matches!(end, Ok(false)) {
            break end.map(|_| ());
        }
        let next = free_rx.try_recv().unwrap_or_default();
        if tx.send(std::mem::replace(&mut batch, next)).is_err() {
            // A later stage stopped on an error; joining it below reports that error.
            break Ok(());
        }
    };
    let _ = tx.send(batch);
    drop(tx);
    let Rejections {
        rejected,
        kinds: reject_kinds,
    } = classify_handle
        .join()
        .map_err(|_| anyhow!("the classifying thread panicked"))?;
    let routed = router_handle
        .join()
        .map_err(|_| anyhow!("the router thread panicked"))??;
    read_result?;
    if let Some(pb) = progress {
        pb.set_position(size);
    }
    let Routed {
        chunks,
        seg_rows,
        dropped,
    } = routed;
    let input_sha256 = rdr
        .sha256()
        .context("internal error: the export was read without hashing it")?;
    debug_assert_eq!(dropped.rejected, rejected);

    if rows == 0 {
        return Err(SegmentError::NoRows(opts.donors.clone()));
    }
    if dropped.rejected as f64 > opts.max_reject_rate * rows as f64 {
        let mut kinds: Vec<(String, u64, u64, String)> = reject_kinds
            .into_iter()
            .map(|(k, (n, line, reason))| (k, n, line, reason))
            .collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        kinds.truncate(8);
        return Err(SegmentError::TooManyRejected(Box::new(RejectSummary {
            donors: opts.donors.clone(),
            rejected: dropped.rejected,
            rows,
            max_rate: opts.max_reject_rate,
            kinds,
        })));
    }

    let segments = opts
        .campaign
        .segments
        .iter()
        .zip(chunks)
        .zip(seg_rows)
        .map(|((def, chunks), rows)| manifest::Segment {
            name: def.name.as_str().to_owned(),
            template: def.template.clone(),
            rule: def.when.clone(),
            rows,
            chunks,
        })
        .collect();
    let dropped_file = |k: &str| format!("{DROPPED_DIR}/{k}.csv");
    let manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        campaign_id: opts.campaign.id.as_str().to_owned(),
        as_of: opts.as_of.to_string(),
        created_at: jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map_err(anyhow::Error::from)?
            .to_string(),
        input: DonorInput {
            path: absolute(&opts.donors),
            sha256: input_sha256,
            bytes: rdr.bytes_read(),
            data_rows: rows,
        },
        campaign_file,
        suppression_files,
        email_column: opts.campaign.email_column.clone(),
        header,
        chunk_size: opts.chunk_size as u64,
        segments,
        dropped,
        dropped_files: DroppedFiles {
            rejected: dropped_file("rejected"),
            duplicate: dropped_file("duplicate"),
            suppressed: dropped_file("suppressed"),
            unmatched: dropped_file("unmatched"),
        },
        suppression_entries_ignored: warnings.len() as u64,
    };
    debug_assert_eq!(manifest.segmented() + manifest.dropped.total(), rows);
    let path = root.join(MANIFEST);
    let mut f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    serde_json::to_writer_pretty(&mut f, &manifest)
        .map_err(anyhow::Error::from)
        .and_then(|_| {
            f.write_all(b"\n")?;
            f.sync_all()?;
            Ok(())
        })
        .with_context(|| format!("writing {}", path.display()))?;
    staging.commit()?;
    Ok(SegmentReport { manifest, warnings })
}

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
