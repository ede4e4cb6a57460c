//! Proofs: before a campaign goes out, one message per selected segment (or one donor's)
//! sent through the configured relay to the marketer's own inbox, exactly as the donor would
//! get it but with `[PROOF] ` before the subject.
//!
//! Owns choosing the donors (the first of each segment, or the one asked for) and sending
//! their messages to the proof address. It never writes the ledger or anything else in the
//! run: a proof is not a send, and the run stays as it was.

use anyhow::{Result, anyhow, bail};

use crate::email::Address;
use crate::prepare::{Prepared, Preparer};
use crate::run::{self, OpenedRun, Selection};
use crate::transport::{Journal, Outbound, Outcome, Transport};

/// One proof, before and after sending.
#[derive(Debug)]
pub struct Proof {
    /// The segment it shows.
    pub segment: String,
    /// The donor whose message it is (normalised).
    pub donor: String,
    /// The message, addressed (envelope only) to the proof address.
    pub prepared: Prepared,
}

/// The proofs for `selection`: the first donor of each segment (a segment without donors
/// gives none), or only `donor`'s message.
pub fn pick(
    run: &OpenedRun,
    selection: &Selection,
    preparer: &Preparer,
    donor: Option<&str>,
    to: &lettre::Address,
) -> Result<Vec<Proof>> {
    let target = donor
        .map(|d| {
            Address::parse(d)
                .map(|a| a.key())
                .map_err(|e| anyhow!("--donor {d:?} is not an address: {e}"))
        })
        .transpose()?;
    let addresses = run::Addresses::new(&run.manifest)
        .ok_or_else(|| anyhow!("the run's manifest names no email column in its header"))?;
    let mut proofs = Vec::new();
    for &s in selection.indexes() {
        let seg = &run.manifest.segments[s];
        'chunks: for chunk in &seg.chunks {
            let bytes = run.read_chunk(chunk)?;
            let mut found = None;
            run::for_each_row(&bytes, |rec| {
                if found.is_some() {
                    return Ok(());
                }
                let Some((key, email)) = addresses.key_of(rec) else {
                    return Ok(());
                };
                if target.is_some_and(|t| t != key) {
                    return Ok(());
                }
                let p = preparer
                    .prepare_proof(&seg.name, &seg.template, rec, to)
                    .map_err(|e| {
                        anyhow!(
                            "{}:{}: the message for {} cannot be rendered: {}",
                            chunk.file,
                            rec.line,
                            e.email,
                            e.reason
                        )
                    })?;
                found = Some((email, p));
                Ok(())
            })?;
            if let Some((donor, p)) = found {
                proofs.push(Proof {
                    segment: seg.name.clone(),
                    donor,
                    prepared: p,
                });
                break 'chunks;
            }
        }
    }
    if proofs.is_empty() {
        match donor {
            Some(d) => bail!(
                "no donor in the selected segments has the address {d:?}; it may have been dropped by segment (see the run's dropped/ files)"
            ),
            None => bail!("the selected segments have no donors, so there is nothing to proof"),
        }
    }
    Ok(proofs)
}

/// Sends the proofs on `transport`; each one's outcome, in order.
pub fn send(transport: &mut dyn Transport, proofs: &[Proof]) -> Vec<Outcome> {
    struct Collect(Vec<Option<Outcome>>);
    impl Journal for Collect {
        fn proceed(&mut self, _: usize) -> bool {
            true
        }
        fn transmitting(&mut self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn outcome(&mut self, i: usize, outcome: Outcome) {
            self.0[i] = Some(outcome);
        }
    }
    let batch: Vec<Outbound<'_>> = proofs
        .iter()
        .map(|p| Outbound {
            envelope: &p.prepared.envelope,
            message: &p.prepared.bytes,
        })
        .collect();
    let mut journal = Collect(vec![None; proofs.len()]);
    transport.send_batch(&batch, &mut journal);
    transport.close();
    journal
        .0
        .into_iter()
        .map(|o| {
            o.unwrap_or(Outcome::Deferred {
                code: None,
                text: "not sent: the connection stopped before it".into(),
                throttle: false,
            })
        })
        .collect()
}
