//! What must hold before anything goes to the relay (a send or proofs): the run opens, the
//! pre-flight passes, the relay answers and takes the login; for a send also no halt marker
//! (or `--clear-halt`), and for `--shard` a file system whose locks reach other hosts.

use std::sync::Arc;

use anyhow::anyhow;

use campaign::clock::Clock;
use campaign::exit::{Code, Error};
use campaign::preflight::{self, Environment, Purpose, Ready};
use campaign::run::{OpenedRun, Selection};
use campaign::send::halt;
use campaign::storage::{self, Verdict};
use campaign::transport::settings::SmtpSettings;
use campaign::transport::smtp;

use super::send::Args;

/// A run ready for the relay: opened, selected, pre-flighted, and the relay probed.
pub(super) struct Started {
    pub run: OpenedRun,
    pub selection: Selection,
    pub ready: Ready,
    pub settings: Arc<SmtpSettings>,
}

/// Opens the run and checks it as `send` does; `sending` adds the halt marker and storage
/// checks, which proofs do not need. The relay is probed once, so a typo in the host or a
/// wrong password stops with one clear message before anything is written.
pub(super) fn start(args: &Args, clock: &dyn Clock, sending: bool) -> Result<Started, Error> {
    let run = OpenedRun::open(&args.run, args.campaign.as_deref()).map_err(super::usage)?;
    let selection = run.select(&args.segments).map_err(super::usage)?;
    let mut ready = preflight::run(
        &run,
        &Environment::from_process(),
        Purpose::Send,
        clock.now(),
    )
    .map_err(|f| super::refused(&run, f))?;
    if sending {
        halt_marker(args)?;
        if args.shard.is_some() {
            storage_locks(args)?;
        }
    }
    let settings = Arc::new(
        ready
            .smtp
            .take()
            .ok_or_else(|| anyhow!("internal: a send passed its pre-flight without a relay"))?,
    );
    let relay = smtp::probe(&settings).map_err(super::probe_error)?;
    super::warn(relay.note().as_slice());
    Ok(Started {
        run,
        selection,
        ready,
        settings,
    })
}

/// Refuses to start while a halt marker is there, unless `--clear-halt` removes it.
pub(super) fn halt_marker(args: &Args) -> Result<(), Error> {
    if args.clear_halt {
        if halt::clear(&args.run)? {
            eprintln!(
                "campaign: cleared the halt marker {}",
                halt::path(&args.run).display()
            );
        }
        return Ok(());
    }
    match halt::read(&args.run)? {
        None => Ok(()),
        Some(why) => Err(Error::new(
            Code::Halted,
            anyhow!(
                "{} says a send halted this run: {why}",
                halt::path(&args.run).display()
            ),
        )),
    }
}

/// Refuses `--shard` on a file system whose locks do not reach other hosts, unless the loud
/// flag says the operator knows.
pub(super) fn storage_locks(args: &Args) -> Result<(), Error> {
    match storage::check(&args.run) {
        Verdict::Fine => Ok(()),
        Verdict::Warn(w) => {
            super::warn(&[w]);
            Ok(())
        }
        Verdict::Refuse(r) if args.trust_storage_locks_i_accept_duplicates => {
            super::warn(&[format!(
                "{r} (going on: --trust-storage-locks-i-accept-duplicates)"
            )]);
            Ok(())
        }
        Verdict::Refuse(r) => Err(super::usage(anyhow!(
            "refusing to send shards from this run directory: {r}. If you are sure its locks reach every host, pass --trust-storage-locks-i-accept-duplicates"
        ))),
    }
}
