//! Where a run stands, from its ledgers: per-segment totals (`status`, the end of `send`) and
//! the files an operator acts on (`report.json`, `failed.csv`, `unknown.csv`,
//! `suppressed.csv`, `suppress-bounced.txt`).
//!
//! Owns summarising a chunk's ledger ([`ChunkSummary`]) and writing the report files, each
//! replaced whole so it always matches the ledgers. A send hands over the summaries of the
//! chunks it worked on ([`Summaries`]), so only the other chunks' ledgers are read again, and
//! only chunks with failed or unknown donors are read back to find their addresses. It never
//! changes a ledger.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use jiff::Timestamp;

use crate::email::RecipientKey;
use crate::ledger::{ChunkStates, Entry, FeedbackKind, State};
use crate::manifest::Manifest;
use crate::run::{self, Addresses, Selection};
use crate::rundir::{FAILED_CSV, SUPPRESS_BOUNCED, SUPPRESSED_CSV, UNKNOWN_CSV};

/// Per-segment totals, from the ledgers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SegmentStatus {
    /// The segment.
    pub segment: String,
    /// Donors in it.
    pub donors: u64,
    /// Accepted by the server.
    pub sent: u64,
    /// Permanently failed.
    pub failed: u64,
    /// Failed transiently; a re-run retries them.
    pub deferred: u64,
    /// Outcome unknown (see `--on-unknown`).
    pub unknown: u64,
    /// Put on a suppression list given to `send` after segment ran: not sent.
    pub suppressed: u64,
    /// Not attempted yet.
    pub pending: u64,
    /// Of the sent: a permanent bounce came back later (`campaign bounces --run`).
    pub bounced_later: u64,
    /// Of the sent: a complaint or an unsubscribe reply came back.
    pub complaints: u64,
}

/// What a chunk's ledger says, kept after the ledger itself is closed.
#[derive(Debug, Clone, Default)]
pub struct ChunkSummary {
    sent: u64,
    failed: u64,
    deferred: u64,
    unknown: u64,
    suppressed: u64,
    bounced_later: u64,
    complaints: u64,
    /// Failed, unknown and suppressed donors, and those with feedback, for the report files.
    listed: HashMap<RecipientKey, Entry>,
    /// Failed, deferred and unknown donors by what the relay (or the process) said.
    reasons: HashMap<ReasonKey, u64>,
    /// The newest record of any donor: when the ledger was last written.
    last_at: Option<Timestamp>,
    /// The newest deferral.
    last_deferred_at: Option<Timestamp>,
}

/// What a [`Reason`] is grouped by: the outcome, the reply code and the reply's gist.
type ReasonKey = (&'static str, Option<u16>, String);

/// Why some donors failed, were deferred or are unknown, and how many: `status`'s "top
/// reasons".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    /// `failed`, `deferred` or `unknown`.
    pub state: &'static str,
    /// The SMTP reply code, if there was a reply.
    pub code: Option<u16>,
    /// The reply or error text, addresses replaced by `<address>` so one cause counts once.
    pub text: String,
    /// Donors with this outcome now.
    pub donors: u64,
}

/// A reply's text with the donor-specific parts (addresses) masked, so a relay's one
/// refusal of many donors groups as one reason. Cut at 200 characters.
fn gist(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        if word.contains('@') {
            out.push_str("<address>");
        } else {
            out.push_str(word);
        }
        if out.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|&i| out.is_char_boundary(i))
                .unwrap_or(0);
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

impl ChunkSummary {
    /// Summarises folded ledger states.
    pub fn of(states: &ChunkStates) -> ChunkSummary {
        let mut s = ChunkSummary::default();
        for (key, e) in states.iter() {
            s.last_at = s.last_at.max(e.at);
            let reason = match e.state {
                State::Sent => {
                    s.sent += 1;
                    None
                }
                State::Failed => {
                    s.failed += 1;
                    Some("failed")
                }
                State::Deferred { .. } => {
                    s.deferred += 1;
                    s.last_deferred_at = s.last_deferred_at.max(e.at);
                    Some("deferred")
                }
                State::Unknown => {
                    s.unknown += 1;
                    Some("unknown")
                }
                State::Suppressed => {
                    s.suppressed += 1;
                    None
                }
                State::Pending => continue,
            };
            if let Some(state) = reason {
                *s.reasons.entry((state, e.code, gist(&e.text))).or_insert(0) += 1;
            }
            if let (State::Sent, Some(f)) = (e.state, &e.feedback) {
                match f.kind {
                    FeedbackKind::Bounce => s.bounced_later += 1,
                    FeedbackKind::Complaint | FeedbackKind::Unsubscribe => s.complaints += 1,
                }
            }
            if matches!(e.state, State::Failed | State::Unknown | State::Suppressed)
                || e.feedback.is_some()
            {
                s.listed.insert(key, e.clone());
            }
        }
        s
    }

    fn recorded(&self) -> u64 {
        self.sent + self.failed + self.deferred + self.unknown + self.suppressed
    }
}

