//! Build script: records the git commit the binary is built from, for `--version` and the
//! manifest (`tool_version`), so a run can be traced to the code that made it. Outside a git
//! checkout (a source tarball) the commit is `unknown`.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CAMPAIGN_COMMIT={commit}");
    // Not the index: every `git add` would rebuild the crate.
    for p in [".git/HEAD", ".git/refs"] {
        println!("cargo:rerun-if-changed={p}");
    }
}
