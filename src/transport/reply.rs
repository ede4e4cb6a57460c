//! Reading the relay's replies: RFC 5321 reply codes and RFC 3463 enhanced status codes,
//! turned into an [`Outcome`] the send loop can act on.
//!
//! Pure functions of a reply's stage, code and text, so the whole policy is one table test.
//! It never talks to a server and never decides what the loop does with an outcome.

use super::Outcome;

/// Where in the SMTP conversation a reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Greeting, EHLO, STARTTLS or AUTH.
    Connect,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// `DATA` (before the body).
    Data,
    /// After the body's final dot.
    Message,
}

impl Stage {
    pub(super) fn command(self) -> &'static str {
        match self {
            Stage::Connect => "connection setup",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Message => "end of message",
        }
    }
}

/// Parses an RFC 3463 enhanced status code (`5.1.1`) from the start of reply text:
/// `(class, subject, detail)`. Leading spaces are skipped; the code must be followed by a
/// space or the end of the text.
pub fn enhanced_code(text: &str) -> Option<(u8, u16, u16)> {
    /// Up to `max` ASCII digits at the front, as a number, and the rest.
    fn number(s: &str, max: usize) -> Option<(u16, &str)> {
        let len = s.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 || len > max {
            return None;
        }
        Some((s[..len].parse().ok()?, &s[len..]))
    }
    let s = text.trim_start();
    let class = match s.as_bytes().first()? {
        b'2' => 2,
        b'4' => 4,
        b'5' => 5,
        _ => return None,
    };
    let s = s[1..].strip_prefix('.')?;
    let (subject, s) = number(s, 3)?;
    let s = s.strip_prefix('.')?;
    let (detail, s) = number(s, 3)?;
    if !(s.is_empty() || s.starts_with(|c: char| c.is_ascii_whitespace())) {
        return None;
    }
    Some((class, subject, detail))
}

/// True when a transient reply looks like rate limiting rather than a passing fault.
fn looks_like_throttling(code: u16, subject: Option<u16>, text: &str) -> bool {
    if code == 421 || (matches!(code, 450 | 451 | 452 | 454) && subject == Some(7)) {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    const PHRASES: [&str; 6] = [
        "too many connections",
        "too many messages",
        "too many concurrent",
        "try again later",
        "throttl",
        "ratelimit",
    ];
    if PHRASES.iter().any(|p| lower.contains(p)) {
        return true;
    }
    // "rate" as a word ("rate limit", "sending rate"), not inside "generated" or "separate".
    lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word == "rate")
}

/// Classifies a reply at `stage`: pure, so the policy is testable without a server.
///
/// * 2xx/3xx: [`Outcome::Accepted`] (callers pass negative replies; this keeps it total).
/// * 5.7.x (when the enhanced class agrees with the code) or 530/534/535/538 anywhere:
///   [`Outcome::Halt`]. Policy, authentication, DMARC and reputation are the sender's to fix;
///   suppressing donors for them would lose good addresses.
/// * Other 4xx: [`Outcome::Deferred`], `throttle` per [`Outcome::Deferred`]'s rules.
/// * Other 5xx on connect or MAIL FROM: [`Outcome::Halt`] (every message would fail alike).
/// * 5xx that is the recipient's: 5.1.x or 5.2.x anywhere, and at RCPT any other refusal
///   but the relay's own errors below (550/551/553 without an enhanced code mean a bad
///   address): [`Outcome::Bounced`].
/// * 5xx that is not the donor's: syntax and sequence errors (500–504), system errors
///   (5.3.x, 5.4.x, 5.5.x), the DATA command refused, and anything refused after the dot
///   that does not name the recipient (content, an abort before the body was read): the
///   same for every donor of the template, so [`Outcome::Deferred`]. Failing donors for it
///   would burn the list; the send loop's circuit breaker halts the run when it repeats
///   ([`health`]).
pub fn classify(stage: Stage, code: u16, text: &str) -> Outcome {
    if code < 400 {
        return Outcome::Accepted {
            reply: text.to_owned(),
        };
    }
    // RFC 3463 says the enhanced class must agree with the reply's; a server that says
    // "550 4.7.1" is not trusted on the details.
    let enhanced = enhanced_code(text).filter(|&(class, _, _)| u16::from(class) == code / 100);
    let subject = enhanced.map(|(_, subject, _)| subject);
    let permanent = code >= 500;
    if matches!(code, 530 | 534 | 535 | 538) || (permanent && subject == Some(7)) {
        return Outcome::Halt {
            code: Some(code),
            text: text.to_owned(),
        };
    }
    if !permanent {
        return Outcome::Deferred {
            code: Some(code),
            text: text.to_owned(),
            throttle: looks_like_throttling(code, subject, text),
        };
    }
    if matches!(stage, Stage::Connect | Stage::Mail) {
        return Outcome::Halt {
            code: Some(code),
            text: text.to_owned(),
        };
    }
    let bounced = |suppress| Outcome::Bounced {
        code,
        text: text.to_owned(),
        suppress,
    };
    let relays = || Outcome::Deferred {
        code: Some(code),
        text: text.to_owned(),
        throttle: false,
    };
    match enhanced {
        Some((_, 1, _)) | Some((_, 2, 1)) => bounced(true),
        Some((_, 2, _)) => bounced(false),
        _ if (500..=504).contains(&code) => relays(),
        Some((_, 3..=5, _)) => relays(),
        _ if stage != Stage::Rcpt => relays(),
        None => bounced(matches!(code, 550 | 551 | 553)),
        Some(_) => bounced(false),
    }
}

