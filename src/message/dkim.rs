//! DKIM signing: the `[[dkim]]` keys, read and checked once per run, and the signatures they
//! put on every composed message.
//!
//! Owns the key-file checks (PEM, algorithm, RSA size, who may read the file), the list of
//! headers signed, and relaxed/relaxed canonicalisation. The signatures themselves are
//! `mail-auth`'s (Stalwart); tests verify them with an independent verifier (dkimpy in the
//! system lane), never with that crate. It never reads DNS, never verifies, and never writes
//! or logs a key.

use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Deserialize;

/// The headers every signature covers. Gmail wants the unsubscribe pair covered; a header a
/// message lacks is still listed, which stops anyone adding it later under this signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
];

/// The smallest RSA modulus accepted, in bytes: RFC 8301 and the big receivers want 2048 bits.
const MIN_RSA_BYTES: usize = 256;

/// One `[[dkim]]` table, as written in the campaign file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimTable {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The private key, PEM; relative to the campaign file.
    pub private_key_file: PathBuf,
    /// `rsa-sha256` or `ed25519-sha256`; by default the key's own.
    pub algorithm: Option<String>,
}

enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

struct Signer {
    domain: String,
    key: Key,
}

/// The run's signing keys, in the order of the `[[dkim]]` tables; empty signs nothing.
#[derive(Default)]
pub struct Signers(Vec<Signer>);

impl Signers {
    /// Reads and checks every `[[dkim]]` key; `base` is the campaign file's folder.
    ///
    /// # Errors
    /// One line per problem, each naming the table, the file and what to do.
    pub fn load(tables: &[DkimTable], base: &Path) -> Result<Signers, Vec<String>> {
        let mut signers = Vec::with_capacity(tables.len());
        let mut problems = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            let at = format!("[[dkim]] {} ({} {})", i + 1, t.selector, t.domain);
            if let Some(prev) = tables[..i]
                .iter()
                .position(|p| p.domain.eq_ignore_ascii_case(&t.domain) && p.selector == t.selector)
            {
                problems.push(format!(
                    "{at}: tables {} and {} both sign with selector {:?} of {}; a selector publishes one key, so give each key its own",
                    prev + 1,
                    i + 1,
                    t.selector,
                    t.domain
                ));
                continue;
            }
            match load_one(t, base) {
                Ok(key) => signers.push(Signer {
                    domain: t.domain.to_ascii_lowercase(),
                    key,
                }),
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(Signers(signers))
        } else {
            Err(problems)
        }
    }

    /// The signing domains, in table order.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| s.domain.as_str())
    }

    /// `message` with one `DKIM-Signature` header per key in front of it.
    ///
    /// # Errors
    /// The signing library's words, naming the domain.
    pub fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, String> {
        if self.0.is_empty() {
            return Ok(message);
        }
        let message = trim_blank_tail(message);
        let mut out = Vec::with_capacity(message.len() + 700 * self.0.len());
        for s in &self.0 {
            let signature = match &s.key {
                Key::Rsa(k) => k.sign(&message),
                Key::Ed25519(k) => k.sign(&message),
            }
            .map_err(|e| format!("DKIM signing as {} failed: {e}", s.domain))?;
            signature.write_header(&mut out);
        }
        out.extend_from_slice(&message);
        Ok(out)
    }
}

fn load_one(t: &DkimTable, base: &Path) -> Result<Key, String> {
    check_dns_name("domain", &t.domain)?;
    check_dns_name("selector", &t.selector)?;
    let wanted = match t.algorithm.as_deref() {
        None => None,
        Some("rsa-sha256") => Some(false),
        Some("ed25519-sha256") => Some(true),
        Some(other) => {
            return Err(format!(
                "algorithm {other:?} is not one this tool signs with; write \"rsa-sha256\" or \"ed25519-sha256\", or remove the line to use the key's own"
            ));
        }
    };
    let path = base.join(&t.private_key_file);
    let shown = path.display().to_string();
    let pem = read_private(&path)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!("{shown} is not a PEM private key ({e}); it should begin with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----")
    })?;
    let key = match der {
        PrivateKeyDer::Pkcs1(_) => rsa(der, &shown, t)?,
        PrivateKeyDer::Pkcs8(ref pkcs8) => {
            match Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()) {
                Ok(k) => Key::Ed25519(signer(k, t)),
                Err(_) => rsa(der, &shown, t)?,
            }
        }
        _ => {
            return Err(format!(
                "{shown} holds an EC key; DKIM signs with RSA (2048 bits or more) or Ed25519"
            ));
        }
    };
    let is_ed25519 = matches!(key, Key::Ed25519(_));
    if wanted.is_some_and(|w| w != is_ed25519) {
        let held = if is_ed25519 { "an Ed25519" } else { "an RSA" };
        return Err(format!(
            "algorithm = {:?} but {shown} holds {held} key; fix the algorithm or the file",
            t.algorithm.as_deref().unwrap_or_default()
        ));
    }
    Ok(key)
}

