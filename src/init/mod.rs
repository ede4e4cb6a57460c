//! `campaign init DIR`: a starting point that passes `check` and a dry run: a commented
//! campaign file (every section, `[smtp]` commented out), two segments with text and HTML
//! templates on a shared layout, a five-row export and a suppression list. The files are the
//! ones under `src/init/scaffold/`, compiled in.
//!
//! Owns only writing them. It never overwrites anything: when any of them exists, it writes
//! nothing and says which.

use std::fs;
use std::path::{Path, PathBuf};

/// The scaffold, by path relative to DIR.
const FILES: &[(&str, &str)] = &[
    ("campaign.toml", include_str!("scaffold/campaign.toml")),
    ("donors.csv", include_str!("scaffold/donors.csv")),
    ("suppress.txt", include_str!("scaffold/suppress.txt")),
    (
        "templates/_layouts/base.html",
        include_str!("scaffold/templates/_layouts/base.html"),
    ),
    (
        "templates/_partials/footer.txt",
        include_str!("scaffold/templates/_partials/footer.txt"),
    ),
    (
        "templates/_partials/footer.html",
        include_str!("scaffold/templates/_partials/footer.html"),
    ),
    (
        "templates/thanks/subject.txt",
        include_str!("scaffold/templates/thanks/subject.txt"),
    ),
    (
        "templates/thanks/body.txt",
        include_str!("scaffold/templates/thanks/body.txt"),
    ),
    (
        "templates/thanks/body.html",
        include_str!("scaffold/templates/thanks/body.html"),
    ),
    (
        "templates/welcome/subject.txt",
        include_str!("scaffold/templates/welcome/subject.txt"),
    ),
    (
        "templates/welcome/body.txt",
        include_str!("scaffold/templates/welcome/body.txt"),
    ),
    (
        "templates/welcome/body.html",
        include_str!("scaffold/templates/welcome/body.html"),
    ),
];

/// Where runs go, created empty.
pub const RUNS_DIR: &str = "runs";

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Files of the scaffold are there already.
    #[error(
        "{} already has {}; nothing was written (init never overwrites). Pick an empty or new directory",
        dir.display(),
        existing.join(", ")
    )]
    Exists {
        /// The directory.
        dir: PathBuf,
        /// Which files are in the way.
        existing: Vec<String>,
    },
    /// Writing failed.
    #[error("writing {}: {cause}", path.display())]
    Write {
        /// What could not be written.
        path: PathBuf,
        /// The cause, in the message.
        cause: std::io::Error,
    },
}

/// Writes the scaffold into `dir` (created if needed); returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let existing: Vec<String> = FILES
        .iter()
        .map(|(rel, _)| *rel)
        .chain([RUNS_DIR])
        .filter(|rel| dir.join(rel).symlink_metadata().is_ok())
        .map(str::to_owned)
        .collect();
    if !existing.is_empty() {
        return Err(InitError::Exists {
            dir: dir.to_owned(),
            existing,
        });
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |cause| InitError::Write { path, cause }
    };
    let mut written = Vec::new();
    for (rel, text) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        // create_new: a file appearing since the check is not overwritten either.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(write_err(&path))?;
        written.push(path);
    }
    let runs = dir.join(RUNS_DIR);
    fs::create_dir(&runs).map_err(write_err(&runs))?;
    Ok(written)
}
