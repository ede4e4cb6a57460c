//! From a chunk row to the exact bytes a donor receives.
//!
//! Owns the one code path that turns a donor row into a message: check the row, render the
//! segment's templates, compose the MIME message. `send --dry-run` and a real send both call
//! [`Preparer::prepare`], so what a preview shows is what is sent. It never sends, and never
//! writes files.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::campaign::{Campaign, SegmentDef, SegmentName};
use crate::csvio::{RawReader, RawRecord, hex};
use crate::email::{Address, RecipientKey, normalise};
use crate::manifest::{self, Manifest};
use crate::message::{Composer, Outgoing};
use crate::render::{Donor, Problem, RunInfo, TemplateSet};
use crate::rundir::LEDGER_DIR;
use crate::schema::{Fields, Schema, TypedRow};
use crate::unsubscribe::{PLACEHOLDER_TOKEN, UnsubscribeSecret};

/// One donor's message, ready for SMTP.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The donor's identity in the ledger.
    pub key: RecipientKey,
    /// The envelope recipient: the address as the donor gave it, trimmed.
    pub to: String,
    /// The full message (CRLF line endings).
    pub bytes: Vec<u8>,
}

/// Why one donor's message could not be prepared; the run goes on without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareError {
    /// The donor's address as far as it could be read.
    pub email: String,
    /// What is wrong, for the failures file.
    pub reason: String,
}

/// Per-thread working space, so rows are checked without allocating each time.
#[derive(Default)]
pub struct Workspace {
    typed: TypedRow,
}

/// Everything needed to prepare any donor's message of a run; shared by all worker threads.
pub struct Preparer {
    schema: Schema,
    email_idx: usize,
    templates: TemplateSet,
    composer: Composer,
    secret: Option<UnsubscribeSecret>,
    campaign_id: String,
    now: Timestamp,
}

