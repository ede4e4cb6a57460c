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
