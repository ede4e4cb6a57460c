//! From a chunk row to the exact bytes a donor receives.
//!
//! Owns the one code path that turns a donor row into a message: check the row, render the
//! segment's templates, compose the MIME message, sign it (DKIM). `send --dry-run` and a real send both call
//! [`Preparer::prepare`], so what a preview shows is what is sent. It never sends, and never
//! writes files.

use std::path::Path;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::campaign::{Campaign, SegmentDef};
use crate::csvio::RawRecord;
use crate::donor::DonorReader;
use crate::email::{RecipientKey, normalise};
use crate::message::dkim::Signers;
use crate::message::{Composer, MessageDate, Outgoing, Scratch, recipient};
use crate::render::{Donor, Problem, RunInfo, TemplateSet};
use crate::schema::{Schema, TypedRow};
use crate::suppress::{Suppressed, Suppressions};
use crate::transport::Envelope;
use crate::unsubscribe::{PLACEHOLDER_TOKEN, UnsubscribeSecret};

/// One donor's message, ready for SMTP.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The donor's identity in the ledger.
    pub key: RecipientKey,
    /// The envelope: `[message] from` to the address as the donor gave it, trimmed.
    pub envelope: Envelope,
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

/// Per-thread working space, so rows are checked and messages written without allocating
/// each time, and body lines met before are not encoded again.
#[derive(Default)]
pub struct Workspace {
    typed: TypedRow,
    message: Scratch,
    /// The Date header for this thread's messages, when it keeps its own; otherwise the
    /// preparer's, from when it was made.
    date: Option<MessageDate>,
}

impl Workspace {
    /// Takes back a message's bytes once they are no longer needed, for the next message.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        self.message.recycle(bytes);
    }

    /// Dates the messages prepared from now on `at`. A send that runs for hours (a rate,
    /// a relay's pushback) would otherwise date its last message when it started.
    ///
    /// # Errors
    /// [`MessageError`] for a time before 1970; the date already set stays.
    pub fn set_date(&mut self, at: Timestamp) -> Result<(), crate::message::MessageError> {
        self.date = Some(MessageDate::new(at)?);
        Ok(())
    }
}

/// Everything needed to prepare any donor's message of a run; shared by all worker threads.
pub struct Preparer {
    reader: DonorReader,
    templates: TemplateSet,
    composer: Composer,
    dkim: Signers,
    secret: Option<UnsubscribeSecret>,
    campaign_id: String,
    date: MessageDate,
}

/// What a [`Preparer`] is built from: the donor file's header and the segments, from a run's
/// manifest (send) or from the campaign file and an export (check).
pub struct Inputs<'a> {
    /// The campaign file.
    pub campaign: &'a Campaign,
    /// The donor file's header.
    pub header: &'a [String],
    /// The column holding addresses.
    pub email_column: &'a str,
    /// The segments whose templates are used.
    pub segments: &'a [SegmentDef],
    /// The run's date (`today` in templates).
    pub as_of: Date,
    /// Check template variables against `header` (off when the header is made up from the
    /// declared columns only).
    pub check_variables: bool,
}

