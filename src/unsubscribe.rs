//! Per-donor one-click unsubscribe tokens (RFC 8058).
//!
//! This module owns the secret read from `CAMPAIGN_UNSUBSCRIBE_SECRET` ([`UnsubscribeSecret`])
//! (or, for the unsubscribe server, from the file `CAMPAIGN_UNSUBSCRIBE_SECRET_FILE` names)
//! and the token algorithm. It never builds URLs or headers (the campaign's `unsubscribe_url`
//! template and [`crate::message`] do), never talks to the unsubscribe endpoint, and never
//! prints, logs or formats the secret: its `Debug` output is redacted.
//!
//! # The token
//!
//! ```text
//! token = base64url_nopad( HMAC-SHA256( secret, campaign_id + "\n" + normalised_email ) )
//! ```
//!
//! * `secret` is the bytes of the environment variable exactly as set (a hex string from
//!   `openssl rand -hex 32` is used as its 64 ASCII characters, not hex-decoded);
//! * `campaign_id` is the `[campaign] id` of the campaign file;
//! * `normalised_email` is the donor's address trimmed and lowercased
//!   ([`crate::email::normalise`]), UTF-8 encoded;
//! * the full 32-byte MAC is kept, encoded with the URL-safe alphabet (`-` and `_`) and no `=`
//!   padding: always 43 characters, safe in a URL without escaping.
//!
//! Tokens are deterministic, so a donor's link is the same however often the campaign is
//! rendered, and one campaign's token does not work for another campaign. The endpoint therefore
//! needs the campaign id as well as the address: put both in the URL template.
//!
//! # Verifying on the endpoint
//!
//! The endpoint recomputes the token from the address and campaign id in the URL and compares
//! it with the one received **in constant time** (an ordinary `==` leaks, through timing, how
//! many leading characters matched). It must normalise the address the same way (trim, then
//! lowercase). Endpoints are often not written in Rust; in Python:
//!
//! ```python
//! import base64, hashlib, hmac, os
//!
//! SECRET = os.environ["CAMPAIGN_UNSUBSCRIBE_SECRET"].encode()
//!
//! def token(campaign_id: str, email: str) -> str:
//!     msg = (campaign_id + "\n" + email.strip().lower()).encode()
//!     mac = hmac.new(SECRET, msg, hashlib.sha256).digest()
//!     return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
//!
//! def verify(campaign_id: str, email: str, received: str) -> bool:
//!     return hmac.compare_digest(token(campaign_id, email), received)
//! ```
//!
//! (Python's `str.lower()` and Rust's `to_lowercase` agree for practically every address; for
//! exotic scripts prefer passing the address the campaign sent, already normalised.)
//!
//! RFC 8058 also requires the endpoint to accept a `POST` with body
//! `List-Unsubscribe=One-Click` at that URL, with no cookies, no login and no redirect.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// Token used in dry runs without a secret; clearly marked so nobody ships it.
pub const PLACEHOLDER_TOKEN: &str = "DRY-RUN-PLACEHOLDER-NOT-A-REAL-TOKEN";

/// The shortest secret accepted, in bytes: shorter keys make tokens guessable offline.
const MIN_SECRET_LEN: usize = 16;

/// Length of a token: 32 MAC bytes in unpadded base64.
const TOKEN_LEN: usize = 43;

/// How to make a good secret; part of every refusal so the fix is in the message.
const HOW_TO_GENERATE: &str = "generate one with `openssl rand -hex 32` (or `python3 -c \"import secrets; print(secrets.token_hex(32))\"`) and give the unsubscribe endpoint the same value";

/// The secret from `CAMPAIGN_UNSUBSCRIBE_SECRET`. Debug prints `UnsubscribeSecret(<redacted>)`.
///
/// Holds only the HMAC state already keyed with the secret: building a token then costs two
/// SHA-256 compressions instead of four, and the raw secret bytes are not kept around.
#[derive(Clone)]
pub struct UnsubscribeSecret(Hmac<Sha256>);

impl fmt::Debug for UnsubscribeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnsubscribeSecret(<redacted>)")
    }
}

impl UnsubscribeSecret {
    /// The environment variable holding the secret.
    pub const ENV: &'static str = "CAMPAIGN_UNSUBSCRIBE_SECRET";

    /// The secret from the value of [`Self::ENV`], which the caller read (see
    /// [`crate::preflight::Environment`]).
    ///
    /// # Errors
    /// `Ok(None)` when the variable is unset; `Err` (saying how to generate a secret) when it is
    /// set but unusable: shorter than 16 bytes, or with surrounding whitespace.
    pub fn from_var(value: Option<std::ffi::OsString>) -> Result<Option<Self>, String> {
        match value {
            None => Ok(None),
            Some(v) => Self::new(v.into_encoded_bytes())
                .map(Some)
                .map_err(|e| format!("{}: {e}", Self::ENV)),
        }
    }

    /// The environment variable naming a file that holds the secret, for the unsubscribe
    /// server (a systemd credential, a file only its user can read) instead of [`Self::ENV`].
    pub const FILE_ENV: &'static str = "CAMPAIGN_UNSUBSCRIBE_SECRET_FILE";