/// Chunk summaries by (segment, chunk) index: what a send already knows, and what is read
/// from the ledgers on demand.
#[derive(Debug, Default)]
pub struct Summaries(HashMap<(usize, usize), ChunkSummary>);

impl Summaries {
    /// Keeps what a send learned of a chunk.
    pub fn insert(&mut self, segment: usize, chunk: usize, summary: ChunkSummary) {
        self.0.insert((segment, chunk), summary);
    }

    /// The chunk's summary, reading its ledger if it is not known yet.
    fn get(
        &mut self,
        run: &Path,
        manifest: &Manifest,
        segment: usize,
        chunk: usize,
    ) -> Result<&ChunkSummary> {
        match self.0.entry((segment, chunk)) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let file = &manifest.segments[segment].chunks[chunk].file;
                Ok(v.insert(ChunkSummary::of(&ChunkStates::read(run, file)?)))
            }
        }
    }
}

/// Donors still to do (deferred or pending) in the given chunks, `(segment, chunk)` indexes.
pub(super) fn remaining_in(
    run: &Path,
    manifest: &Manifest,
    chunks: &[(usize, usize)],
    known: &mut Summaries,
) -> Result<u64> {
    let mut left = 0;
    for &(s, c) in chunks {
        let rows = manifest.segments[s].chunks[c].rows;
        let sum = known.get(run, manifest, s, c)?;
        left += sum.deferred + rows.saturating_sub(sum.recorded());
    }
    Ok(left)
}

/// Per-segment totals of the selected segments, read from the ledgers.
pub fn status(
    run: &Path,
    manifest: &Manifest,
    selection: &Selection,
) -> Result<Vec<SegmentStatus>> {
    status_with(run, manifest, selection, &mut Summaries::default())
}

/// [`status`], reusing the summaries already known.
pub(super) fn status_with(
    run: &Path,
    manifest: &Manifest,
    selection: &Selection,
    known: &mut Summaries,
) -> Result<Vec<SegmentStatus>> {
    status_of(run, manifest, selection, None, known)
}

/// [`status_with`] over only `chunks` (`(segment, chunk)`) of the selected segments, when
/// given: a shard's part, so a shard never reads the other shards' ledgers.
pub(super) fn status_of(
    run: &Path,
    manifest: &Manifest,
    selection: &Selection,
    chunks: Option<&[(usize, usize)]>,
    known: &mut Summaries,
) -> Result<Vec<SegmentStatus>> {
    let mut out = Vec::new();
    for &s in selection.indexes() {
        let seg = &manifest.segments[s];
        let mine = |c: usize| chunks.is_none_or(|cs| cs.contains(&(s, c)));
        let mut st = SegmentStatus {
            segment: seg.name.clone(),
            donors: (0..seg.chunks.len())
                .filter(|&c| mine(c))
                .map(|c| seg.chunks[c].rows)
                .sum(),
            ..SegmentStatus::default()
        };
        let mut recorded = 0;
        for c in (0..seg.chunks.len()).filter(|&c| mine(c)) {
            let sum = known.get(run, manifest, s, c)?;
            st.sent += sum.sent;
            st.failed += sum.failed;
            st.deferred += sum.deferred;
            st.unknown += sum.unknown;
            st.suppressed += sum.suppressed;
            st.bounced_later += sum.bounced_later;
            st.complaints += sum.complaints;
            recorded += sum.recorded();
        }
        st.pending = st.donors.saturating_sub(recorded);
        out.push(st);
    }
    Ok(out)
}

/// What the ledgers of the selected segments say beyond the totals: the reasons, most
/// donors first, and when the ledgers were last written and a donor last deferred.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Every reason, most donors first.
    pub reasons: Vec<Reason>,
    /// The newest record in any ledger.
    pub last_at: Option<Timestamp>,
    /// The newest deferral.
    pub last_deferred_at: Option<Timestamp>,
}

/// Per-segment totals of the selected segments and their [`Findings`], read from the ledgers.
pub fn status_and_findings(
    run: &Path,
    manifest: &Manifest,
    selection: &Selection,
) -> Result<(Vec<SegmentStatus>, Findings)> {
    let mut known = Summaries::default();
    let segments = status_with(run, manifest, selection, &mut known)?;
    let mut reasons: HashMap<ReasonKey, u64> = HashMap::new();
    let mut f = Findings::default();
    for &s in selection.indexes() {
        for c in 0..manifest.segments[s].chunks.len() {
            let sum = known.get(run, manifest, s, c)?;
            for (k, n) in &sum.reasons {
                *reasons.entry(k.clone()).or_insert(0) += n;
            }
            f.last_at = f.last_at.max(sum.last_at);
            f.last_deferred_at = f.last_deferred_at.max(sum.last_deferred_at);
        }
    }
    f.reasons = reasons
        .into_iter()
        .map(|((state, code, text), donors)| Reason {
            state,
            code,
            text,
            donors,
        })
        .collect();
    f.reasons.sort_by(|a, b| {
        b.donors
            .cmp(&a.donors)
            .then_with(|| (a.state, a.code, &a.text).cmp(&(b.state, b.code, &b.text)))
    });
    Ok((segments, f))
}