impl Preparer {
    /// Compiles the campaign's templates and message settings, returning every problem found
    /// (as `file:line: message` lines) when they cannot be used.
    pub fn new(
        inputs: &Inputs<'_>,
        secret: Option<UnsubscribeSecret>,
        now: Timestamp,
    ) -> Result<Preparer, Vec<String>> {
        let campaign = inputs.campaign;
        let mut problems = Vec::new();
        // Every part is checked even when an earlier one failed, so `check` reports all.
        let reader = match Schema::new(inputs.header, &campaign.columns) {
            Err(e) => {
                problems.push(format!("{}: {e}", campaign.path.display()));
                None
            }
            Ok(schema) => match schema.column(inputs.email_column).map(|c| c.index) {
                Some(i) => Some(DonorReader::new(schema, i, inputs.email_column)),
                None => {
                    problems.push(format!(
                        "{}: email_column {:?} is not a column of the donor file; its columns are {}",
                        campaign.path.display(),
                        inputs.email_column,
                        inputs.header.join(", ")
                    ));
                    None
                }
            },
        };
        let composer = match &campaign.message {
            None => {
                problems.push(format!(
                    "{}: no [message] table: add one with at least `from` and `unsubscribe_url` (see README)",
                    campaign.path.display()
                ));
                None
            }
            Some(settings) => match Composer::new(campaign.id.as_str(), settings) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("{}: {e}", campaign.path.display()));
                    None
                }
            },
        };
        let base = campaign.path.parent().unwrap_or(Path::new(""));
        let dkim = Signers::load(&campaign.dkim, base).unwrap_or_else(|p| {
            problems.extend(
                p.into_iter()
                    .map(|e| format!("{}: {e}", campaign.path.display())),
            );
            Signers::default()
        });
        let run = RunInfo::new(campaign, inputs.as_of);
        let (templates, load_problems) = TemplateSet::load_with_problems(campaign, run);
        problems.extend(load_problems.iter().map(Problem::to_string));
        if inputs.check_variables {
            problems.extend(
                templates
                    .check(inputs.segments, inputs.header)
                    .iter()
                    .map(Problem::to_string),
            );
        }
        let date = MessageDate::new(now)
            .map_err(|e| format!("{}: {e}: check the system clock", campaign.path.display()));
        if let Err(e) = &date {
            problems.push(e.clone());
        }
        match (reader, composer, date) {
            (Some(reader), Some(composer), Ok(date)) if problems.is_empty() => Ok(Preparer {
                reader,
                templates,
                composer,
                dkim,
                secret,
                campaign_id: campaign.id.as_str().to_owned(),
                date,
            }),
            _ => Err(problems),
        }
    }

    /// The domain of `[message] from`, as parsed for the messages.
    pub fn from_domain(&self) -> &str {
        self.composer.from_domain()
    }

    /// The DKIM keys every message is signed with.
    pub fn dkim(&self) -> &Signers {
        &self.dkim
    }

    /// The templates, e.g. for their fingerprint.
    pub fn templates(&self) -> &TemplateSet {
        &self.templates
    }

    /// The recipient key of a chunk row, without rendering anything (to consult the ledger
    /// first); `None` when the row's address does not parse (`prepare` then says why).
    pub fn key(&self, rec: &RawRecord<'_>) -> Option<RecipientKey> {
        let fields = self.reader.fields(rec).ok()?;
        Some(self.reader.address(&fields).ok()?.key())
    }

    /// Whether a row is a donor this preparer can take: its fields, address and declared
    /// values read.
    pub fn reads(&self, rec: &RawRecord<'_>, ws: &mut Workspace) -> bool {
        self.reader.fields(rec).is_ok_and(|fields| {
            self.reader.address(&fields).is_ok()
                && self.reader.typed(&fields, &mut ws.typed).is_ok()
        })
    }

    /// Why `suppressions` stop this chunk row's donor, if they do (`None` too when the
    /// address does not parse: `prepare` then says why).
    pub fn suppressed(
        &self,
        rec: &RawRecord<'_>,
        suppressions: &Suppressions,
    ) -> Option<Suppressed> {
        let fields = self.reader.fields(rec).ok()?;
        let addr = self.reader.address(&fields).ok()?;
        suppressions.check(&addr, addr.key())
    }

    /// [`Preparer::key`] with the normalised address, for reports.
    pub fn key_of(&self, rec: &RawRecord<'_>) -> Option<(RecipientKey, String)> {
        let fields = self.reader.fields(rec).ok()?;
        let addr = self.reader.address(&fields).ok()?;
        Some((addr.key(), normalise(&addr)))
    }

    /// The message for one chunk row of the segment `segment`, from its `template`.
    pub fn prepare(
        &self,
        segment: &str,
        template: &str,
        rec: &RawRecord<'_>,
        ws: &mut Workspace,
    ) -> Result<Prepared, PrepareError> {
        self.prepare_as(segment, template, rec, ws, "")
    }

    /// [`Preparer::prepare`] for a proof: the subject starts with `[PROOF] ` (signed so, so
    /// DKIM still verifies), and the envelope goes to `proof_to`, not the donor.
    pub fn prepare_proof(
        &self,
        segment: &str,
        template: &str,
        rec: &RawRecord<'_>,
        proof_to: &lettre::Address,
    ) -> Result<Prepared, PrepareError> {
        let mut p = self.prepare_as(
            segment,
            template,
            rec,
            &mut Workspace::default(),
            "[PROOF] ",
        )?;
        p.envelope = Envelope::new(self.composer.sender(p.key), proof_to.clone());
        Ok(p)
    }

    fn prepare_as(
        &self,
        segment: &str,
        template: &str,
        rec: &RawRecord<'_>,
        ws: &mut Workspace,
        subject_prefix: &str,
    ) -> Result<Prepared, PrepareError> {
        let fail = |email: &str, reason: String| PrepareError {
            email: email.to_owned(),
            reason,
        };
        // Chunks hold rows `segment` validated, so these fail only for a damaged run, worded
        // as `segment` words them.
        let fields = self.reader.fields(rec).map_err(|p| fail("", p.reason))?;
        let addr = self
            .reader
            .address(&fields)
            .map_err(|p| fail(self.reader.raw_address(&fields), p.reason))?;
        let email = normalise(&addr);
        self.reader
            .typed(&fields, &mut ws.typed)
            .map_err(|p| fail(&email, p.reason))?;
        let token = match &self.secret {
            Some(s) => s.token(&self.campaign_id, &email),
            None => PLACEHOLDER_TOKEN.to_owned(),
        };
        let key = addr.key();
        let rendered = self
            .templates
            .render(
                template,
                &Donor {
                    schema: self.reader.schema(),
                    fields: &fields,
                    typed: &ws.typed,
                    email: &email,
                    segment,
                    unsubscribe_token: &token,
                },
            )
            .map_err(|e| fail(&email, e.to_string()))?;
        // A domain with an ASCII form goes out in it, in the envelope and in To alike, so the
        // donor needs no SMTPUTF8 of the relay; the ledger keeps the address as given.
        let ascii = addr.ascii_domain_form();
        let wire_to = ascii.as_deref().unwrap_or(addr.as_str());
        // Read by lettre once, for the To header and the envelope both.
        let to = recipient(wire_to).map_err(|e| fail(&email, e.to_string()))?;
        let bytes = self
            .composer
            .compose(
                &Outgoing {
                    to: &to,
                    to_name: rendered.to_name.as_deref(),
                    subject: &if subject_prefix.is_empty() {
                        std::borrow::Cow::Borrowed(rendered.subject.as_str())
                    } else {
                        std::borrow::Cow::Owned(format!("{subject_prefix}{}", rendered.subject))
                    },
                    text: &rendered.text,
                    html: rendered.html.as_deref(),
                    unsubscribe_url: rendered.unsubscribe_url.as_deref(),
                    list_id: rendered.list_id.as_deref(),
                    feedback_id: rendered.feedback_id.as_deref(),
                    email: &email,
                    unsubscribe_token: &token,
                    key,
                    date: ws.date.as_ref().unwrap_or(&self.date),
                },
                &mut ws.message,
            )
            .map_err(|e| fail(&email, e.to_string()))?;
        let bytes = self.dkim.sign(bytes).map_err(|e| fail(&email, e))?;
        Ok(Prepared {
            key,
            envelope: Envelope::new(self.composer.sender(key), to),
            bytes,
        })
    }
}
