//! Suppression lists: addresses and domains that must never be mailed.
//!
//! Owns reading `--suppress` files and answering "is this address suppressed, and why". A file
//! is either a plain list (one address per line, `#` comments, blank lines, `@domain` lines that
//! suppress a whole domain) or a CSV export whose header has an `email` column, separated by
//! commas, or by semicolons, tabs or pipes as spreadsheets in some locales write it. Matching is
//! case-insensitive on the whole address; a domain entry matches that exact domain, not its
//! subdomains. A run directory given as a list suppresses every donor that run sent, or may
//! have sent (outcome unknown), according to its ledger, so a new run made from an edited
//! export does not mail them again. A list of which not one entry can be read is refused:
//! reading it as empty would mail everyone on it. It never modifies the files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::csvio::{Delimiter, RawReader};
use crate::digest::{self, Sha256Files};
use crate::email::{Address, KeySet, RecipientKey, domain_key};
use crate::ledger::{ChunkStates, State, ledger_path};
use crate::manifest::Manifest;
use crate::rundir::MANIFEST;

/// An entry that could not be read as an address; it can match no valid donor address, so it
/// is reported and skipped rather than stopping the run.
#[derive(Debug, Clone)]
pub struct IgnoredEntry {
    /// The suppression file.
    pub path: PathBuf,
    /// 1-based line in it.
    pub line: u64,
    /// Why it was ignored.
    pub reason: String,
}

impl std::fmt::Display for IgnoredEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: suppression entry ignored: {}",
            self.path.display(),
            self.line,
            self.reason
        )
    }
}

/// Why a donor is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// The address itself is listed.
    Address,
    /// Its domain is listed.
    Domain,
    /// A run directory given to `--suppress` sent (or may have sent) to this address.
    AlreadyMailed,
}

impl Suppressed {
    /// The reason written to the dropped-rows file.
    pub fn reason(self) -> &'static str {
        match self {
            Suppressed::Address => "suppressed: address is on a suppression list",
            Suppressed::Domain => "suppressed: domain is on a suppression list",
            Suppressed::AlreadyMailed => {
                "suppressed: already sent, or possibly sent, by a run given to --suppress"
            }
        }
    }
}

/// All suppression entries of a run.
#[derive(Debug, Default)]
pub struct Suppressions {
    addresses: KeySet,
    domains: KeySet,
    mailed: KeySet,
    /// Entries that were not valid addresses.
    pub ignored: Vec<IgnoredEntry>,
    /// For [`Suppressions::line_of`]: the address and domain keys looked for, and the first
    /// line that listed either.
    sought: Option<(RecipientKey, RecipientKey, Option<u64>)>,
}

impl Suppressions {
    /// Reads every file in order.
    pub fn load(paths: &[PathBuf]) -> Result<Suppressions> {
        let mut s = Suppressions::default();
        for p in paths {
            if p.join(MANIFEST).is_file() {
                s.add_run(p)
                    .with_context(|| format!("reading the ledger of run {}", p.display()))?;
            } else {
                s.add_file(p)
                    .with_context(|| format!("reading suppression list {}", p.display()))?;
            }
        }
        Ok(s)
    }

    /// The first line of the list file `path` that suppresses `addr` (its address or its
    /// domain), read by the same parser as [`Suppressions::load`], so the two cannot disagree;
    /// `None` when no line does. For `explain`.
    pub fn line_of(path: &Path, addr: &Address<'_>) -> Result<Option<u64>> {
        let mut s = Suppressions {
            sought: Some((addr.key(), domain_key(addr.domain()), None)),
            ..Suppressions::default()
        };
        s.read_file(path)
            .with_context(|| format!("reading suppression list {}", path.display()))?;
        Ok(s.sought.and_then(|(_, _, line)| line))
    }

    /// Notes `line` as the one sought when `key` is the key looked for.
    fn seen(&mut self, key: RecipientKey, domain: bool, line: u64) {
        if let Some((address, domain_of, found @ None)) = &mut self.sought
            && key == if domain { *domain_of } else { *address }
        {
            *found = Some(line);
        }
    }

    /// Addresses plus domains listed.
    pub fn len(&self) -> usize {
        self.addresses.len() + self.domains.len() + self.mailed.len()
    }

    /// True when nothing is suppressed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `addr` (with its precomputed key) is suppressed.
    pub fn check(&self, addr: &Address<'_>, key: RecipientKey) -> Option<Suppressed> {
        if self.addresses.contains(key) {
            Some(Suppressed::Address)
        } else if !self.domains.is_empty() && self.domains.contains(domain_key(addr.domain())) {
            Some(Suppressed::Domain)
        } else if !self.mailed.is_empty() && self.mailed.contains(key) {
            Some(Suppressed::AlreadyMailed)
        } else {
            None
        }
    }