/// What an outcome says about the relay, for the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The relay works: an accepted message, or a refusal that is the donor's own.
    Working,
    /// Says nothing either way (a temporary refusal, throttling, a halt).
    Unclear,
    /// The relay, not the donor, failed this message, in this way.
    Failing(Fault),
}

/// How a relay fails a message when it is not the donor's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A syntax or sequence error (500–504): the relay and this client disagree.
    Protocol,
    /// A system error (5.3.x, 5.4.x, 5.5.x), or the DATA command refused.
    System,
    /// The connection failed or timed out before the message was sent.
    Connection,
    /// The connection was lost after the message was sent, before the reply.
    LostAfterMessage,
}

impl Fault {
    /// For the operator: what went wrong, and what to look at.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Protocol => {
                "syntax or sequence errors (500-504): check that the host and port are an SMTP relay and that nothing in between rewrites the conversation"
            }
            Fault::System => {
                "system errors (5.3.x-5.5.x or DATA refused): check the relay's logs, its disk and queue, and its message size limit"
            }
            Fault::Connection => {
                "connections failing or timing out before the message was sent: check the relay is up and reachable, and [smtp] timeout_seconds"
            }
            Fault::LostAfterMessage => {
                "connections lost after the message was sent, before the relay confirmed it: check the relay's logs for crashes or limits; those donors are listed in unknown.csv"
            }
        }
    }
}

