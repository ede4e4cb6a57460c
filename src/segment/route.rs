//! The routing stage: where each classified row is written.
//!
//! Owns dedupe in input order, copying every row to its segment's chunk file or to the dropped
//! file of its kind (with its line and reason), writing and syncing those files, and hashing
//! each chunk for the manifest. A row is copied byte for byte, or, from an export with another
//! delimiter than the comma, written again with commas (so every file of a run is
//! comma-separated). It never judges a row: validity, suppression and the segment were decided
//! by the classifying stage.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::BATCH_ROWS;
use super::classify::{Batch, Pre};
use crate::csvio::push_field;
use crate::digest;
use crate::email::{KeySet, RecipientKey};
use crate::manifest::{Chunk, Dropped};
use crate::rundir::{self, DROPPED_DIR, SEGMENTS_DIR};

/// The kinds of dropped rows, in manifest order.
const DROPPED_KINDS: [&str; 4] = ["rejected", "duplicate", "suppressed", "unmatched"];

/// Write a dropped-rows buffer out past this size.
const DROPPED_FLUSH: usize = 1 << 20;

/// What the router thread produced.
pub(super) struct Routed {
    pub(super) chunks: Vec<Vec<Chunk>>,
    pub(super) seg_rows: Vec<u64>,
    pub(super) dropped: Dropped,
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
pub(super) struct Router {
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
    /// Rows are written again with commas rather than copied (the export has another
    /// delimiter); `line` holds the row being written.
    rewrite: bool,
    line: Vec<u8>,
}

impl Router {
    pub(super) fn new(
        root: PathBuf,
        segment_dirs: Vec<String>,
        chunk_header: &[u8],
        chunk_size: u64,
        expected_donors: usize,
        rewrite: bool,
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
            rewrite,
            line: Vec::new(),
        })
    }

    pub(super) fn route(&mut self, batch: &Batch) -> Result<()> {
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
        let mut rewritten = std::mem::take(&mut self.line);
        for (i, &pre) in batch.pres.iter().enumerate() {
            let raw = if self.rewrite {
                rewritten.clear();
                batch.records.get(i).push_comma_line(&mut rewritten);
                &rewritten[..]
            } else {
                batch.records.terminated(i)
            };
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
        self.line = rewritten;
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
    pub(super) fn finish(mut self) -> Result<Routed> {
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

/// Writes one dropped row: `line,reason,` then the row as it goes into a chunk (ending in
/// `\n`).
fn push_dropped(out: &mut Vec<u8>, line: u64, reason: &str, raw_line: &[u8]) {
    out.extend_from_slice(line.to_string().as_bytes());
    out.push(b',');
    push_field(out, reason.as_bytes());
    out.push(b',');
    out.extend_from_slice(raw_line);
}
