//! The binary's side of each subcommand: one module per subcommand turns parsed flags into
//! checked options, calls the library, prints the result and picks the exit code; the
//! modules beside them only print (tables, progress bars). Nothing here does library work:
//! no file under `src/cmd/` opens a ledger, resolves a setting or renders a message itself.

pub mod bounces;
pub mod check;
pub mod completions;
mod deliver;
mod dryrun;
pub mod explain;
mod guards;
pub mod init;
pub mod man;
mod progress;
mod proof;
pub mod report;
mod run_table;
pub mod segment;
pub mod send;
pub mod status;
mod summary;
pub mod unsubscribe_server;
mod values;

use std::io::Write;

use anyhow::Context;

use campaign::exit::{Code, Error, escape_controls};
use campaign::preflight::Findings;
use campaign::run::OpenedRun;

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout").map_err(Error::from),
    }
}

/// Width of the first column of a per-segment table: the longest name, at least "segment".
fn segment_column<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(0).max("segment".len())
}

/// A configuration problem: exit 2.
fn usage(e: impl Into<anyhow::Error>) -> Error {
    Error::new(Code::Usage, e)
}

/// The pre-flight's refusal of a run: every problem, then the notes, as one error (exit 2).
fn refused(run: &OpenedRun, f: Findings) -> Error {
    warn(&f.notes);
    usage(anyhow::anyhow!(
        "{} cannot be used for this run; `campaign check` lists the same problems:\n{}",
        run.campaign.path.display(),
        f.problems.join("\n")
    ))
}

/// A probe that failed: 6 when the relay refused (fix the settings), 5 when it could not be
/// reached (try later).
fn probe_error(e: campaign::transport::smtp::ProbeError) -> Error {
    use campaign::transport::smtp::ProbeError;
    match e {
        ProbeError::Refused(_) => Error::new(Code::Halted, e),
        ProbeError::Unreachable(_) => Error::new(Code::Remaining, e),
    }
}

/// Prints warnings on stderr, with donor data's control characters escaped.
fn warn(notes: &[String]) {
    for n in notes {
        eprintln!("campaign: warning: {}", escape_controls(n));
    }
}