/// What `outcome` says about the relay (see [`Health`]).
pub fn health(outcome: &Outcome) -> Health {
    match outcome {
        Outcome::Accepted { .. } | Outcome::Bounced { .. } => Health::Working,
        Outcome::Unknown { .. } => Health::Failing(Fault::LostAfterMessage),
        Outcome::Deferred { code: None, .. } => Health::Failing(Fault::Connection),
        Outcome::Deferred {
            code: Some(code), ..
        } if *code >= 500 => Health::Failing(if (500..=504).contains(code) {
            Fault::Protocol
        } else {
            Fault::System
        }),
        Outcome::Deferred { .. } | Outcome::Halt { .. } => Health::Unclear,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(enhanced_code("5.1.1 No such user"), Some((5, 1, 1)));
        assert_eq!(enhanced_code("  4.7.28 slow down"), Some((4, 7, 28)));
        assert_eq!(enhanced_code("2.0.0"), Some((2, 0, 0)));
        assert_eq!(
            enhanced_code("5.7.26 Unauthenticated email"),
            Some((5, 7, 26))
        );
        assert_eq!(enhanced_code("5.123.456 x"), Some((5, 123, 456)));
        for text in [
            "",
            "No such user",
            "3.1.1 x",
            "5.1 x",
            "5.1.1x",
            "5..1 x",
            "5.1234.1 x",
            "5.1.1234 x",
            "user 5.1.1",
            "51.1.1 x",
        ] {
            assert_eq!(enhanced_code(text), None, "{text:?}");
        }
    }

    fn deferred(code: u16, throttle: bool, text: &str) -> Outcome {
        Outcome::Deferred {
            code: Some(code),
            text: text.into(),
            throttle,
        }
    }

    fn bounced(code: u16, suppress: bool, text: &str) -> Outcome {
        Outcome::Bounced {
            code,
            text: text.into(),
            suppress,
        }
    }

    fn halt(code: u16, text: &str) -> Outcome {
        Outcome::Halt {
            code: Some(code),
            text: text.into(),
        }
    }

    #[test]
    fn classify_table() {
        use Stage::*;
        let cases: &[(Stage, u16, &str, Outcome)] = &[
            (
                Message,
                250,
                "2.0.0 Ok: queued as 4Fq1",
                Outcome::Accepted {
                    reply: "2.0.0 Ok: queued as 4Fq1".into(),
                },
            ),
            // Transient.
            (
                Rcpt,
                421,
                "4.7.0 Service shutting down",
                deferred(421, true, "4.7.0 Service shutting down"),
            ),
            (
                Message,
                421,
                "closing connection",
                deferred(421, true, "closing connection"),
            ),
            (
                Rcpt,
                450,
                "4.7.0 Greylisted",
                deferred(450, true, "4.7.0 Greylisted"),
            ),
            (
                Message,
                451,
                "4.3.0 Temporary lookup failure",
                deferred(451, false, "4.3.0 Temporary lookup failure"),
            ),
            (
                Mail,
                451,
                "4.3.0 Temporary lookup failure",
                deferred(451, false, "4.3.0 Temporary lookup failure"),
            ),
            (
                Rcpt,
                452,
                "4.2.2 Mailbox full",
                deferred(452, false, "4.2.2 Mailbox full"),
            ),
            (
                Mail,
                454,
                "4.7.0 TLS not available",
                deferred(454, true, "4.7.0 TLS not available"),
            ),
            (
                Rcpt,
                450,
                "Too many connections from your IP",
                deferred(450, true, "Too many connections from your IP"),
            ),
            (
                Data,
                451,
                "Sending rate exceeded",
                deferred(451, true, "Sending rate exceeded"),
            ),
            (
                Rcpt,
                451,
                "Please try again later",
                deferred(451, true, "Please try again later"),
            ),
            (
                Rcpt,
                451,
                "message generated a separate error",
                deferred(451, false, "message generated a separate error"),
            ),
            (
                Connect,
                421,
                "4.7.28 Our system has detected an unusual rate",
                deferred(421, true, "4.7.28 Our system has detected an unusual rate"),
            ),
            // Bounces.
            (
                Rcpt,
                550,
                "5.1.1 No such user",
                bounced(550, true, "5.1.1 No such user"),
            ),
            (
                Message,
                550,
                "5.1.1 No such user",
                bounced(550, true, "5.1.1 No such user"),
            ),
            (
                Rcpt,
                550,
                "5.2.1 Mailbox disabled",
                bounced(550, true, "5.2.1 Mailbox disabled"),
            ),
            (
                Rcpt,
                552,
                "5.2.2 Mailbox full",
                bounced(552, false, "5.2.2 Mailbox full"),
            ),
            // The relay's fault, not the donor's: deferred, and counted by the breaker.
            (
                Message,
                552,
                "5.3.4 Message too big",
                deferred(552, false, "5.3.4 Message too big"),
            ),
            (
                Rcpt,
                500,
                "5.3.0 Server error",
                deferred(500, false, "5.3.0 Server error"),
            ),
            (
                Rcpt,
                503,
                "5.5.1 Bad sequence of commands",
                deferred(503, false, "5.5.1 Bad sequence of commands"),
            ),
            (
                Message,
                502,
                "Command not implemented",
                deferred(502, false, "Command not implemented"),
            ),
            (Data, 550, "Not now", deferred(550, false, "Not now")),
            (
                Rcpt,
                550,
                "Mailbox unavailable",
                bounced(550, true, "Mailbox unavailable"),
            ),
            (
                Rcpt,
                551,
                "User not local",
                bounced(551, true, "User not local"),
            ),
            (
                Rcpt,
                553,
                "Mailbox name not allowed",
                bounced(553, true, "Mailbox name not allowed"),
            ),
            (
                Rcpt,
                554,
                "Transaction failed",
                bounced(554, false, "Transaction failed"),
            ),
            (
                Message,
                554,
                "Transaction failed",
                deferred(554, false, "Transaction failed"),
            ),
            (
                Message,
                550,
                "Content rejected",
                deferred(550, false, "Content rejected"),
            ),
            // smtp-sink -A: 550 after DATA, before the body was read.
            (
                Message,
                550,
                "This violates SMTP",
                deferred(550, false, "This violates SMTP"),
            ),
            (
                Data,
                554,
                "5.5.1 No valid recipients",
                deferred(554, false, "5.5.1 No valid recipients"),
            ),
            (
                Message,
                554,
                "5.6.0 Malformed content",
                deferred(554, false, "5.6.0 Malformed content"),
            ),
            (
                Rcpt,
                554,
                "5.6.0 Not for this one",
                bounced(554, false, "5.6.0 Not for this one"),
            ),
            // The sender's problem.
            (
                Rcpt,
                550,
                "5.7.1 Relaying denied",
                halt(550, "5.7.1 Relaying denied"),
            ),
            (
                Message,
                554,
                "5.7.26 Unauthenticated email is not accepted (DMARC)",
                halt(554, "5.7.26 Unauthenticated email is not accepted (DMARC)"),
            ),
            (
                Connect,
                535,
                "5.7.8 Authentication credentials invalid",
                halt(535, "5.7.8 Authentication credentials invalid"),
            ),
            (
                Connect,
                535,
                "Invalid credentials",
                halt(535, "Invalid credentials"),
            ),
            (
                Mail,
                530,
                "Authentication required",
                halt(530, "Authentication required"),
            ),
            (
                Rcpt,
                534,
                "Authentication mechanism is too weak",
                halt(534, "Authentication mechanism is too weak"),
            ),
            (
                Connect,
                538,
                "Encryption required",
                halt(538, "Encryption required"),
            ),
            (Mail, 550, "Sender rejected", halt(550, "Sender rejected")),
            (
                Mail,
                553,
                "5.1.8 Bad sender address domain",
                halt(553, "5.1.8 Bad sender address domain"),
            ),
            (
                Connect,
                554,
                "No SMTP service here",
                halt(554, "No SMTP service here"),
            ),
            // A class that disagrees with the code is not trusted.
            (Rcpt, 550, "4.7.1 odd", bounced(550, true, "4.7.1 odd")),
        ];
        for (stage, code, text, want) in cases {
            assert_eq!(
                &classify(*stage, *code, text),
                want,
                "{stage:?} {code} {text}"
            );
        }
    }

    #[test]
    fn health_tells_the_relay_from_the_donor() {
        use Stage::*;
        let cases: &[(Outcome, Health)] = &[
            (Outcome::Accepted { reply: "ok".into() }, Health::Working),
            (classify(Rcpt, 550, "5.1.1 No such user"), Health::Working),
            (classify(Rcpt, 451, "4.3.0 later"), Health::Unclear),
            (classify(Rcpt, 421, "4.7.0 slow down"), Health::Unclear),
            (classify(Message, 554, "5.7.1 DMARC"), Health::Unclear),
            (
                classify(Rcpt, 500, "5.3.0 Server error"),
                Health::Failing(Fault::Protocol),
            ),
            (
                classify(Data, 554, "5.5.1 No valid recipients"),
                Health::Failing(Fault::System),
            ),
            (
                classify(Data, 550, "Not now"),
                Health::Failing(Fault::System),
            ),
            (
                Outcome::Deferred {
                    code: None,
                    text: "timed out".into(),
                    throttle: false,
                },
                Health::Failing(Fault::Connection),
            ),
            (
                Outcome::Unknown {
                    text: "lost".into(),
                },
                Health::Failing(Fault::LostAfterMessage),
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(&health(outcome), want, "{outcome:?}");
        }
    }
}
