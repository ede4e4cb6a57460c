//! Where bounce messages come from: mbox files, Maildir folders, or one message on standard
//! input (`-`), each message with where it was found, so one that cannot be understood can
//! be found again.
//!
//! Owns splitting sources into messages. It never modifies a source: a Maildir's messages
//! stay in `new/` or `cur/` as they were.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// Where one message was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Origin {
    /// The file (in a Maildir, the message's own file), or `-` for standard input.
    pub file: PathBuf,
    /// In an mbox: the message's number (from 1) and the line its `From ` line is on.
    pub mbox: Option<(usize, usize)>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mbox {
            Some((n, line)) => write!(f, "{}:{line} (message {n})", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// Calls `each` with every message of `source`, in order: `-` reads standard input, a
/// directory is a Maildir (`new/` then `cur/`, by name), a file is an mbox when its first
/// line is a `From ` line, else one message.
pub fn for_each(source: &Path, each: &mut dyn FnMut(Origin, &[u8]) -> Result<()>) -> Result<()> {
    if source == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("reading a message from standard input")?;
        return split(source, &bytes, each);
    }
    let meta = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
    if meta.is_dir() {
        return maildir(source, each);
    }
    let bytes = fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    split(source, &bytes, each)
}

/// One message, or an mbox of them.
fn split(
    file: &Path,
    bytes: &[u8],
    each: &mut dyn FnMut(Origin, &[u8]) -> Result<()>,
) -> Result<()> {
    if !bytes.starts_with(b"From ") {
        return each(
            Origin {
                file: file.to_owned(),
                mbox: None,
            },
            bytes,
        );
    }
    for (n, (line, message)) in mbox_messages(bytes).into_iter().enumerate() {
        each(
            Origin {
                file: file.to_owned(),
                mbox: Some((n + 1, line)),
            },
            &message,
        )?;
    }
    Ok(())
}

/// The messages of an mbox with the line of each `From ` separator: a separator is a line
/// starting `From ` at the start or after a blank line; `>From ` quoting (mboxrd) is undone.
fn mbox_messages(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut previous_blank = true;
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if previous_blank && line.starts_with(b"From ") {
            if let Some((_, last)) = out.last_mut() {
                // The blank line before a separator belongs to the mbox, not the message.
                if last.ends_with(b"\r\n") {
                    last.truncate(last.len() - 2);
                } else if last.ends_with(b"\n") {
                    last.truncate(last.len() - 1);
                }
            }
            out.push((i + 1, Vec::new()));
            previous_blank = false;
            continue;
        }
        previous_blank = content.is_empty();
        let Some((_, msg)) = out.last_mut() else {
            continue;
        };
        let quoted = line.iter().take_while(|&&b| b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            msg.extend_from_slice(&line[1..]);
        } else {
            msg.extend_from_slice(line);
        }
    }
    out
}

/// A Maildir's messages: `new/` then `cur/`, each by file name.
fn maildir(dir: &Path, each: &mut dyn FnMut(Origin, &[u8]) -> Result<()>) -> Result<()> {
    let subdirs: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .map(|s| dir.join(s))
        .filter(|d| d.is_dir())
        .collect();
    if subdirs.is_empty() {
        bail!(
            "{} is a directory but not a Maildir (it has no new/ or cur/); give an mbox file, a Maildir, or - for one message on standard input",
            dir.display()
        );
    }
    for sub in subdirs {
        let mut names: Vec<PathBuf> = fs::read_dir(&sub)
            .with_context(|| format!("reading {}", sub.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", sub.display()))?;
        names.retain(|p| p.is_file());
        names.sort();
        for path in names {
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            each(
                Origin {
                    file: path,
                    mbox: None,
                },
                &bytes,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_splits_on_from_lines_after_blank_lines_and_unquotes() {
        let mbox = b"From a@b Tue Dec  1 10:00:00 2026\nSubject: one\n\nhello\n>From the start\nFrom inside a paragraph\n\nFrom c@d Tue Dec  1 10:01:00 2026\nSubject: two\n\nbye\n";
        let m = mbox_messages(mbox);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, 1);
        assert_eq!(
            String::from_utf8_lossy(&m[0].1),
            "Subject: one\n\nhello\nFrom the start\nFrom inside a paragraph\n"
        );
        assert_eq!(m[1].0, 8);
        assert_eq!(String::from_utf8_lossy(&m[1].1), "Subject: two\n\nbye\n");
    }
}
