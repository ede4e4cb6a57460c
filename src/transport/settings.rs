//! Where and how `campaign send` talks SMTP: the relay's address, TLS mode, credentials and
//! connection limits, resolved once per run into [`SmtpSettings`].
//!
//! This module owns reading the campaign's `[smtp]` table, the `CAMPAIGN_SMTP_URL` override
//! ([`URL_ENV`]) and the password sources ([`PASSWORD_ENV`], or `[smtp] password_file`), and
//! refusing combinations that would leak a secret: a password written into the URL, or
//! plaintext AUTH to a relay that is not on this machine.
//!
//! It never opens a connection ([`super::smtp`] does), and never reads the environment
//! itself: [`SmtpSettings::resolve`] is handed the variables' values, so it is a pure function
//! of its inputs and testable. The password lives only in [`Password`], whose `Debug` is
//! redacted and which has no `Display`, so it cannot reach a log line or an error by accident.
//!
//! # URL forms (`CAMPAIGN_SMTP_URL`)
//! * `smtp://host[:port]`: no TLS, port 25; `smtp://host?tls=starttls` for STARTTLS.
//! * `smtp+starttls://[user@]host[:port]`: STARTTLS, port 587.
//! * `smtps://[user@]host[:port]`: implicit TLS, port 465.
//!
//! The URL replaces the table's host, port, TLS mode and username (it says *where and who*);
//! the password still comes from `CAMPAIGN_SMTP_PASSWORD`, else `[smtp] password_file`.
//! A user name containing `@` is written percent-encoded (`me%40example.org@host`).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::campaign;

/// The environment variable that overrides the `[smtp]` table's relay: see the module docs.
pub const URL_ENV: &str = "CAMPAIGN_SMTP_URL";

/// The environment variable holding the AUTH password.
pub const PASSWORD_ENV: &str = "CAMPAIGN_SMTP_PASSWORD";

/// Seconds to wait for any server reply when `[smtp] timeout_seconds` is not set.
const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// Messages per connection when `[smtp] reconnect_after` is not set.
const DEFAULT_RECONNECT_AFTER: usize = 1000;

/// How the connection to the relay is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (acceptable for a relay on this machine).
    None,
    /// Plain TCP upgraded with STARTTLS before anything else is sent; refused if the relay
    /// does not offer it (never silently falls back to plaintext).
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
}

impl TlsMode {
    /// The port a relay usually listens on for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
        }
    }

    fn parse(value: &str) -> Result<TlsMode, SmtpConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(TlsMode::None),
            "starttls" => Ok(TlsMode::StartTls),
            "tls" => Ok(TlsMode::Implicit),
            other => Err(SmtpConfigError::BadTls {
                value: value.to_owned(),
                hint: ["none", "starttls", "tls"]
                    .into_iter()
                    .find(|mode| strsim::levenshtein(other, mode) <= 2)
                    .map(|mode| format!("did you mean \"{mode}\"? ")),
            }),
        }
    }
}

/// The AUTH password. Its `Debug` prints `Password(<redacted>)` and it has no `Display`, so
/// it never appears in logs, errors or `{:?}` of the settings that hold it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: String) -> Password {
        Password(secret)
    }

    /// The secret itself: only for handing to the AUTH command, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Everything needed to connect to the relay, checked. `Debug` is safe to print (the
/// password is redacted).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Relay host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How the connection is encrypted.
    pub tls: TlsMode,
    /// User name for AUTH; `None` sends no AUTH.
    pub username: Option<String>,
    /// Password for AUTH; always present when `username` is.
    pub password: Option<Password>,
    /// The name sent in EHLO: `[smtp] hello_name`, or `localhost` here; `send` and `check`
    /// put [`default_hello_name`] in its place when the table names none.
    pub hello_name: String,
    /// How long to wait for a connection or any server reply.
    pub timeout: Duration,
    /// Open a fresh connection after this many messages (at least 1).
    pub reconnect_after: usize,
    /// Use BDAT when the relay offers CHUNKING and PIPELINING (`[smtp] chunking`, default
    /// true): one round trip for every message, where pipelined DATA takes two for a batch's
    /// first message and one for the rest.
    pub chunking: bool,
    /// AUTH over an unencrypted connection to a host that is not loopback was allowed.
    pub allow_insecure_auth: bool,
    /// Certificate authorities trusted besides the built-in roots (`[smtp] ca_file`).
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// The relay's certificate is not checked (`[smtp] dangerous_skip_certificate_check`).
    pub skip_certificate_check: bool,
}

