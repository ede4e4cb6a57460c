//! `RUN/manifest.json`: the record of what `segment` produced, read by every later step.
//!
//! Owns the manifest's on-disk format. It never decides what goes into a run; `segment` fills
//! it in and later steps only read it.
//!
//! # Format (version 1)
//! ```json
//! {
//!   "format_version": 1,
//!   "tool_version": "0.1.0 (4e9a7991a2b3)",     // version and git commit that wrote it
//!   "campaign_id": "spring-gala-2026",
//!   "as_of": "2026-11-29",
//!   "created_at": "2026-11-29T23:40:00Z",
//!   "input": { "path": "/abs/donors.csv", "sha256": "…", "bytes": 31337, "data_rows": 300,
//!              "delimiter": ";" },
//!   "campaign_file": { "path": "/abs/campaign.toml", "sha256": "…" },
//!   "suppression_files": [ { "path": "/abs/suppress.txt", "sha256": "…" } ],
//!   "email_column": "email",
//!   "header": ["donor_id", "email", "…"],
//!   "chunk_size": 1000,
//!   "segments": [
//!     { "name": "major", "template": "major", "rule": "total_given >= 1000", "rows": 12,
//!       "chunks": [ { "file": "segments/major/00001.csv", "rows": 12, "sha256": "…" } ] }
//!   ],
//!   "dropped": { "rejected": 9, "duplicate": 6, "suppressed": 8, "unmatched": 4 },
//!   "dropped_files": { "rejected": "dropped/rejected.csv", "…": "…" },
//!   "suppression_entries_ignored": 0
//! }
//! ```
//! Paths inside the run are relative to the run directory, with `/` separators. The rows of
//! all segments plus all dropped rows equal `input.data_rows`.
//!
//! `input.delimiter` is the character between the export's fields (`segment --delimiter`):
//! `","`, `";"`, `"\t"` or `"|"`. It is what re-reading the export needs (`campaign explain`),
//! not the chunks. It came within version 1: a manifest without it (made before
//! `--delimiter` existed) means `","`.
//!
//! Each chunk is a comma-separated CSV file (RFC 4180 quoting, `\n` line ends), whatever
//! `input.delimiter` is: its first line is the input header and its rows are the input rows,
//! byte for byte from a comma-separated export, and from any other written again with commas,
//! field for field (fields quoted only when they need it). The dropped files are the same
//! rows after `line,reason,`. So a reader of a run never needs the delimiter, and a `campaign`
//! older than `--delimiter` sends from a run made with it as from any other (only its
//! `explain`, which re-reads the export, would refuse a semicolon export as it always did).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::csvio::Delimiter;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A file `segment` read, identified by content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputFile {
    /// Absolute path when the run was made.
    pub path: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// The donor export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DonorInput {
    /// Absolute path when the run was made.
    pub path: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Records after the header.
    pub data_rows: u64,
    /// The character between fields (chunks are comma-separated whatever it is).
    #[serde(default)]
    pub delimiter: Delimiter,
}

/// One chunk file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Chunk {
    /// Path relative to the run directory.
    pub file: String,
    /// Data rows in it.
    pub rows: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

/// One segment's share of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Segment {
    /// The segment's name (also its directory under `segments/`).
    pub name: String,
    /// The template its donors receive.
    pub template: String,
    /// The rule text, or `null` for a catch-all.
    pub rule: Option<String>,
    /// Donors in the segment.
    pub rows: u64,
    /// Its chunks, in order.
    pub chunks: Vec<Chunk>,
}

/// Counts of rows that went to no segment, by reason.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dropped {
    /// Failed validation (bad address, bad typed value, wrong field count, not UTF-8).
    pub rejected: u64,
    /// Same address as an earlier row.
    pub duplicate: u64,
    /// On a suppression list.
    pub suppressed: u64,
    /// Valid, but matched no segment rule.
    pub unmatched: u64,
}

