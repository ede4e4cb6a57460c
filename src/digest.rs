//! Digests as the run directory records them: lowercase hex SHA-256.
//!
//! Owns hex encoding and the SHA-256 of bytes and files, for the manifest and the integrity
//! checks that compare against it, so every writer and checker spells a digest the same way.
//! It never decides what is hashed: which files, in which order, is the caller's business.

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(sha256_hex(&read(path)?))
}

/// One SHA-256 over several files' contents, in the order they are added.
#[derive(Default)]
pub struct Sha256Files(Sha256);

impl Sha256Files {
    /// Hashes the content of `path` after everything added before it.
    pub fn add(&mut self, path: &Path) -> Result<()> {
        self.0.update(read(path)?);
        Ok(())
    }

    /// Lowercase hex of the digest of everything added.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn several_files_hash_as_their_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "ab").unwrap();
        std::fs::write(&b, "c").unwrap();
        let mut h = Sha256Files::default();
        h.add(&a).unwrap();
        h.add(&b).unwrap();
        assert_eq!(h.finish(), sha256_hex(b"abc"));
        assert_eq!(sha256_file(&a).unwrap(), sha256_hex(b"ab"));
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }
}