/// Why the SMTP settings cannot be used. Messages say what to change; none contains the
/// password (nor the URL, which might).
#[derive(Debug, thiserror::Error)]
pub enum SmtpConfigError {
    /// Neither the table nor the URL names a relay.
    #[error(
        "no SMTP relay configured: set [smtp] host in the campaign file, or {URL_ENV} (e.g. smtp+starttls://user@relay.example)"
    )]
    NoHost,
    /// The override URL does not parse; the reason names the faulty part, not the whole URL.
    #[error("{URL_ENV} is not usable: {reason}")]
    BadUrl {
        /// What is wrong.
        reason: String,
    },
    /// The URL carries a password.
    #[error(
        "{URL_ENV} contains a password (user:password@...): refusing to use it; put the password in {PASSWORD_ENV}, never in the URL (URLs end up in shell history and process lists)"
    )]
    PasswordInUrl,
    /// `[smtp] tls` is not a known mode.
    #[error(
        "[smtp] tls = {value:?} is not a TLS mode; {}use \"none\", \"starttls\" or \"tls\" (implicit TLS, port 465)",
        hint.as_deref().unwrap_or("")
    )]
    BadTls {
        /// The value as written.
        value: String,
        /// `did you mean "starttls"? ` for a near miss.
        hint: Option<String>,
    },
    /// Another `[smtp]` value is unusable.
    #[error("[smtp] {field}: {reason}")]
    Invalid {
        /// The key, e.g. `hello_name`.
        field: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// The password file cannot be read.
    #[error("cannot read the SMTP password file {}: {cause}", path.display())]
    PasswordFile {
        /// The file, resolved against the campaign file's directory.
        path: PathBuf,
        /// The cause: in the message, not chained, so it is printed once.
        cause: std::io::Error,
    },
    /// The password file's first line is empty.
    #[error("the SMTP password file {} is empty: write the password on its first line", path.display())]
    EmptyPasswordFile {
        /// The file.
        path: PathBuf,
    },
    /// The certificate authority file cannot be used.
    #[error(
        "[smtp] ca_file {}: {reason}; it must hold one or more PEM certificates (-----BEGIN CERTIFICATE-----), e.g. your internal CA's",
        path.display()
    )]
    CaFile {
        /// The file, resolved against the campaign file's directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A username without any password source.
    #[error(
        "SMTP username {username:?} is set but no password: set {PASSWORD_ENV} or [smtp] password_file"
    )]
    MissingPassword {
        /// The configured user name.
        username: String,
    },
    /// AUTH would send the password in plaintext over the network.
    #[error(
        "refusing to send the SMTP password unencrypted to {host}: use tls = \"starttls\" or \"tls\" (or smtp+starttls:// / smtps:// in {URL_ENV}); only if the network path is trusted, set [smtp] allow_insecure_auth = true"
    )]
    InsecureAuth {
        /// The relay host.
        host: String,
    },
}

impl SmtpConfigError {
    /// True when only the environment of the moment decides it (no relay named in the
    /// campaign file or the URL variable, no password variable for a configured user), so a
    /// later `send` with the variables set may not meet it.
    pub fn depends_on_environment(&self) -> bool {
        matches!(
            self,
            SmtpConfigError::NoHost | SmtpConfigError::MissingPassword { .. }
        )
    }
}

/// The parts of an override URL.
#[derive(Debug, PartialEq, Eq)]
struct UrlParts {
    tls: TlsMode,
    host: String,
    port: Option<u16>,
    username: Option<String>,
}

fn bad_url(reason: impl Into<String>) -> SmtpConfigError {
    SmtpConfigError::BadUrl {
        reason: reason.into(),
    }
}

/// Decodes `%XX` escapes (user names holding `@`).
fn percent_decode(s: &str) -> Result<String, SmtpConfigError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad_url("the user name has a '%' not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad_url("the user name's %-escapes are not UTF-8"))
}

