//! `campaign send RUN --proof-to ADDR`: one message per selected segment (or one donor's)
//! through the configured relay to the marketer's inbox; nothing recorded in the run.

use anyhow::anyhow;

use campaign::clock::SystemClock;
use campaign::exit::{Code, Error, escape_controls};
use campaign::proof;
use campaign::transport::{Outcome, SmtpTransport};

use super::send::Args;

/// Sends the proofs.
pub fn run(args: &Args, to: &str) -> Result<Code, Error> {
    let to: lettre::Address = to
        .trim()
        .parse()
        .map_err(|e| super::usage(anyhow!("--proof-to {to:?} is not an address: {e}")))?;
    let clock = SystemClock::new();
    let super::guards::Started {
        run,
        selection,
        ready,
        settings,
    } = super::guards::start(args, &clock, false)?;
    let proofs = proof::pick(
        &run,
        &selection,
        &ready.preparer,
        args.donor.as_deref(),
        &to,
    )
    .map_err(super::usage)?;
    let outcomes = proof::send(&mut SmtpTransport::new(settings), &proofs);
    let mut out = String::new();
    let mut all = true;
    for (p, o) in proofs.iter().zip(&outcomes) {
        let line = match o {
            Outcome::Accepted { reply } => format!("sent ({reply})"),
            other => {
                all = false;
                format!("NOT sent: {other:?}")
            }
        };
        out.push_str(&format!(
            "proof of segment {} (donor {}) to {to}: {}\n",
            p.segment,
            p.donor,
            escape_controls(&line)
        ));
    }
    out.push_str("nothing was recorded in the run: the donors will get their messages from `campaign send`\n");
    super::print_bytes(out.as_bytes())?;
    Ok(if all { Code::Success } else { Code::Halted })
}