fn rsa(der: PrivateKeyDer<'_>, shown: &str, t: &DkimTable) -> Result<Key, String> {
    let too_small = |size: &str| {
        format!(
            "{shown} is an RSA key of {size}; receivers want at least 2048 bits (make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`)"
        )
    };
    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| {
        // ring signs with RSA keys of 2048 to 4096 bits and refuses others itself, in its own
        // words (its KeyRejected reasons).
        let why = e.to_string();
        if why.contains("TooSmall") {
            too_small("fewer than 2048 bits")
        } else if why.contains("TooLarge") {
            format!(
                "{shown} is an RSA key of more than 4096 bits, the most the signing library takes; use a 2048-bit key, what receivers expect (make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`)"
            )
        } else {
            format!("{shown} is neither an RSA nor an Ed25519 private key that can sign ({e})")
        }
    })?;
    let bytes = rsa_modulus_bytes(&key.public_key()).unwrap_or(0);
    if bytes < MIN_RSA_BYTES {
        return Err(too_small(&format!("{} bits", bytes * 8)));
    }
    Ok(Key::Rsa(signer(key, t)))
}

fn signer<K: SigningKey>(key: K, t: &DkimTable) -> DkimSigner<K, Done> {
    DkimSigner::from_key(key)
        .domain(t.domain.to_ascii_lowercase())
        .selector(t.selector.clone())
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// Reads a key file, refusing one that other users could read: whoever holds it can sign
/// mail as the domain.
fn read_private(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the private key {shown}: {e}; check private_key_file"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the private key {shown} can be read by other users (mode {mode:04o}); run `chmod 600 {shown}`: whoever can read it can sign mail as this domain"
            ));
        }
    }
    std::fs::read(path).map_err(|e| format!("cannot read the private key {shown}: {e}"))
}

fn check_dns_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a DNS name of ASCII letters, digits and hyphens; write an internationalised name in its xn-- form"
        ))
    }
}

/// The length in bytes of the modulus in a DER `RSAPublicKey` (RFC 8017 A.1.1).
fn rsa_modulus_bytes(der: &[u8]) -> Option<usize> {
    fn header(der: &[u8], tag: u8) -> Option<(usize, &[u8])> {
        let (&t, rest) = der.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        if first < 0x80 {
            return Some((usize::from(first), rest));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0, |acc, &b| acc << 8 | usize::from(b));
        Some((len, &rest[n..]))
    }
    let (_, seq) = header(der, 0x30)?;
    let (len, int) = header(seq, 0x02)?;
    let modulus = int.get(..len)?;
    Some(modulus.len() - modulus.iter().take_while(|&&b| b == 0).count())
}