/// Checks a host name or address has nothing that could break a connection string.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err(format!("the host contains {c:?}"));
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<UrlParts, SmtpConfigError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad_url("expected smtp://host[:port], smtp+starttls://host[:port] or smtps://host[:port]")
    })?;
    let mut tls = match scheme.to_ascii_lowercase().as_str() {
        "smtp" => TlsMode::None,
        "smtp+starttls" => TlsMode::StartTls,
        "smtps" => TlsMode::Implicit,
        other => {
            return Err(bad_url(format!(
                "unknown scheme {other:?}; use smtp://, smtp+starttls:// or smtps://"
            )));
        }
    };
    // The password check comes first and looks at everything after the scheme, so a URL with
    // a password is refused whatever else is wrong with it (a password holding '?', '/' or
    // '#' must not be cut up and echoed as a "bad port").
    if rest.rfind('@').is_some_and(|at| rest[..at].contains(':')) {
        return Err(SmtpConfigError::PasswordInUrl);
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    if before_query.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(bad_url("a '#' fragment has no meaning here; remove it"));
    }
    let authority = before_query.strip_suffix('/').unwrap_or(before_query);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(SmtpConfigError::PasswordInUrl);
    }
    if hostport.contains('/') {
        return Err(bad_url(
            "a path after the host has no meaning; write only scheme://[user@]host[:port]",
        ));
    }
    let username = match userinfo {
        Some("") => return Err(bad_url("'@' with no user name before it")),
        Some(u) => Some(percent_decode(u)?),
        None => None,
    };
    let (host, port_text) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad_url("an IPv6 address is missing its closing ']'"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad_url("unexpected text after the IPv6 address"))?,
            ),
        };
        (host, port)
    } else {
        match hostport.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(bad_url(
                    "write an IPv6 address in brackets: smtp://[::1]:25",
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    check_host(host).map_err(bad_url)?;
    let port = match port_text {
        None => None,
        Some(p) => match p.parse::<u16>() {
            // The text is not echoed: in a mistyped URL it may be part of a secret.
            Ok(0) | Err(_) => return Err(bad_url("the port is not a number from 1 to 65535")),
            Ok(n) => Some(n),
        },
    };
    if let Some(query) = query {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != "tls" {
                // Only the key is echoed: the value could be a secret someone tried to pass.
                return Err(bad_url(format!(
                    "unknown query parameter {key:?}; the only one is ?tls=none|starttls|tls"
                )));
            }
            if scheme.eq_ignore_ascii_case("smtp") {
                tls = TlsMode::parse(value).map_err(|_| {
                    bad_url(format!(
                        "?tls={value:?} is not a TLS mode; use none, starttls or tls"
                    ))
                })?;
            } else {
                return Err(bad_url(format!(
                    "the scheme {scheme}:// already sets the TLS mode; remove ?tls="
                )));
            }
        }
    }
    Ok(UrlParts {
        tls,
        host: host.to_owned(),
        port,
        username,
    })
}

/// Reads the PEM certificates of a certificate authority file.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, SmtpConfigError> {
    use rustls::pki_types::pem::PemObject as _;
    let failed = |reason: String| SmtpConfigError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("it holds no certificate".into()));
    }
    Ok(certs)
}

/// Reads the first line of the password file (trailing CR/LF removed, nothing else trimmed:
/// a password may legitimately start or end with a space).
fn read_password_file(path: &Path) -> Result<Password, SmtpConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| SmtpConfigError::PasswordFile {
        path: path.to_owned(),
        cause,
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(SmtpConfigError::EmptyPasswordFile {
            path: path.to_owned(),
        });
    }
    Ok(Password(line.to_owned()))
}

/// The name to greet a relay with when `[smtp] hello_name` is not set: this machine's host
/// name when it is a full domain name, else the domain of the sender (`[message] from`),
/// else `localhost`. Relays and receivers penalise `localhost` and bare host names. The flag
/// says the host's own name could not be used, which is worth a warning.
pub fn default_hello_name(from_domain: Option<&str>) -> (String, bool) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim().trim_end_matches('.');
    let usable = |name: &str| {
        name.contains('.')
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if usable(host) {
        return (host.to_ascii_lowercase(), false);
    }
    match from_domain {
        Some(d) if usable(d) => (d.to_ascii_lowercase(), true),
        _ => ("localhost".to_owned(), true),
    }
}

