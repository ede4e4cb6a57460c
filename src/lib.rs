//! `campaign`: segment a donor export into a run directory, then render and send it.
//!
//! The binary in `main.rs` only parses arguments and maps results to exit codes; everything a
//! test might want to call lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod campaign;
pub mod clock;
pub mod csvio;
pub mod digest;
pub mod dryrun;
pub mod email;
pub mod exit;
pub mod ledger;
pub mod manifest;
pub mod message;
pub mod preflight;
pub mod prepare;
pub mod progress;
pub mod render;
pub mod rules;
pub mod run;
pub mod rundir;
pub mod schema;
pub mod segment;
pub mod send;
pub mod suppress;
pub mod transport;
pub mod unsubscribe;