/// Drops whitespace-only lines at the end of the body. Relaxed body canonicalisation ignores
/// them, so verifiers see the same body; mail-auth 0.13 hashes such a body wrongly (fixed in
/// 0.15, which this toolchain cannot build), so they never reach it.
fn trim_blank_tail(mut message: Vec<u8>) -> Vec<u8> {
    let Some(body) = memchr::memmem::find(&message, b"\r\n\r\n").map(|p| p + 4) else {
        return message;
    };
    let mut end = message.len();
    loop {
        let content = &message[body..end];
        let Some(line) = content.strip_suffix(b"\r\n") else {
            break;
        };
        let start = memchr::memrchr(b'\n', line).map_or(0, |p| p + 1);
        let last = &line[start..];
        if last.iter().all(|&b| b == b' ' || b == b'\t') {
            end = body + start;
        } else {
            break;
        }
    }
    message.truncate(end);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_tail_lines_are_dropped_and_the_rest_kept() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"A: b\r\n\r\nhi\r\n \t\r\n\r\n", b"A: b\r\n\r\nhi\r\n"),
            (b"A: b\r\n\r\nhi  \r\n", b"A: b\r\n\r\nhi  \r\n"),
            (b"A: b\r\n\r\n\r\n  \r\n", b"A: b\r\n\r\n"),
            (b"A: b\r\n\r\n--x--\r\n", b"A: b\r\n\r\n--x--\r\n"),
        ];
        for (given, want) in cases {
            assert_eq!(
                trim_blank_tail(given.to_vec()),
                *want,
                "{:?}",
                String::from_utf8_lossy(given)
            );
        }
    }

    #[test]
    fn the_modulus_length_is_read_from_der() {
        // SEQUENCE { INTEGER (0x00 + 256 bytes), INTEGER 65537 }
        let mut der = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01, 0x00];
        der.extend(std::iter::repeat_n(0xab, 256));
        der.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(rsa_modulus_bytes(&der), Some(256));
        assert_eq!(rsa_modulus_bytes(&[0x02, 0x01, 0x00]), None);
    }

    fn table(dir: &Path, pem: &str, mode: u32, algorithm: Option<&str>) -> DkimTable {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("key.pem");
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        DkimTable {
            domain: "example.org".into(),
            selector: "s1".into(),
            private_key_file: "key.pem".into(),
            algorithm: algorithm.map(str::to_owned),
        }
    }

    fn ed25519_pem() -> String {
        use base64::Engine as _;
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8);
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn bad_keys_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let ed = ed25519_pem();
        let load = |t: DkimTable| {
            Signers::load(&[t], dir.path())
                .err()
                .map(|p| p.join("\n"))
                .unwrap_or_default()
        };
        let open = load(table(dir.path(), &ed, 0o644, None));
        assert!(
            open.contains("mode 0644") && open.contains("chmod 600"),
            "{open}"
        );
        let not_pem = load(table(dir.path(), "hello\n", 0o600, None));
        assert!(not_pem.contains("not a PEM private key"), "{not_pem}");
        let wrong = load(table(dir.path(), &ed, 0o600, Some("rsa-sha256")));
        assert!(wrong.contains("holds an Ed25519 key"), "{wrong}");
        let unknown = load(table(dir.path(), &ed, 0o600, Some("rsa-sha1")));
        assert!(unknown.contains("\"rsa-sha1\" is not one"), "{unknown}");
        let mut bad_domain = table(dir.path(), &ed, 0o600, None);
        bad_domain.domain = "bücher.example".into();
        assert!(load(bad_domain).contains("xn-- form"));
        let missing = DkimTable {
            private_key_file: "absent.pem".into(),
            ..table(dir.path(), &ed, 0o600, None)
        };
        assert!(load(missing).contains("cannot read the private key"));
        let t = table(dir.path(), &ed, 0o600, None);
        let twice = Signers::load(&[t.clone(), t], dir.path()).err().unwrap();
        assert!(twice[0].contains("both sign with selector"), "{twice:?}");
    }

    /// A PKCS#1 `RSAPrivateKey` PEM whose modulus is `bits` (a multiple of 8) of ones and whose
    /// other numbers are 1: no key, but enough for its size to be judged, which comes first.
    fn rsa_pem_of(bits: usize) -> String {
        use base64::Engine as _;
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = body.len();
            if len < 0x80 {
                out.push(len as u8);
            } else {
                let bytes: Vec<u8> = len
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|&b| b == 0)
                    .collect();
                out.push(0x80 | bytes.len() as u8);
                out.extend(bytes);
            }
            out.extend_from_slice(body);
            out
        }
        let mut modulus = vec![0x00];
        modulus.extend(std::iter::repeat_n(0xff, bits / 8));
        let mut fields = tlv(0x02, &[0]);
        fields.extend(tlv(0x02, &modulus));
        fields.extend(tlv(0x02, &[0x01, 0x00, 0x01]));
        for _ in 0..6 {
            fields.extend(tlv(0x02, &[1]));
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(tlv(0x30, &fields));
        format!("-----BEGIN RSA PRIVATE KEY-----\n{b64}\n-----END RSA PRIVATE KEY-----\n")
    }

    #[test]
    fn rsa_keys_outside_2048_to_4096_bits_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let load = |bits| {
            Signers::load(
                &[table(dir.path(), &rsa_pem_of(bits), 0o600, None)],
                dir.path(),
            )
            .err()
            .map(|p| p.join("\n"))
            .unwrap_or_default()
        };
        let short = load(1024);
        assert!(
            short.contains("fewer than 2048 bits") && short.contains("rsa_keygen_bits:2048"),
            "{short}"
        );
        let long = load(4104);
        assert!(
            long.contains("more than 4096 bits") && long.contains("rsa_keygen_bits:2048"),
            "{long}"
        );
    }

    #[test]
    fn a_signature_header_comes_first_and_lists_the_unsubscribe_headers() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), &ed25519_pem(), 0o600, None);
        let signers = Signers::load(&[t], dir.path()).unwrap();
        let message = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n";
        let signed = String::from_utf8(signers.sign(message.to_vec()).unwrap()).unwrap();
        let (header, rest) = signed.split_once("\r\nFrom:").unwrap();
        assert!(
            header.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
            "{header}"
        );
        let unfolded = header.replace("\r\n", "").replace([' ', '\t'], "");
        assert!(unfolded.contains("d=example.org") && unfolded.contains("s=s1"));
        assert!(unfolded.contains("c=relaxed/relaxed"), "{unfolded}");
        assert!(
            unfolded.contains("List-Unsubscribe:List-Unsubscribe-Post"),
            "{unfolded}"
        );
        assert!(rest.ends_with("\r\n\r\nhello\r\n"));
    }
}
