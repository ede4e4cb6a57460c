//! What an operator wants to know of the relay's certificate: whose it is, who issued it and
//! when it expires, read from the DER the TLS handshake received.
//!
//! It never verifies anything (rustls did that, against the trust store, before this is
//! read) and never decides whether a send may go ahead.

use jiff::Timestamp;

/// The relay's own certificate, as `check --smtp` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's distinguished name, e.g. `CN=relay.example`.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The end of its validity.
    pub not_after: Timestamp,
}

impl CertificateInfo {
    /// Reads an X.509 certificate; `None` when it does not parse (the handshake accepted it,
    /// so this only loses the description).
    pub fn from_der(der: &[u8]) -> Option<CertificateInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(CertificateInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: Timestamp::from_second(cert.validity().not_after.timestamp()).ok()?,
        })
    }

    /// One line: subject, issuer, and the expiry counted from `now`.
    pub fn describe(&self, now: Timestamp) -> String {
        let when = self.not_after.strftime("%Y-%m-%d");
        let days = self.days_left(now);
        let expiry = if days < 0 {
            format!("EXPIRED {when}")
        } else {
            format!("expires {when} (in {days} days)")
        };
        format!("{}, issued by {}, {expiry}", self.subject, self.issuer)
    }

    /// A warning when fewer than 14 days are left: a send from cron would start failing.
    pub fn expiry_note(&self, now: Timestamp) -> Option<String> {
        (self.days_left(now) < 14).then(|| {
            format!(
                "the relay's certificate for {} expires on {}: sends fail from then until its operator renews it",
                self.subject,
                self.not_after.strftime("%Y-%m-%d")
            )
        })
    }

    fn days_left(&self, now: Timestamp) -> i64 {
        self.not_after
            .duration_since(now)
            .as_secs()
            .div_euclid(86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_after: &str) -> CertificateInfo {
        CertificateInfo {
            subject: "CN=relay.example".into(),
            issuer: "CN=Internal CA".into(),
            not_after: not_after.parse().unwrap(),
        }
    }

    #[test]
    fn the_expiry_is_counted_from_now_and_warned_about_when_near() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let far = info("2027-03-01T00:00:00Z");
        assert_eq!(
            far.describe(now),
            "CN=relay.example, issued by CN=Internal CA, expires 2027-03-01 (in 89 days)"
        );
        assert_eq!(far.expiry_note(now), None);
        let near = info("2026-12-10T00:00:00Z");
        assert!(
            near.expiry_note(now)
                .unwrap()
                .contains("expires on 2026-12-10")
        );
        assert!(
            info("2026-11-30T00:00:00Z")
                .describe(now)
                .ends_with("EXPIRED 2026-11-30")
        );
    }
}