impl Dropped {
    /// All dropped rows.
    pub fn total(&self) -> u64 {
        self.rejected + self.duplicate + self.suppressed + self.unmatched
    }
}

/// Where each kind of dropped row was written, relative to the run directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DroppedFiles {
    /// Rejected rows.
    pub rejected: String,
    /// Duplicate rows.
    pub duplicate: String,
    /// Suppressed rows.
    pub suppressed: String,
    /// Unmatched rows.
    pub unmatched: String,
}

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// See [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Version of `campaign` that wrote it.
    pub tool_version: String,
    /// The campaign's id.
    pub campaign_id: String,
    /// The date `today` meant in rules (`YYYY-MM-DD`).
    pub as_of: String,
    /// When the run was made (UTC, RFC 3339).
    pub created_at: String,
    /// The donor export.
    pub input: DonorInput,
    /// The campaign file.
    pub campaign_file: InputFile,
    /// Suppression lists, in the order given.
    pub suppression_files: Vec<InputFile>,
    /// Header of the email column.
    pub email_column: String,
    /// The donor export's header (every chunk starts with it).
    pub header: Vec<String>,
    /// Maximum data rows per chunk.
    pub chunk_size: u64,
    /// Segments in rule order.
    pub segments: Vec<Segment>,
    /// Dropped-row counts.
    pub dropped: Dropped,
    /// Dropped-row files.
    pub dropped_files: DroppedFiles,
    /// Suppression entries that were not valid addresses and so were skipped.
    pub suppression_entries_ignored: u64,
}

impl Manifest {
    /// Reads `RUN/manifest.json`, after putting back a run a crashed `segment --force` left
    /// moved aside ([`crate::rundir::recover`]).
    pub fn load(run: &Path) -> anyhow::Result<Manifest> {
        use anyhow::Context;
        crate::rundir::recover(run)?;
        let path = run.join(crate::rundir::MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}; is {} a run directory made by `campaign segment`?",
                path.display(),
                run.display()
            )
        })?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid manifest", path.display()))?;
        if m.format_version != FORMAT_VERSION {
            anyhow::bail!(
                "{} has format version {}, this campaign reads version {FORMAT_VERSION}; use the campaign version that made it ({})",
                path.display(),
                m.format_version,
                m.tool_version
            );
        }
        m.check()
            .map_err(|e| anyhow::anyhow!("{}: {e}; the manifest was edited or damaged: segment the export again rather than editing it", path.display()))?;
        Ok(m)
    }

    /// Checks that the counts add up and every chunk path stays inside the run, before
    /// anything is read or sent by them.
    fn check(&self) -> Result<(), String> {
        for s in &self.segments {
            let in_chunks: u64 = s.chunks.iter().map(|c| c.rows).sum();
            if in_chunks != s.rows {
                return Err(format!(
                    "segment {:?} has {} donors but its chunks add up to {in_chunks}",
                    s.name, s.rows
                ));
            }
            let dir = format!("{}/{}/", crate::rundir::SEGMENTS_DIR, s.name);
            for c in &s.chunks {
                let inside = c.file.strip_prefix(&dir).is_some_and(|name| {
                    !name.is_empty()
                        && !name.contains(['/', '\\', '\0'])
                        && name != "."
                        && name != ".."
                });
                if !inside || s.name.contains(['/', '\\']) || s.name.starts_with('.') {
                    return Err(format!(
                        "chunk {:?} of segment {:?} is not a file of {dir}",
                        c.file, s.name
                    ));
                }
            }
        }
        let accounted = self.segmented() + self.dropped.total();
        if accounted != self.input.data_rows {
            return Err(format!(
                "{} donor rows were read but {} are segmented and {} dropped",
                self.input.data_rows,
                self.segmented(),
                self.dropped.total()
            ));
        }
        Ok(())
    }

    /// Donors in all segments.
    pub fn segmented(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
}
