//! What must hold before a real send starts, besides the pre-flight: no halt marker (or
//! `--clear-halt`), and for `--shard` a file system whose locks reach other hosts.

use anyhow::anyhow;

use campaign::exit::{Code, Error};
use campaign::send::halt;
use campaign::storage::{self, Verdict};

use super::send::Args;

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