impl SmtpSettings {
    /// Resolves the settings from the campaign's `[smtp]` table, then the override URL (the
    /// value of [`URL_ENV`]), the password (the value of [`PASSWORD_ENV`], else
    /// `table.password_file` relative to `base_dir`, the campaign file's directory).
    ///
    /// A pure function of its inputs: the caller reads the environment, so tests need not.
    /// Empty `url` or `password_env` values count as unset (`VAR= campaign send` clears them).
    pub fn resolve(
        table: &campaign::SmtpTable,
        url: Option<&str>,
        password_env: Option<&str>,
        base_dir: &Path,
    ) -> Result<SmtpSettings, SmtpConfigError> {
        let url = url.filter(|u| !u.trim().is_empty());
        let (host, port, tls, username) = match url {
            Some(url) => {
                let parts = parse_url(url)?;
                let port = parts.port.unwrap_or(parts.tls.default_port());
                (parts.host, port, parts.tls, parts.username)
            }
            None => {
                let host = table
                    .host
                    .as_deref()
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .ok_or(SmtpConfigError::NoHost)?;
                // An IPv6 address may be written with or without brackets.
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                check_host(host).map_err(|reason| SmtpConfigError::Invalid {
                    field: "host",
                    reason: format!("{host:?}: {reason}"),
                })?;
                let tls = match &table.tls {
                    Some(t) => TlsMode::parse(t)?,
                    // A named relay is almost always remote: encrypted unless told otherwise.
                    None => TlsMode::StartTls,
                };
                if table.port == Some(0) {
                    return Err(SmtpConfigError::Invalid {
                        field: "port",
                        reason: "0 is not a port; remove the line to use the mode's default".into(),
                    });
                }
                let port = table.port.unwrap_or(tls.default_port());
                let username = table
                    .username
                    .as_deref()
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned);
                (host.to_owned(), port, tls, username)
            }
        };

        let password = match &username {
            None => None,
            Some(user) => match password_env.filter(|p| !p.is_empty()) {
                Some(p) => Some(Password(p.to_owned())),
                None => match &table.password_file {
                    Some(file) => Some(read_password_file(&base_dir.join(file))?),
                    None => {
                        return Err(SmtpConfigError::MissingPassword {
                            username: user.clone(),
                        });
                    }
                },
            },
        };