/// The segments of a run as the manifest records them (names and templates are fixed when a
/// run is segmented; the campaign file may have changed since).
pub fn run_segments(manifest: &Manifest) -> Result<Vec<SegmentDef>> {
    manifest
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

impl Preparer {
    /// Compiles the campaign's templates and message settings for a run, returning every
    /// problem found (as `file:line: message` lines) when they cannot be used.
    pub fn new(
        manifest: &Manifest,
        campaign: &Campaign,
        secret: Option<UnsubscribeSecret>,
        now: Timestamp,
    ) -> Result<Preparer, Vec<String>> {
        let mut problems = Vec::new();
        let schema = Schema::new(&manifest.header, &campaign.columns)
            .map_err(|e| vec![format!("{}: {e}", campaign.path.display())])?;
        let email_idx = match schema.column(&manifest.email_column) {
            Some(c) => c.index,
            None => {
                return Err(vec![format!(
                    "the run's header has no column {:?}",
                    manifest.email_column
                )]);
            }
        };
        let composer = match &campaign.message {
            None => {
                problems.push(format!(
                    "{}: no [message] table: add one with at least `from` and `unsubscribe_url` (see README)",
                    campaign.path.display()
                ));
                None
            }
            Some(settings) => match Composer::new(&manifest.campaign_id, settings) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("{}: {e}", campaign.path.display()));
                    None
                }
            },
        };
        let as_of = manifest
            .as_of
            .parse()
            .map_err(|e| vec![format!("manifest: as_of {:?}: {e}", manifest.as_of)])?;
        let run = RunInfo::new(campaign, as_of);
        let templates = match TemplateSet::load(campaign, run) {
            Ok(t) => {
                let segments = run_segments(manifest).map_err(|e| vec![e.to_string()])?;
                problems.extend(
                    t.check(&segments, &manifest.header)
                        .iter()
                        .map(Problem::to_string),
                );
                Some(t)
            }
            Err(ps) => {
                problems.extend(ps.iter().map(Problem::to_string));
                None
            }
        };
        match (templates, composer) {
            (Some(templates), Some(composer)) if problems.is_empty() => Ok(Preparer {
                schema,
                email_idx,
                templates,
                composer,
                secret,
                campaign_id: manifest.campaign_id.clone(),
                now,
            }),
            _ => Err(problems),
        }
    }

    /// The templates, e.g. for their fingerprint.
    pub fn templates(&self) -> &TemplateSet {
        &self.templates
    }

    /// The recipient key of a chunk row, without rendering anything (to consult the ledger
    /// first); `None` when the row's address does not parse (`prepare` then says why).
    pub fn key_of(&self, rec: &RawRecord<'_>) -> Option<(RecipientKey, String)> {
        let fields = self.fields(rec).ok()?;
        let addr = Address::parse(fields.get(self.email_idx)).ok()?;
        Some((addr.key(), normalise(&addr)))
    }

    /// A chunk row's fields, or why the row cannot be read (chunks hold rows `segment`
    /// validated, so this only fails for a damaged run).
    fn fields<'r>(&self, rec: &RawRecord<'r>) -> Result<Fields<'r>, String> {
        let fields = rec
            .fields()
            .map_err(|_| "the row is not valid UTF-8".to_owned())?;
        if fields.len() != self.schema.len() {
            return Err(format!(
                "has {} fields but the header has {}",
                fields.len(),
                self.schema.len()
            ));
        }
        Ok(fields)
    }

    /// The message for one chunk row of `segment`.
    pub fn prepare(
        &self,
        segment: &manifest::Segment,
        rec: &RawRecord<'_>,
        ws: &mut Workspace,
    ) -> Result<Prepared, PrepareError> {
        let fail = |email: &str, reason: String| PrepareError {
            email: email.to_owned(),
            reason,
        };
        let fields = self.fields(rec).map_err(|reason| fail("", reason))?;
        let raw_email = fields.get(self.email_idx);
        let addr = Address::parse(raw_email).map_err(|e| fail(raw_email, e.to_string()))?;
        let email = normalise(&addr);
        self.schema
            .parse_row(&fields, &mut ws.typed)
            .map_err(|e| fail(&email, e.to_string()))?;
        let token = match &self.secret {
            Some(s) => s.token(&self.campaign_id, &email),
            None => PLACEHOLDER_TOKEN.to_owned(),
        };
        let key = addr.key();
        let rendered = self
            .templates
            .render(
                &segment.template,
                &Donor {
                    schema: &self.schema,
                    fields: &fields,
                    typed: &ws.typed,
                    email: &email,
                    segment: &segment.name,
                    unsubscribe_token: &token,
                },
            )
            .map_err(|e| fail(&email, e.to_string()))?;
        let bytes = self
            .composer
            .compose(&Outgoing {
                to: addr.as_str(),
                to_name: rendered.to_name.as_deref(),
                subject: &rendered.subject,
                text: &rendered.text,
                html: rendered.html.as_deref(),
                unsubscribe_url: rendered.unsubscribe_url.as_deref(),
                key,
                date: self.now,
            })
            .map_err(|e| fail(&email, e.to_string()))?;
        Ok(Prepared {
            key,
            to: addr.as_str().to_owned(),
            bytes,
        })
    }
}

/// Reads a chunk file and checks it is the one `segment` wrote.
pub fn read_chunk(run: &Path, chunk: &manifest::Chunk) -> Result<Vec<u8>> {
    let path = run.join(&chunk.file);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let sha = hex(&Sha256::digest(&bytes));
    if sha != chunk.sha256 {
        anyhow::bail!(
            "{} has changed since `campaign segment` wrote it (SHA-256 differs from the manifest): it was edited, or lost data in a crash. Chunks must not be edited; segment again (with --force if nothing was sent yet)",
            path.display()
        );
    }
    Ok(bytes)
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

/// Where a run records the fingerprint of the templates it started sending with.
pub const TEMPLATES_FINGERPRINT: &str = "templates.sha256";

/// Checks the templates are the ones sending started with, if it has started (a run that
/// has not started sending records no fingerprint).
pub fn check_templates_unchanged(run: &Path, fingerprint: &str) -> Result<()> {
    let path = run.join(LEDGER_DIR).join(TEMPLATES_FINGERPRINT);
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        Ok(recorded) => {
            if recorded.trim() == fingerprint {
                Ok(())
            } else {
                anyhow::bail!(
                    "the templates or [message] settings changed after this run started sending ({} records the old fingerprint); part of the run already got the old message. Restore the old templates to finish this run, or segment a new run for the new message (it will re-mail donors already sent to unless you pass their addresses to --suppress)",
                    path.display()
                )
            }
        }
    }
}
