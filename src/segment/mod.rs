//! The master step: stream a donor export into a run directory of per-segment chunks.
//!
//! Owns the decision for every input row: rejected (invalid), suppressed, duplicate, a
//! segment, or unmatched, in that order; and writing each row to exactly one place in the run.
//! It never sends or renders anything, and never loads the export whole: memory is the dedupe
//! set (16 bytes of hash per distinct donor) plus one chunk per segment.
//!
//! Every file of a run is comma-separated, so nothing that reads a run needs to know how the
//! export was: a row of a comma-separated export is copied byte for byte; a row of an export
//! read with `--delimiter` (semicolons, tabs, pipes) is written again with commas, field for
//! field, quoting only the fields that need it. The manifest records the export's delimiter
//! for what re-reads the export (`campaign explain`).
//!
//! Three stages run at once, joined by bounded queues of row batches, in this order:
//!
//! 1. Reading, on the calling thread (this file): the export is read, hashed and split into
//!    records, a batch at a time.
//! 2. Classifying (`classify.rs`): each row is validated, its typed values parsed, its address
//!    keyed, and it is checked against the suppression lists and the rules; two rayon workers
//!    per batch when there are more than two cores, the biggest share of the work.
//! 3. Routing (`route.rs`): valid rows are deduped in input order, and every row is copied to
//!    its chunk file or to a dropped file; chunk files are written and hashed.
//!
//! The operating system spreads the stages over whatever cores there are. Once the export is
//! read, this file writes the manifest and commits the run directory. `--explain`
//! (`explain.rs`) runs the classifier alone, row by row, and writes nothing.

mod classify;
mod explain;
mod route;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use anyhow::{Context, Result, anyhow};
use jiff::civil::Date;

use crate::campaign::Campaign;
use crate::csvio::{CsvError, Delimiter, RawReader, push_field};
use crate::digest;
use crate::donor::EXCEL_UTF8;
use crate::manifest::{self, DonorInput, DroppedFiles, InputFile, Manifest};
use crate::progress::{Event, Progress};
use crate::rundir::{self, DROPPED_DIR, MANIFEST, ReplaceError, SEGMENTS_DIR, Staging};
use crate::suppress::{self, Suppressions};
use classify::{Batch, Classifier, Rejections};
pub use explain::explain;
use route::{Routed, Router};

/// Default share of rejected rows above which `segment` refuses to make a run.
pub const DEFAULT_MAX_REJECT_RATE: f64 = 0.05;

/// Default data rows per chunk file.
pub const DEFAULT_CHUNK_SIZE: usize = 1000;

/// Everything `segment` needs, already checked.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// The donor export.
    pub donors: PathBuf,
    /// The export's field delimiter, if the operator gave one. `None` reads commas and
    /// refuses an export whose header looks separated by something else ([`WrongSeparator`]);
    /// a delimiter given is taken at its word.
    pub delimiter: Option<Delimiter>,
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
    /// When the run is made, for the manifest's `created_at`.
    pub now: jiff::Timestamp,
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

/// Rows in each batch passed from reading to classifying to routing.
const BATCH_ROWS: usize = 4096;

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

/// Opens the export and reads its header, with fields separated by `delimiter` (see
/// [`SegmentOptions::delimiter`]). With `hash`, the reader computes the input's SHA-256 as it
/// reads ([`RawReader::sha256`]).
pub fn open_donors(
    path: &Path,
    delimiter: Option<Delimiter>,
    hash: bool,
) -> Result<(RawReader<File>, Vec<String>, u64)> {
    let file =
        File::open(path).with_context(|| format!("cannot open donor file {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut rdr = RawReader::new(file).with_delimiter(delimiter.unwrap_or_default());
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
                "{}: line 1 (the header) is not valid UTF-8; re-export the file as UTF-8 ({EXCEL_UTF8})",
                path.display()
            )
        })?;
        (0..fields.len())
            .map(|i| fields.get(i).to_owned())
            .collect::<Vec<String>>()
    };
    if delimiter.is_none()
        && let [only] = header.as_slice()
        && let Some((d, hint)) = other_separator(only)
    {
        return Err(WrongSeparator(format!(
            "{}: line 1 (the header) has no commas but looks {hint}; re-export with commas ({EXCEL_UTF8}) or pass --delimiter {}",
            path.display(),
            d.flag_value()
        ))
        .into());
    }
    Ok((rdr, header, size))
}

/// An export separated by something other than commas: the export's fault, like a missing
/// file (exit 2), not an I/O failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WrongSeparator(String);

/// What a header of one field looks separated by instead of commas, if anything: Excel
/// writes semicolons where the comma is the decimal mark (Germany, France, Poland...).
fn other_separator(header: &str) -> Option<(Delimiter, &'static str)> {
    [
        (
            Delimiter::SEMICOLON,
            "semicolon-separated, as Excel writes in some locales",
        ),
        (Delimiter::TAB, "tab-separated"),
        (Delimiter::PIPE, "pipe-separated"),
    ]
    .into_iter()
    .find(|(d, _)| {
        header
            .split(char::from(d.byte()))
            .filter(|f| !f.trim().is_empty())
            .count()
            >= 2
    })
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
        .iter()
        .map(ToString::to_string)
        .collect();
    // A path that is not a file is the command line's mistake (exit 2, as for the campaign
    // file); failing to read a file that is there is not.
    let (rdr, header, size) = open_donors(&opts.donors, opts.delimiter, true).map_err(|e| {
        if opts.donors.is_file() && !e.is::<WrongSeparator>() {
            SegmentError::Other(e)
        } else {
            SegmentError::Config(e)
        }
    })?;
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
pub fn run(opts: &SegmentOptions, progress: &dyn Progress) -> Result<SegmentReport, SegmentError> {
    rundir::recover(&opts.out)?;
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
    let delimiter = opts.delimiter.unwrap_or_default();
    let rewrite = delimiter != Delimiter::COMMA;
    let router_root = root.clone();
    // Three stages, each on its own thread: reading and splitting lines (here), classifying
    // (two rayon workers per batch given more than two cores), routing. Bounded queues keep
    // memory flat whichever is slower; emptied batches come back to be refilled, so steady
    // state allocates nothing. A batch holds ~1.2 MB; two waiting per queue keep every stage
    // fed (four measured no faster) for ~5 MB less peak memory.
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
                rewrite,
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
            // On two cores the three stages already keep both busy, and splitting each batch
            // over two more threads only added handoffs: 6x the context switches at 1M rows
            // and ~4% more CPU, for no shorter wall time.
            let split = thread::available_parallelism().is_ok_and(|n| n.get() > 2);
            let mut rejections = Rejections::default();
            for mut batch in rx {
                batch.classify(&mut classifiers, split);
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
        progress.event(Event::Read {
            bytes: rdr.bytes_read(),
        });
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
    progress.event(Event::Read { bytes: size });
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
        tool_version: crate::VERSION.to_owned(),
        campaign_id: opts.campaign.id.as_str().to_owned(),
        as_of: opts.as_of.to_string(),
        created_at: opts
            .now
            .round(jiff::Unit::Second)
            .map_err(anyhow::Error::from)?
            .to_string(),
        input: DonorInput {
            path: absolute(&opts.donors),
            sha256: input_sha256,
            bytes: rdr.bytes_read(),
            data_rows: rows,
            delimiter,
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
