//! bench/dkim.sh's signing loop: campaign's own DKIM signer (`message::dkim::Signers`, the
//! code a send runs) signing one message over and over, timed. bench/dkim.sh builds it once
//! per mail-auth crypto backend; it is not part of the campaign crate and never sends.
//!
//!     dkim-sign-BACKEND KEY.pem MESSAGE.eml SIGNATURES
//!
//! Prints one line: `<µs per signature> <signatures>`.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use campaign::message::dkim::{DkimTable, Signers};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, message, count] = args.as_slice() else {
        eprintln!("usage: dkim-sign-BACKEND KEY.pem MESSAGE.eml SIGNATURES");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u32>() else {
        eprintln!("SIGNATURES must be a whole number, not {count:?}");
        return ExitCode::from(2);
    };
    let table = DkimTable {
        domain: "park.example".into(),
        selector: "bench".into(),
        private_key_file: key.into(),
        algorithm: None,
    };
    let signers = match Signers::load(&[table], Path::new(".")) {
        Ok(s) => s,
        Err(problems) => {
            eprintln!("{}", problems.join("\n"));
            return ExitCode::FAILURE;
        }
    };
    let message = match std::fs::read(message) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot read {message}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A send signs a fresh Vec per message, so the copy is part of the cost measured (a
    // memcpy of a few KB, well under a microsecond).
    let sign = || signers.sign(black_box(message.clone())).map(black_box);
    // Warm caches and lazily built tables before timing.
    for _ in 0..count.div_ceil(10) {
        if let Err(e) = sign() {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let start = Instant::now();
    for _ in 0..count {
        if let Err(e) = sign() {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(count);
    println!("{us:.2} {count}");
    ExitCode::SUCCESS
}
