//! `campaign`: segment a donor export into a run directory, then render and send it.
//!
//! The pipeline, in the order of the modules below:
//!
//! ```text
//!  campaign file ─ campaign (typed settings), rules (the `when` language)
//!  donor CSV ──── csvio ─ schema ─ email ─ donor ─ suppress ─ segment ──► rundir + manifest
//!                                                                 (the run directory)
//!  run directory ─ run (opened, chunks read back) ─ preflight (one check for check,
//!                  dry run and send) ─ render ─ message ─ unsubscribe ─ prepare
//!                  ├─ dryrun: previews, nothing sent
//!                  └─ send: plan ─ worker ─ transport (SMTP) ─ ledger ─ reports
//!                           ▲ suppress (re-read during the send)
//!  what comes back ─ bounce (DSNs, complaints, unsubscribe replies) ─► suppression list
//!                                                                   + ledger feedback
//!  donors' clicks ── server (one-click unsubscribe endpoint) ──────────► suppression list
//! ```
//!
//! Cross-cutting seams: `clock` (all time), `progress` (events, drawn by the binary),
//! `digest` (SHA-256 as the manifest records it), `exit` (exit codes). The binary (`main.rs`,
//! with the command line and the commands' output) only maps flags to these and results to
//! exit codes; everything a test might want to call lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// This build's version and the git commit it was built from, e.g. `0.1.0 (4e9a7991a2b3)`:
/// `--version`, and the manifest's `tool_version`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CAMPAIGN_COMMIT"),
    ")"
);

// The campaign file, and a first one to start from.
pub mod campaign;
pub mod init;
pub mod rules;

// segment: the export in, a run directory out.
pub mod csvio;
pub mod schema;

pub mod donor;
pub mod email;
pub mod suppress;

pub mod segment;

// explain: one donor's story in a run, from the run.
pub mod explain;

pub mod manifest;
pub mod rundir;

// send: the run directory in, messages out.
pub mod run;

pub mod preflight;

pub mod render;

pub mod message;
pub mod unsubscribe;

pub mod prepare;

pub mod dryrun;
pub mod proof;

pub mod send;
pub mod transport;

pub mod ledger;
pub mod storage;

// After sending: what comes back.
pub mod bounce;
pub mod server;

// Seams every step uses.
pub mod clock;
pub mod digest;
pub mod exit;
pub mod percent;
pub mod progress;