    /// The secret from [`Self::ENV`] or the file [`Self::FILE_ENV`] names, whose values the
    /// caller read.
    ///
    /// # Errors
    /// `Ok(None)` when neither is set; `Err` when both are (they could disagree), or the one
    /// set is unusable (see [`Self::from_var`] and [`Self::from_file`]).
    pub fn from_var_or_file(
        value: Option<std::ffi::OsString>,
        file: Option<std::ffi::OsString>,
    ) -> Result<Option<Self>, String> {
        match (value, file) {
            (Some(_), Some(_)) => Err(format!(
                "both {} and {} are set; set only one, so there is no doubt which secret the links were made with",
                Self::ENV,
                Self::FILE_ENV
            )),
            (None, Some(path)) => Self::from_file(Path::new(&path)).map(Some),
            (value, None) => Self::from_var(value),
        }
    }

    /// The secret from a file: its bytes without one trailing newline (`echo` and editors add
    /// one; `campaign send` gets the same secret through `$(cat FILE)`, which drops it).
    ///
    /// # Errors
    /// When the file cannot be read, can be read by group or others (whoever reads it can
    /// unsubscribe any donor), or holds an unusable secret (see [`Self::new`]). Messages name
    /// the file, never its contents.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let var = Self::FILE_ENV;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("{var}: cannot read the unsubscribe secret {shown}: {e}"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{var}: the unsubscribe secret {shown} can be read by other users (mode {mode:04o}); run `chmod 600 {shown}`: whoever can read it can make unsubscribe links for any donor"
                ));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let mut bytes = std::fs::read(path)
            .map_err(|e| format!("{var}: cannot read the unsubscribe secret {shown}: {e}"))?;
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.pop();
        }
        Self::new(bytes).map_err(|e| format!("{var}: {shown}: {e}"))
    }

    /// Checks and keys a secret.
    ///
    /// # Errors
    /// When `bytes` is shorter than 16 bytes or starts or ends with whitespace. The message
    /// never contains the secret.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, String> {
        let bytes: Vec<u8> = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the unsubscribe secret is {} bytes long; it needs at least {MIN_SECRET_LEN}: {HOW_TO_GENERATE}",
                bytes.len()
            ));
        }
        // A trailing newline from a file is the classic way for the sender and the endpoint to
        // disagree on the key, which would silently break every unsubscribe link.
        if bytes.first().is_some_and(u8::is_ascii_whitespace)
            || bytes.last().is_some_and(u8::is_ascii_whitespace)
        {
            return Err(format!(
                "the unsubscribe secret starts or ends with whitespace (often a newline copied from a file); remove it, or {HOW_TO_GENERATE}"
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(&bytes)
            .map_err(|_| "HMAC-SHA256 refused the unsubscribe secret".to_owned())?;
        Ok(UnsubscribeSecret(mac))
    }

    /// The MAC of one (campaign, donor) pair, before encoding.
    fn mac(&self, campaign_id: &str, normalised_email: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(campaign_id.as_bytes());
        mac.update(b"\n");
        mac.update(normalised_email.as_bytes());
        mac
    }

    /// The donor's token for this campaign (43 URL-safe characters; see the module docs).
    ///
    /// `normalised_email` must already be normalised ([`crate::email::normalise`]): the
    /// endpoint recomputes the token from the address it receives.
    #[must_use]
    pub fn token(&self, campaign_id: &str, normalised_email: &str) -> String {
        let tag = self
            .mac(campaign_id, normalised_email)
            .finalize()
            .into_bytes();
        URL_SAFE_NO_PAD.encode(tag)
    }

    /// Whether `token` is this donor's token for this campaign, compared in constant time
    /// (what the unsubscribe endpoint must do; see the module docs).
    #[must_use]
    pub fn verify(&self, campaign_id: &str, normalised_email: &str, token: &str) -> bool {
        // The length and alphabet checks depend only on the public token, not on the secret,
        // so they may return early; the MAC comparison itself is constant-time.
        if token.len() != TOKEN_LEN {
            return false;
        }
        let mut tag = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(token, &mut tag) {
            Ok(32) => {}
            _ => return false,
        }
        self.mac(campaign_id, normalised_email)
            .verify_slice(&tag)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn secret() -> UnsubscribeSecret {
        UnsubscribeSecret::new(KEY).unwrap()
    }

    #[test]
    fn token_matches_an_independent_implementation() {
        // Expected values from Python:
        // base64.urlsafe_b64encode(hmac.new(KEY, b"spring-gala-2026\n" + email, hashlib.sha256)
        //     .digest()).rstrip(b"=")
        let s = secret();
        assert_eq!(
            s.token("spring-gala-2026", "bob@example.org"),
            "Q36N4oUabp5HdxpHywaM_k3TIJJbzv4IUU8QmgPGjnY"
        );
        assert_eq!(
            s.token("spring-gala-2026", "zoë@example.org"),
            "PMY8Tyxt05wDG49hie95-nBDx8T0ag55W7WkVczFQVM"
        );
        assert_eq!(s.token("spring-gala-2026", "bob@example.org").len(), 43);
        // Deterministic.
        assert_eq!(
            s.token("c", "bob@example.org"),
            s.token("c", "bob@example.org")
        );
    }

    #[test]
    fn verify_accepts_only_the_right_token() {
        let s = secret();
        let t = s.token("gala", "bob@example.org");
        assert!(s.verify("gala", "bob@example.org", &t));
        assert!(!s.verify("gala", "alice@example.org", &t));
        assert!(!s.verify("gala-2", "bob@example.org", &t), "wrong campaign");
        assert!(!s.verify("gala", "bob@example.org", &t[..42]));
        assert!(!s.verify("gala", "bob@example.org", &format!("{t}A")));
        assert!(!s.verify("gala", "bob@example.org", ""));
        assert!(!s.verify("gala", "bob@example.org", PLACEHOLDER_TOKEN));
        // One flipped character.
        let mut bad = t.clone().into_bytes();
        bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
        assert!(!s.verify("gala", "bob@example.org", &String::from_utf8(bad).unwrap()));
        // Padding or the standard alphabet are not the same token.
        assert!(!s.verify("gala", "bob@example.org", &format!("{t}=")));
        // The separator matters: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(s.token("ab", "c@x.org"), s.token("a", "bc@x.org"));
        // Another secret gives other tokens.
        let other = UnsubscribeSecret::new(b"fedcba9876543210fedcba9876543210".to_vec()).unwrap();
        assert!(!other.verify("gala", "bob@example.org", &t));
    }

    #[test]
    fn short_or_padded_secrets_are_refused() {
        let err = UnsubscribeSecret::new("too-short").unwrap_err();
        assert!(err.contains("9 bytes"), "{err}");
        assert!(err.contains("openssl rand -hex 32"), "{err}");
        assert!(!err.contains("too-short"), "the secret leaked: {err}");
        assert!(UnsubscribeSecret::new("").is_err());
        assert!(UnsubscribeSecret::new("0123456789abcde").is_err());
        assert!(UnsubscribeSecret::new("0123456789abcdef").is_ok());
        let err = UnsubscribeSecret::new("0123456789abcdef0123\n").unwrap_err();
        assert!(err.contains("whitespace"), "{err}");
        assert!(
            !err.contains("0123456789abcdef"),
            "the secret leaked: {err}"
        );
    }

    #[test]
    fn environment_value() {
        assert!(UnsubscribeSecret::from_var(None).unwrap().is_none());
        let ok = UnsubscribeSecret::from_var(Some(
            KEY.iter().map(|&b| b as char).collect::<String>().into(),
        ));
        assert!(ok.unwrap().is_some());
        let err = UnsubscribeSecret::from_var(Some("short".into())).unwrap_err();
        assert!(err.starts_with("CAMPAIGN_UNSUBSCRIBE_SECRET: "), "{err}");
        assert!(err.contains("openssl rand -hex 32"), "{err}");
    }

    #[test]
    fn secret_file_loses_one_newline_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let key = std::str::from_utf8(KEY).unwrap();
        let expected = secret().token("c", "bob@example.org");
        for text in [key.to_owned(), format!("{key}\n"), format!("{key}\r\n")] {
            write(&text, 0o600);
            let s = UnsubscribeSecret::from_file(&path).unwrap();
            assert_eq!(s.token("c", "bob@example.org"), expected, "{text:?}");
        }
        write(&format!("{key}\n\n"), 0o600);
        let err = UnsubscribeSecret::from_file(&path).unwrap_err();
        assert!(
            err.contains("whitespace") && err.contains("secret"),
            "{err}"
        );
        write(&format!("{key}\n"), 0o640);
        let err = UnsubscribeSecret::from_file(&path).unwrap_err();
        assert!(
            err.contains("mode 0640") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains(key), "the secret leaked: {err}");
        let err = UnsubscribeSecret::from_file(&dir.path().join("absent")).unwrap_err();
        assert!(
            err.starts_with("CAMPAIGN_UNSUBSCRIBE_SECRET_FILE: "),
            "{err}"
        );

        write(key, 0o600);
        let both = UnsubscribeSecret::from_var_or_file(
            Some(key.into()),
            Some(path.clone().into_os_string()),
        );
        assert!(both.unwrap_err().contains("set only one"));
        let file = UnsubscribeSecret::from_var_or_file(None, Some(path.into_os_string()));
        assert!(file.unwrap().is_some());
        assert!(
            UnsubscribeSecret::from_var_or_file(None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn debug_redacts() {
        let s = UnsubscribeSecret::new("a-very-secret-value-indeed").unwrap();
        let shown = format!("{s:?} {:#?}", s);
        assert_eq!(format!("{s:?}"), "UnsubscribeSecret(<redacted>)");
        assert!(!shown.contains("secret-value"));
    }

    #[test]
    fn placeholder_is_not_a_token_shape() {
        assert_ne!(PLACEHOLDER_TOKEN.len(), TOKEN_LEN);
        assert!(PLACEHOLDER_TOKEN.contains("NOT-A-REAL-TOKEN"));
    }
}
