//! Shared helpers for integration tests: a fresh temp dir and the real binary.
#![allow(dead_code)]

pub mod smtp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory the test owns; removed when dropped.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// The binary, run in this directory with no CAMPAIGN_* variables inherited.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_campaign"));
        cmd.current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("CAMPAIGN_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("running campaign")
    }

    /// Entries directly in the work dir, sorted.
    pub fn entries(&self) -> Vec<String> {
        self.entries_of("")
    }

    /// Entries directly in `rel`, sorted.
    pub fn entries_of(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

pub fn manifest(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest parses")
}

/// A campaign with a [message] table and two segments (`major`: total >= 1000, `rest`).
pub const CAMPAIGN: &str = r#"
[campaign]
id = "dry-2026"
name = "Dry Run Appeal"
[columns]
total = "number"
[message]
from = "Friends of Riverside Park <appeal@riverside-park.example>"
to_name = "{{ name }}"
unsubscribe_url = "https://riverside-park.example/u?e={{ email | urlencode }}&t={{ unsubscribe_token }}"
unsubscribe_mailto = "unsubscribe@riverside-park.example"
currency = "£"
[[segment]]
name = "major"
when = "total >= 1000"
[[segment]]
name = "rest"
template = "general"
"#;

pub fn setup(csv: &str) -> Workdir {
    let w = Workdir::new();
    w.write("donors.csv", csv);
    w.write("campaign.toml", CAMPAIGN);
    w.write("templates/major/subject.txt", "Thank you, {{ name }}\n");
    w.write(
        "templates/major/body.txt",
        "Dear {{ name }},\nyou gave {{ total | money }}.\n{% include \"_partials/footer.txt\" %}",
    );
    w.write(
        "templates/major/body.html",
        "<p>Dear {{ name }},</p><p>you gave {{ total | money }}.</p>",
    );
    w.write(
        "templates/general/subject.txt",
        "Spring news for {{ name }}",
    );
    w.write(
        "templates/general/body.txt",
        "Hello {{ name }}\n{% include \"_partials/footer.txt\" %}",
    );
    w.write(
        "templates/_partials/footer.txt",
        "Unsubscribe: {{ unsubscribe_url }}\n",
    );
    w
}

/// `campaign segment` of the work dir's donors.csv and campaign.toml into `run`.
pub fn try_segment(w: &Workdir) -> Output {
    try_segment_with(w, &[])
}

/// [`try_segment`] with more flags (`--chunk-size 10`, ...).
pub fn try_segment_with(w: &Workdir, extra: &[&str]) -> Output {
    w.command()
        .args([
            "segment",
            "donors.csv",
            "--campaign",
            "campaign.toml",
            "--out",
            "run",
            "--as-of",
            "2026-11-29",
        ])
        .args(extra)
        .output()
        .expect("running campaign")
}

pub fn segment(w: &Workdir) {
    assert_code(&try_segment(w), 0);
}

/// `campaign segment` of the shipped fixtures (fixtures/donors.csv and campaign.toml, as of
/// 2026-11-29) into `run` of `w`, with `extra` flags.
pub fn segment_fixtures(w: &Workdir, extra: &[&str]) -> Output {
    let donors = fixture("donors.csv");
    let campaign = fixture("campaign.toml");
    w.command()
        .arg("segment")
        .arg(donors)
        .arg("--campaign")
        .arg(campaign)
        .args(["--as-of", "2026-11-29", "--out", "run"])
        .args(extra)
        .output()
        .expect("running campaign")
}

/// The dry run's preview number `n` (from 1) of `segment` in `run`: `NNN-<donor>.eml`.
pub fn preview(w: &Workdir, segment: &str, n: usize) -> PathBuf {
    let dir = w.path(&format!("run/previews/{segment}"));
    let prefix = format!("{n:03}-");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".eml")
        })
        .unwrap_or_else(|| panic!("no preview {prefix}*.eml in {}", dir.display()))
}
