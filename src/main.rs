//! The `campaign` binary.

fn main() {}
