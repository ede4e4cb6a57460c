//! One module per subcommand: each turns parsed flags into checked options, calls the library
//! and prints the result. Nothing here is reused by another command.

pub mod check;
pub mod deliver;
pub mod segment;
pub mod send;
pub mod status;

use std::io::Write;

use anyhow::Context;

use crate::exit::Error;

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout").map_err(Error::from),
    }
}

/// The look of every progress bar (`template` in indicatif's syntax).
fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Width of the first column of a per-segment table: the longest name, at least "segment".
fn segment_column<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(0).max("segment".len())
}