/// Writes a report as JSON to `path`, replacing it whole.
pub(super) fn write_report(path: &Path, report: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(path, text.as_bytes())
}

/// Writes, from the ledgers, `failed.csv`, `unknown.csv`, `suppressed.csv` and
/// `suppress-bounced.txt`, each rewritten whole so it always matches the ledgers.
pub(super) fn write_lists(run: &Path, manifest: &Manifest, known: &mut Summaries) -> Result<()> {
    let addresses = Addresses::new(manifest).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: the header has no column {:?}: the manifest is damaged; segment again",
            run.join(crate::rundir::MANIFEST).display(),
            manifest.email_column
        )
    })?;
    let mut failed = csv::Writer::from_writer(Vec::new());
    failed.write_record(["segment", "chunk", "line", "email", "code", "reason", "at"])?;
    let mut unknown = csv::Writer::from_writer(Vec::new());
    unknown.write_record(["segment", "chunk", "line", "email", "reason", "at"])?;
    let mut suppressed = csv::Writer::from_writer(Vec::new());
    suppressed.write_record(["segment", "chunk", "line", "email", "reason", "at"])?;
    let mut bounced = String::from(
        "# Addresses that bounced permanently (5.1.x/5.2.1), bounced later, complained or replied to unsubscribe in this run: pass to `campaign segment --suppress`.\n",
    );
    for (s, seg) in manifest.segments.iter().enumerate() {
        for (c, chunk) in seg.chunks.iter().enumerate() {
            let listed = &known.get(run, manifest, s, c)?.listed;
            if listed.is_empty() {
                continue;
            }
            let bytes = run::read_chunk(run, chunk)?;
            run::for_each_row(&bytes, |rec| {
                let Some((key, email)) = addresses.key_of(rec) else {
                    return Ok(());
                };
                let Some(e) = listed.get(&key) else {
                    return Ok(());
                };
                let at = e.at.map(|t| t.to_string()).unwrap_or_default();
                let line = rec.line.to_string();
                if e.feedback.is_some() && e.state == State::Sent {
                    bounced.push_str(&email);
                    bounced.push('\n');
                }
                match e.state {
                    State::Failed => {
                        failed.write_record([
                            seg.name.as_str(),
                            &chunk.file,
                            &line,
                            &email,
                            &e.code.map(|c| c.to_string()).unwrap_or_default(),
                            &e.text,
                            &at,
                        ])?;
                        if e.suppress {
                            bounced.push_str(&email);
                            bounced.push('\n');
                        }
                    }
                    State::Unknown | State::Suppressed => {
                        let list = match e.state {
                            State::Unknown => &mut unknown,
                            _ => &mut suppressed,
                        };
                        list.write_record([
                            seg.name.as_str(),
                            &chunk.file,
                            &line,
                            &email,
                            &e.text,
                            &at,
                        ])?;
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
    }
    write_atomic(&run.join(FAILED_CSV), &failed.into_inner()?)?;
    write_atomic(&run.join(UNKNOWN_CSV), &unknown.into_inner()?)?;
    write_atomic(&run.join(SUPPRESSED_CSV), &suppressed.into_inner()?)?;
    write_atomic(&run.join(SUPPRESS_BOUNCED), bounced.as_bytes())?;
    Ok(())
}

/// Replaces a file whole, so a reader never sees half of it, and of two writers (shards on
/// two hosts) the last rename wins with a whole file of its own.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = crate::rundir::temporary_beside(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The whole run's report, written by `campaign report` after the shards: the run's totals
/// from the ledgers and each shard's last report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// Per segment, from the ledgers.
    pub segments: Vec<SegmentStatus>,
    /// Each `RUN/reports/shard-I-of-N.json`, by file name.
    pub shards: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The shards' reports, `RUN/reports/*.json`; none when the folder is missing.
pub(super) fn shard_reports(run: &Path) -> Result<Vec<std::path::PathBuf>> {
    let dir = run.join(crate::rundir::REPORTS_DIR);
    let mut files = Vec::new();
    if !dir.is_dir() {
        return Ok(files);
    }
    let reading = || format!("reading {}", dir.display());
    for entry in std::fs::read_dir(&dir).with_context(reading)? {
        let path = entry.with_context(reading)?.path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    Ok(files)
}

/// Writes the whole run's `report.json`, `failed.csv`, `unknown.csv`, `suppressed.csv` and
/// `suppress-bounced.txt` from the ledgers. The caller holds the run's lock exclusively, so
/// no send writes beside it.
pub fn whole_run(run: &Path, manifest: &Manifest) -> Result<RunReport> {
    let mut known = Summaries::default();
    let segments = status_with(run, manifest, &Selection::all(manifest), &mut known)?;
    let mut shards = std::collections::BTreeMap::new();
    for path in shard_reports(run)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a shard report", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        shards.insert(name.unwrap_or_default(), value);
    }
    let report = RunReport { segments, shards };
    write_report(&run.join(crate::rundir::REPORT_JSON), &report)?;
    write_lists(run, manifest, &mut known)?;
    Ok(report)
}