    /// Every donor a run sent or may have sent, from its ledger.
    fn add_run(&mut self, run: &Path) -> Result<()> {
        let manifest = Manifest::load(run)?;
        for seg in &manifest.segments {
            for chunk in &seg.chunks {
                for (key, entry) in ChunkStates::read(run, &chunk.file)?.iter() {
                    if matches!(entry.state, State::Sent | State::Unknown) {
                        self.mailed.insert(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let before = (self.len(), self.ignored.len());
        self.read_file(path)?;
        let (entries, ignored) = (self.len() - before.0, self.ignored.len() - before.1);
        if entries == 0 && ignored > 0 {
            let first = &self.ignored[before.1];
            bail!(
                "not one of its {ignored} entries is an address or @domain (line {}: {}); as it is, it would suppress nobody. Fix the list (one address per line, or a CSV with an `email` column)",
                first.line,
                first.reason
            );
        }
        Ok(())
    }

    fn read_file(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path)?;
        let text = std::str::from_utf8(&bytes)
            .context("not valid UTF-8; save the list as UTF-8")?
            .trim_start_matches('\u{feff}');
        // The first line that is not blank or a comment decides the format: a CSV header has
        // a comma, an address never does outside quotes; a header separated otherwise has a
        // field that is `email` itself.
        let mut offset = 0;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                offset += line.len();
                continue;
            }
            if t.contains(',') {
                return self.add_csv(path, &text[offset..], i as u64, Delimiter::COMMA);
            }
            let other = [Delimiter::SEMICOLON, Delimiter::TAB, Delimiter::PIPE]
                .into_iter()
                .find(|d| {
                    t.split(char::from(d.byte()))
                        .any(|f| f.trim().trim_matches('"').eq_ignore_ascii_case("email"))
                });
            if let Some(d) = other {
                return self.add_csv(path, &text[offset..], i as u64, d);
            }
            break;
        }
        for (i, line) in text.lines().enumerate() {
            self.add_line(path, i as u64 + 1, line);
        }
        Ok(())
    }

    fn add_line(&mut self, path: &Path, line: u64, text: &str) {
        let t = text.trim();
        if t.is_empty() || t.starts_with('#') {
            return;
        }
        self.add_entry(path, line, t);
    }

    fn add_entry(&mut self, path: &Path, line: u64, t: &str) {
        if let Some(domain) = t.strip_prefix('@') {
            // Reuse address validation for the domain half so both agree on what a domain is.
            let probe = format!("x@{domain}");
            match Address::parse(&probe) {
                Ok(_) => {
                    let key = domain_key(domain);
                    self.domains.insert(key);
                    self.seen(key, true, line);
                }
                Err(e) => self.ignored.push(IgnoredEntry {
                    path: path.to_owned(),
                    line,
                    reason: format!("not a domain: {e}"),
                }),
            }
            return;
        }
        match Address::parse(t) {
            Ok(a) => {
                self.addresses.insert(a.key());
                self.seen(a.key(), false, line);
            }
            Err(e) => self.ignored.push(IgnoredEntry {
                path: path.to_owned(),
                line,
                reason: e.to_string(),
            }),
        }
    }

    /// Reads a CSV list whose header is the first line of `text`, `skipped` lines into the file.
    fn add_csv(&mut self, path: &Path, text: &str, skipped: u64, d: Delimiter) -> Result<()> {
        let mut rdr = RawReader::new(text.as_bytes()).with_delimiter(d);
        let header: Vec<String> = match rdr.next_record()? {
            Some(rec) => {
                let fields = rec.fields()?;
                (0..fields.len())
                    .map(|i| fields.get(i).trim().to_owned())
                    .collect()
            }
            None => return Ok(()),
        };
        let Some(col) = header.iter().position(|h| h.eq_ignore_ascii_case("email")) else {
            bail!(
                "line {} looks like a CSV header ({}) but has no `email` column; name the address column `email`, or give one address per line",
                skipped + 1,
                header.join(",")
            );
        };
        while let Some(rec) = rdr.next_record()? {
            let line = rec.line + skipped;
            let fields = rec.fields()?;
            match (col < fields.len()).then(|| fields.get(col).trim()) {
                Some(v) if !v.is_empty() => self.add_entry(path, line, v),
                _ => self.ignored.push(IgnoredEntry {
                    path: path.to_owned(),
                    line,
                    reason: "no email value on this line".into(),
                }),
            }
        }
        Ok(())
    }
}

/// SHA-256 of a suppression source for the manifest: a list file's content, or for a run
/// directory its manifest and every ledger file, in order (the state that was read).
pub fn sha256_of(path: &Path) -> Result<String> {
    if !path.join(MANIFEST).is_file() {
        return digest::sha256_file(path);
    }
    let mut h = Sha256Files::default();
    h.add(&path.join(MANIFEST))?;
    for seg in &Manifest::load(path)?.segments {
        for chunk in &seg.chunks {
            let ledger = ledger_path(path, &chunk.file);
            if ledger.is_file() {
                h.add(&ledger)?;
            }
        }
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(list: &str, email: &str) -> Option<u64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        std::fs::write(&path, list).unwrap();
        Suppressions::line_of(&path, &Address::parse(email).unwrap()).unwrap()
    }

    /// `explain` names the line the parser itself read, in every format a list may have:
    /// not a line that merely mentions the address, and not one after the first that lists it.
    #[test]
    fn the_line_of_an_entry_is_the_parsers_own() {
        let plain = "# do not contact\n\nann@example.org\nBob@Example.org\nbob@example.org\n";
        assert_eq!(line_of(plain, "bob@example.org"), Some(4));
        assert_eq!(line_of(plain, "cat@example.org"), None);
        let domain = "ann@example.org\n@example.net\n";
        assert_eq!(line_of(domain, "zed@EXAMPLE.net"), Some(2));
        // A name column that mentions the address is not the entry; the email column is.
        let csv = "name;email\n\"bob@example.org; a note\";ann@example.org\nBob;bob@example.org\n";
        assert_eq!(line_of(csv, "bob@example.org"), Some(3));
        let quoted =
            "email,name\n\"carol@example.org\",\"Carol,\nthe second line\"\ndan@example.org,Dan\n";
        assert_eq!(line_of(quoted, "dan@example.org"), Some(4));
    }
}