        let hello_name = table
            .hello_name
            .as_deref()
            .map(str::trim)
            .unwrap_or("localhost");
        if hello_name.is_empty()
            || hello_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SmtpConfigError::Invalid {
                field: "hello_name",
                reason: format!(
                    "{hello_name:?} is not a host name; write this machine's name, e.g. \"mail.example.org\""
                ),
            });
        }
        let timeout_secs = table.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 {
            return Err(SmtpConfigError::Invalid {
                field: "timeout_seconds",
                reason: "must be at least 1 (the default is 60)".into(),
            });
        }
        let reconnect_after = table.reconnect_after.unwrap_or(DEFAULT_RECONNECT_AFTER);
        if reconnect_after == 0 {
            return Err(SmtpConfigError::Invalid {
                field: "reconnect_after",
                reason: "must be at least 1 (the default is 1000 messages per connection)".into(),
            });
        }

        let ca_certificates = match &table.ca_file {
            Some(file) => read_ca_file(&base_dir.join(file))?,
            None => Vec::new(),
        };
        let settings = SmtpSettings {
            host,
            port,
            tls,
            username,
            password,
            ca_certificates,
            skip_certificate_check: table.dangerous_skip_certificate_check.unwrap_or(false),
            hello_name: hello_name.to_owned(),
            timeout: Duration::from_secs(timeout_secs),
            reconnect_after,
            chunking: table.chunking.unwrap_or(true),
            allow_insecure_auth: table.allow_insecure_auth.unwrap_or(false),
        };
        if settings.username.is_some()
            && settings.tls == TlsMode::None
            && !settings.is_loopback()
            && !settings.allow_insecure_auth
        {
            return Err(SmtpConfigError::InsecureAuth {
                host: settings.host,
            });
        }
        Ok(settings)
    }

    /// True when the host is this machine: `localhost`, 127.0.0.0/8 or `::1` (also as an
    /// IPv4-mapped address). Only then may AUTH go unencrypted without being allowed.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_end_matches('.');
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.is_loopback(),
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => false,
        }
    }

    /// A description safe to print, e.g. `smtp://user@relay.example:587 (STARTTLS)`; never
    /// contains the password.
    pub fn describe(&self) -> String {
        let scheme = if self.tls == TlsMode::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let user = self
            .username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mode = match self.tls {
            TlsMode::None => "no TLS",
            TlsMode::StartTls => "STARTTLS",
            TlsMode::Implicit => "implicit TLS",
        };
        format!("{scheme}://{user}{host}:{} ({mode})", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(host: &str) -> campaign::SmtpTable {
        campaign::SmtpTable {
            host: Some(host.to_owned()),
            ..Default::default()
        }
    }

    fn resolve(
        t: &campaign::SmtpTable,
        url: Option<&str>,
        pw: Option<&str>,
    ) -> Result<SmtpSettings, SmtpConfigError> {
        SmtpSettings::resolve(t, url, pw, Path::new("/nonexistent"))
    }

    #[test]
    fn table_defaults() {
        let s = resolve(&table("relay.example"), None, None).unwrap();
        assert_eq!(s.host, "relay.example");
        assert_eq!(s.tls, TlsMode::StartTls);
        assert_eq!(s.port, 587);
        assert_eq!(s.hello_name, "localhost");
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.reconnect_after, 1000);
        assert!(s.chunking, "BDAT when offered, unless turned off");
        assert!(s.username.is_none() && s.password.is_none());
        assert!(!s.allow_insecure_auth);
        assert_eq!(s.describe(), "smtp://relay.example:587 (STARTTLS)");
    }

    #[test]
    fn chunking_can_be_turned_off() {
        let mut t = table("relay.example");
        t.chunking = Some(false);
        assert!(!resolve(&t, None, None).unwrap().chunking);
        let parsed: campaign::SmtpTable =
            toml::from_str("host = \"relay.example\"\nchunking = false").unwrap();
        assert_eq!(parsed.chunking, Some(false));
    }

    #[test]
    fn table_tls_modes_and_ports() {
        for (tls, port) in [("none", 25), ("starttls", 587), ("tls", 465), ("TLS", 465)] {
            let mut t = table("relay.example");
            t.tls = Some(tls.into());
            assert_eq!(resolve(&t, None, None).unwrap().port, port, "{tls}");
        }
        let mut t = table("relay.example");
        t.tls = Some("ssl".into());
        let e = resolve(&t, None, None).unwrap_err().to_string();
        assert!(e.contains("\"ssl\"") && e.contains("starttls"), "{e}");
        assert!(!e.contains("did you mean"), "{e}");
        t.tls = Some("startls".into());
        let e = resolve(&t, None, None).unwrap_err().to_string();
        assert!(e.contains("did you mean \"starttls\"?"), "{e}");
        t.tls = Some("none".into());
        t.port = Some(2525);
        assert_eq!(resolve(&t, None, None).unwrap().port, 2525);
        t.port = Some(0);
        assert!(resolve(&t, None, None).is_err());
    }

    #[test]
    fn no_host_says_what_to_set() {
        let e = resolve(&campaign::SmtpTable::default(), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[smtp] host") && e.contains(URL_ENV), "{e}");
        // An empty URL is no URL.
        assert!(matches!(
            resolve(&campaign::SmtpTable::default(), Some("  "), None),
            Err(SmtpConfigError::NoHost)
        ));
    }

    #[test]
    fn url_forms() {
        let none = campaign::SmtpTable::default();
        let cases: &[(&str, TlsMode, &str, u16, Option<&str>)] = &[
            ("smtp://127.0.0.1", TlsMode::None, "127.0.0.1", 25, None),
            (
                "smtp://localhost:2525",
                TlsMode::None,
                "localhost",
                2525,
                None,
            ),
            (
                "smtp://localhost:2525/",
                TlsMode::None,
                "localhost",
                2525,
                None,
            ),
            (
                "smtp://relay.example?tls=starttls",
                TlsMode::StartTls,
                "relay.example",
                587,
                None,
            ),
            (
                "smtp://relay.example:25?tls=starttls",
                TlsMode::StartTls,
                "relay.example",
                25,
                None,
            ),
            (
                "smtp+starttls://me@relay.example",
                TlsMode::StartTls,
                "relay.example",
                587,
                Some("me"),
            ),
            (
                "smtps://relay.example",
                TlsMode::Implicit,
                "relay.example",
                465,
                None,
            ),
            (
                "SMTPS://me%40park.example@relay.example:4650",
                TlsMode::Implicit,
                "relay.example",
                4650,
                Some("me@park.example"),
            ),
            ("smtp://[::1]:2525", TlsMode::None, "::1", 2525, None),
            ("smtp://[::1]", TlsMode::None, "::1", 25, None),
        ];
        for &(url, tls, host, port, user) in cases {
            let s = resolve(&none, Some(url), Some("pw")).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((s.tls, s.host.as_str(), s.port), (tls, host, port), "{url}");
            assert_eq!(s.username.as_deref(), user, "{url}");
            assert_eq!(s.password.is_some(), user.is_some(), "{url}");
        }
    }

    #[test]
    fn bad_urls() {
        let none = campaign::SmtpTable::default();
        for url in [
            "relay.example",
            "http://relay.example",
            "smtp://",
            "smtp://relay.example:0",
            "smtp://relay.example:99999",
            "smtp://relay.example:abc",
            "smtp://relay.example/path",
            "smtp://::1",
            "smtp://[::1",
            "smtp://relay.example?tls=ssl",
            "smtp://relay.example?secret=hunter2",
            "smtps://relay.example?tls=none",
            "smtp://@relay.example",
            "smtp://me%4@relay.example",
            "smtps://me:hunter2",
        ] {
            let e = resolve(&none, Some(url), None);
            let msg = e
                .as_ref()
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(
                matches!(e, Err(SmtpConfigError::BadUrl { .. })),
                "{url}: {msg}"
            );
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn url_overrides_table_where_and_who() {
        let mut t = table("relay.example");
        t.tls = Some("tls".into());
        t.port = Some(4650);
        t.username = Some("table-user".into());
        t.hello_name = Some("mail.park.example".into());
        t.timeout_seconds = Some(5);
        let s = resolve(&t, Some("smtp://127.0.0.1:2525"), Some("pw")).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("127.0.0.1", 2525, TlsMode::None)
        );
        assert!(s.username.is_none() && s.password.is_none());
        // Connection tuning still comes from the table.
        assert_eq!(s.hello_name, "mail.park.example");
        assert_eq!(s.timeout, Duration::from_secs(5));
    }

    #[test]
    fn password_in_url_is_refused_without_echoing_it() {
        let none = campaign::SmtpTable::default();
        for url in [
            "smtps://me:hunter2@relay.example",
            "smtp+starttls://me:hunter2@relay.example:587",
            "smtp://me:@relay.example",
            "smtps://me:hunter2@relay.example/oops?x=1",
            "smtps://me:hun?ter2@relay.example",
            "smtps://me:hun/ter2@relay.example",
            "smtps://me:hun@ter2@relay.example:465",
        ] {
            let e = resolve(&none, Some(url), None).unwrap_err();
            assert!(matches!(e, SmtpConfigError::PasswordInUrl), "{url}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(PASSWORD_ENV), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn password_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw.txt"), "from file \r\nsecond line\n").unwrap();
        let mut t = table("relay.example");
        t.username = Some("me".into());
        t.password_file = Some("pw.txt".into());
        let s = SmtpSettings::resolve(&t, None, None, dir.path()).unwrap();
        assert_eq!(s.password.unwrap().expose(), "from file ");
        // The environment wins over the file.
        let s = SmtpSettings::resolve(&t, None, Some("from env"), dir.path()).unwrap();
        assert_eq!(s.password.unwrap().expose(), "from env");

        t.password_file = Some("missing.txt".into());
        let e = SmtpSettings::resolve(&t, None, None, dir.path()).unwrap_err();
        assert!(matches!(e, SmtpConfigError::PasswordFile { .. }), "{e}");
        assert!(e.to_string().contains("missing.txt"), "{e}");

        std::fs::write(dir.path().join("empty.txt"), "\n").unwrap();
        t.password_file = Some("empty.txt".into());
        let e = SmtpSettings::resolve(&t, None, None, dir.path()).unwrap_err();
        assert!(
            matches!(e, SmtpConfigError::EmptyPasswordFile { .. }),
            "{e}"
        );

        t.password_file = None;
        let e = SmtpSettings::resolve(&t, None, Some(""), dir.path()).unwrap_err();
        assert!(matches!(e, SmtpConfigError::MissingPassword { .. }), "{e}");
        assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
    }

    #[test]
    fn a_ca_file_is_read_as_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("empty.pem"), "nothing here\n").unwrap();
        let mut t = table("relay.example");
        t.ca_file = Some("ca.pem".into());
        let s = SmtpSettings::resolve(&t, None, None, dir.path()).unwrap();
        assert_eq!(s.ca_certificates.len(), 1);
        for (file, says) in [
            ("missing.pem", "missing.pem"),
            ("empty.pem", "no certificate"),
        ] {
            t.ca_file = Some(file.into());
            let e = SmtpSettings::resolve(&t, None, None, dir.path()).unwrap_err();
            assert!(matches!(e, SmtpConfigError::CaFile { .. }), "{e}");
            let e = e.to_string();
            assert!(
                e.contains("[smtp] ca_file") && e.contains(says) && e.contains("PEM"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_default_hello_name_is_never_a_bare_host() {
        let (name, fell_back) = default_hello_name(Some("Park.Example"));
        // This machine's full name, or the sender's domain: never localhost when a domain is
        // known, never a name without a dot.
        assert!(name.contains('.'), "{name}");
        assert_ne!(name, "localhost");
        assert_eq!(fell_back, name == "park.example");
        let (name, _) = default_hello_name(Some("not a domain"));
        assert!(name.contains('.') || name == "localhost", "{name}");
    }

    #[test]
    fn password_file_is_not_read_without_a_username() {
        let mut t = table("relay.example");
        t.password_file = Some("does-not-exist".into());
        let s = resolve(&t, None, Some("pw")).unwrap();
        assert!(s.password.is_none());
    }

    #[test]
    fn insecure_auth() {
        let mut t = table("relay.example");
        t.tls = Some("none".into());
        t.username = Some("me".into());
        let e = resolve(&t, None, Some("hunter2")).unwrap_err();
        assert!(matches!(e, SmtpConfigError::InsecureAuth { .. }), "{e}");
        assert!(e.to_string().contains("allow_insecure_auth"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
        // Same through the URL.
        let e = resolve(
            &campaign::SmtpTable::default(),
            Some("smtp://me@10.0.0.5"),
            Some("pw"),
        );
        assert!(matches!(e, Err(SmtpConfigError::InsecureAuth { .. })));

        t.allow_insecure_auth = Some(true);
        assert!(resolve(&t, None, Some("hunter2")).is_ok());

        for host in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "LOCALHOST.",
        ] {
            let mut t = table(host);
            t.tls = Some("none".into());
            t.username = Some("me".into());
            let s = resolve(&t, None, Some("pw")).unwrap_or_else(|e| panic!("{host}: {e}"));
            assert!(s.is_loopback(), "{host}");
        }
        for host in ["10.0.0.1", "localhost.example", "128.0.0.1", "::2"] {
            let mut t = table(host);
            t.tls = Some("none".into());
            assert!(!resolve(&t, None, None).unwrap().is_loopback(), "{host}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_and_describe() {
        let mut t = table("relay.example");
        t.username = Some("me@park.example".into());
        let s = resolve(&t, None, Some("hunter2")).unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("Password(<redacted>)"), "{debug}");
        assert_eq!(
            s.describe(),
            "smtp://me@park.example@relay.example:587 (STARTTLS)"
        );
        assert!(!s.describe().contains("hunter2"));
        let s = resolve(&t, Some("smtps://[::1]"), Some("hunter2")).unwrap();
        assert_eq!(s.describe(), "smtps://[::1]:465 (implicit TLS)");
    }

    #[test]
    fn other_table_values_are_checked() {
        let mut t = table("relay.example");
        t.hello_name = Some("two words".into());
        assert!(matches!(
            resolve(&t, None, None),
            Err(SmtpConfigError::Invalid {
                field: "hello_name",
                ..
            })
        ));
        let mut t = table("relay.example");
        t.timeout_seconds = Some(0);
        assert!(resolve(&t, None, None).is_err());
        let mut t = table("relay.example");
        t.reconnect_after = Some(0);
        assert!(resolve(&t, None, None).is_err());
        let mut t = table("relay example");
        t.tls = Some("none".into());
        assert!(matches!(
            resolve(&t, None, None),
            Err(SmtpConfigError::Invalid { field: "host", .. })
        ));
    }
}
