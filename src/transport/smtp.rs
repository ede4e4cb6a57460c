//! One SMTP session to the relay per worker ([`SmtpTransport`]), on a [`Connection`]:
//! connect, STARTTLS or implicit TLS, AUTH, then for each message of a batch either MAIL,
//! RCPT, DATA and the body (pipelined when the server offers it, the next message's MAIL,
//! RCPT and DATA going out with this one's body), or MAIL, RCPT and `BDAT n LAST` with the
//! message in one write when it offers CHUNKING too ([`Transfer`]).
//!
//! Owns the line between "the server cannot have it" ([`Outcome::Deferred`]) and "the server
//! may have it" ([`Outcome::Unknown`]), which is the moment the body starts to go out, and
//! keeping a connection usable after a refusal (RSET) or dropping it. Replies are read by
//! [`super::reply`]. It never decides what happens next, never changes a message (bytes go out
//! as given: dot-stuffed after DATA, as they are after BDAT), and never puts the password in an
//! outcome, error or `Debug`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, MailBodyParameter, MailParameter};

use super::connection::{Connection, Extensions, Reply, SmtpError, TlsSetup};
use super::reply::{Stage, classify};
use super::{
    CLIENT_REFUSED, Envelope, Journal, Outbound, Outcome, SmtpSettings, TlsMode, Transport,
};

/// Why a transaction stopped short of an accepted message.
enum Failure {
    /// A negative reply, or a connection error, at a stage.
    Smtp(Stage, SmtpError),
    /// Like [`Failure::Smtp`] (the first failing reply of a pipelined MAIL, RCPT, DATA), but
    /// the connection cannot be reused: a later reply in the group was a connection error, or
    /// the server answered DATA with a go-ahead after refusing MAIL or RCPT and now waits for a
    /// body that will not come (an RSET would only become body text).
    Unusable(Stage, SmtpError),
    /// The server refused `BDAT n LAST` after accepting MAIL and RCPT: the end-of-message
    /// reply, but RFC 3030 leaves the session's state undefined until an RSET.
    Chunk(SmtpError),
    /// `before_body` refused.
    Aborted(std::io::Error),
}

/// A connection error (no reply) or a 421: no more replies will come.
fn ends_session(e: &SmtpError) -> bool {
    e.code().is_none_or(|code| code == 421)
}

/// A connection idle for longer than this carries its next message the two-round-trip way
/// (DATA), so that its first reply shows the connection is alive before the body leaves. With
/// BDAT the message goes out with MAIL, and a relay (or a NAT or load balancer on the way)
/// that dropped the idle connection would show it only after that: the donor would be
/// [`Outcome::Unknown`] instead of retried on a fresh connection. Servers close idle sessions
/// after minutes (RFC 5321 asks at least 5), middleboxes after tens of seconds; messages sent
/// back to back wait microseconds.
const IDLE_BEFORE_CHUNKING: Duration = Duration::from_secs(1);

/// How a connection carries a message: chosen per connection from what the relay offers and
/// `[smtp] chunking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// MAIL, RCPT and `BDAT <size> LAST` followed by the message, in one write (RFC 3030 with
    /// RFC 2920), then their three replies: one round trip per message.
    Chunked,
    /// MAIL, RCPT and DATA in one write (RFC 2920), then the dot-stuffed body: two round trips.
    /// Within a batch the next message's MAIL, RCPT and DATA follow the body in its write
    /// (RFC 2920 lets the message be the first "command" of a group), so every message after
    /// a batch's first costs one round trip and one wait for replies.
    Pipelined,
    /// Each command waits for its reply: four round trips.
    LockStep,
}

impl Transfer {
    /// The transfer for a relay offering `ext`; `chunking` is `[smtp] chunking`. BDAT only
    /// with PIPELINING: without it the three commands would each wait for a reply.
    pub fn of(ext: &Extensions, chunking: bool) -> Transfer {
        match (ext.pipelining, ext.chunking && chunking) {
            (true, true) => Transfer::Chunked,
            (true, false) => Transfer::Pipelined,
            (false, _) => Transfer::LockStep,
        }
    }

    /// For the operator, e.g. in `campaign check --smtp`.
    pub fn describe(self) -> &'static str {
        match self {
            Transfer::Chunked => {
                "MAIL, RCPT and BDAT with the message in one write (CHUNKING): one round trip per message"
            }
            Transfer::Pipelined => {
                "MAIL, RCPT and DATA in one write, then the message with the next one's MAIL, RCPT and DATA (PIPELINING): one round trip per message after a batch's first"
            }
            Transfer::LockStep => "one command at a time: four round trips per message",
        }
    }
}

/// The message body, dot-stuffed (RFC 5321 §4.5.2), followed by the end-of-data marker.
///
/// Body and final dot leave in one write: a small second write for the dot would wait for the
/// server's delayed ACK (Nagle's algorithm; the stream leaves TCP_NODELAY off): 40 ms per
/// message, ~180 msg/s over 8 connections to a local sink instead of thousands.
///
/// The body must not end in CRLF (that CRLF is the marker's). A line is taken to start after
/// any LF, not only CRLF, so a stray bare LF followed by a dot can never end the data early
/// on a lenient server.
struct BodyAndDot<'a>(&'a [u8]);

impl BodyAndDot<'_> {
    /// The bytes to write, into `out` (emptied first): one buffer per connection serves every
    /// message, where a fresh one per message cost an allocation and a free of its size.
    fn write_into(&self, out: &mut Vec<u8>) {
        let mut rest = self.0;
        out.clear();
        out.reserve(rest.len() + rest.len() / 64 + 8);
        if rest.starts_with(b".") {
            out.push(b'.');
        }
        // memmem's vectorised search; a general-purpose one for "\n." over every body was
        // 2.7% of a send's CPU.
        while let Some(i) = memchr::memmem::find(rest, b"\n.") {
            out.extend_from_slice(&rest[..i + 2]);
            out.push(b'.');
            rest = &rest[i + 2..];
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n.\r\n");
    }
}

/// `MAIL FROM`, `RCPT TO` and `DATA` as one group (RFC 2920), so they leave in one write;
/// their three replies are read after it.
struct CommandGroup<'a>(&'a Mail, &'a Rcpt);

impl fmt::Display for CommandGroup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.0, self.1, Data)
    }
}

/// Writes into `out` (emptied first) `MAIL FROM`, `RCPT TO`, `BDAT <size> LAST` and the
/// message: one write, so one round trip, and the body after its command in the same segment
/// (see [`BodyAndDot`] on Nagle). The message goes as it is, with no dot-stuffing and no end
/// marker (RFC 3030); `<size>` counts its bytes exactly. A message not ending in CRLF gets one,
/// as after DATA, so both deliver the same bytes.
fn chunked_wire(out: &mut Vec<u8>, mail: &Mail, rcpt: &Rcpt, message: &[u8]) {
    use std::io::Write as _;
    let tail: &[u8] = if message.ends_with(b"\r\n") {
        b""
    } else {
        b"\r\n"
    };
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{mail}{rcpt}BDAT {} LAST\r\n",
        message.len() + tail.len()
    );
    out.extend_from_slice(message);
    out.extend_from_slice(tail);
}

/// One SMTP session to the relay, owned by one worker thread.
///
/// Connects lazily (TLS per the settings, AUTH if configured), keeps the connection across
/// messages, and reconnects after `reconnect_after` messages, after any connection error, or
/// when the server closed it (421). After a rejected MAIL, RCPT or DATA it sends RSET and keeps
/// the connection (lettre's high-level `send` would QUIT, costing a reconnect per bad
/// address). One message per transaction, one recipient per message. When the server offers
/// PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one write and their replies are read
/// together: two round trips per message instead of four; with CHUNKING (RFC 3030) too, BDAT
/// takes the message along in the same write: one round trip (see [`Transfer`]).
pub struct SmtpTransport {
    settings: Arc<SmtpSettings>,
    /// `settings.describe()`, computed once for messages.
    relay: String,
    client_id: ClientId,
    /// Built on first use: building reads the root store, and a failure is the run's.
    tls: Option<TlsSetup>,
    conn: Option<Connection>,
    /// Transactions started on `conn`.
    used: usize,
    /// The next message's MAIL, RCPT and DATA went out after the last body; their replies
    /// are unread. The server may be waiting for that message's body, so the connection can
    /// only carry it, or be dropped (a QUIT or RSET would become message text).
    primed: bool,
    /// The bytes of a chunked transaction, or of a body and its end marker, kept to spare an
    /// allocation per message.
    wire: Vec<u8>,
}

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("relay", &self.relay)
            .field("conn", &self.conn)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl SmtpTransport {
    /// A transport that will connect to the relay in `settings` on the first send.
    pub fn new(settings: Arc<SmtpSettings>) -> Self {
        SmtpTransport {
            relay: settings.describe(),
            client_id: ClientId::Domain(settings.hello_name.clone()),
            settings,
            tls: None,
            conn: None,
            used: 0,
            primed: false,
            wire: Vec::new(),
        }
    }

    /// Opens the session now if none is open (connect, TLS, AUTH), so a run can check the
    /// relay and credentials before its first message. `Err` is what the first `send` would
    /// have returned: [`Outcome::Deferred`] or [`Outcome::Halt`].
    pub fn connect_now(&mut self) -> Result<(), Outcome> {
        if self.conn.as_ref().is_some_and(|c| !c.has_broken()) {
            return Ok(());
        }
        self.connect()
    }

    /// Drops the connection without QUIT: after a network error there is nobody to say
    /// goodbye to, and mid-DATA a QUIT would only become body text.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.used = 0;
        self.primed = false;
    }

    /// Whether the open connection's relay refused EHLO and was greeted with HELO (no
    /// extensions: no PIPELINING, SMTPUTF8, 8BITMIME or STARTTLS); `None` with none open.
    pub fn helo_only(&self) -> Option<bool> {
        self.conn.as_ref().map(|c| c.extensions().helo_only)
    }

    fn tls_parameters(&mut self) -> Result<TlsSetup, Outcome> {
        if let Some(p) = &self.tls {
            return Ok(p.clone());
        }
        let p = TlsSetup::new(
            &self.settings.host,
            &self.settings.ca_certificates,
            !self.settings.skip_certificate_check,
        )
        .map_err(|e| Outcome::Halt {
            code: None,
            text: format!("cannot set up TLS for {}: {e}", self.relay),
        })?;
        self.tls = Some(p.clone());
        Ok(p)
    }

    /// Maps a failure while setting up the session to an outcome. `doing` completes "could
    /// not ...": `connect to`, `start TLS with`, `log in as "me" to`.
    fn setup_failure(&self, doing: &str, err: &SmtpError, tls_phase: bool) -> Outcome {
        let relay = &self.relay;
        if let Some(code) = err.code() {
            return match classify(Stage::Connect, code, &err.text()) {
                // The code stays in its field only: callers print it before the text.
                Outcome::Halt { code, text } => Outcome::Halt {
                    code,
                    text: format!("could not {doing} {relay}: {text}"),
                },
                other => other,
            };
        }
        if tls_phase && err.is_tls() {
            return Outcome::Halt {
                code: None,
                text: format!(
                    "could not {doing} {relay}: {err}; check that the host name matches the relay's certificate, that the tls mode matches the port (465 is implicit TLS, 587 STARTTLS), and for a relay with an internal certificate authority, [smtp] ca_file"
                ),
            };
        }
        let text = format!("could not {doing} {relay}: {err}");
        if let SmtpError::Garbled(_) = err {
            // Whatever answers does not speak SMTP: retrying will not change it.
            Outcome::Halt { code: None, text }
        } else {
            Outcome::Deferred {
                code: None,
                text,
                throttle: false,
            }
        }
    }

    /// Opens, encrypts and authenticates a new session.
    fn connect(&mut self) -> Result<(), Outcome> {
        self.drop_connection();
        let settings = Arc::clone(&self.settings);
        let tls = match settings.tls {
            TlsMode::None => None,
            TlsMode::StartTls | TlsMode::Implicit => Some(self.tls_parameters()?),
        };
        let implicit = tls.as_ref().filter(|_| settings.tls == TlsMode::Implicit);
        let mut conn = Connection::connect(
            &settings.host,
            settings.port,
            settings.timeout,
            implicit,
            &self.client_id,
        )
        .map_err(|e| self.setup_failure("connect to", &e, implicit.is_some()))?;

        if settings.tls == TlsMode::StartTls
            && let Some(tls) = &tls
        {
            if !conn.extensions().starttls {
                conn.abort();
                return Err(Outcome::Halt {
                    code: None,
                    text: format!(
                        "{} does not offer STARTTLS; refusing to send unencrypted. Use tls = \"tls\" if it listens for implicit TLS, or tls = \"none\" for a relay on this machine",
                        self.relay
                    ),
                });
            }
            conn.starttls(tls, &self.client_id)
                .map_err(|e| self.setup_failure("start TLS with", &e, true))?;
        }

        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            match conn.auth(user, password) {
                None => {
                    conn.abort();
                    return Err(Outcome::Halt {
                        code: None,
                        text: format!(
                            "{} does not offer AUTH PLAIN or LOGIN after EHLO, so {user:?} cannot log in; check the port and tls mode (many relays offer AUTH only over TLS)",
                            self.relay
                        ),
                    });
                }
                Some(Err(e)) => {
                    return Err(self.setup_failure(&format!("log in as {user:?} to"), &e, false));
                }
                Some(Ok(())) => {}
            }
        }
        self.conn = Some(conn);
        self.used = 0;
        Ok(())
    }

    /// Runs one message's transaction on the open connection as [`Transfer::of`] says: MAIL,
    /// RCPT and BDAT with the message in one write; or MAIL, RCPT and DATA as one pipelined
    /// group, or in lock-step, then the body. A chunking connection idle for longer than
    /// [`IDLE_BEFORE_CHUNKING`] sends this one message with DATA. When `primed`, this
    /// message's pipelined group already went out with the previous body, and only its
    /// replies are read; `ahead` is the next message's group, to go out with this body.
    #[allow(clippy::too_many_arguments)]
    fn transaction(
        conn: &mut Connection,
        chunking: bool,
        wire: &mut Vec<u8>,
        envelope: &Envelope,
        params: Vec<MailParameter>,
        message: &[u8],
        primed: bool,
        ahead: Option<&CommandGroup<'_>>,
        before_body: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> Result<Reply, Failure> {
        let transfer = Transfer::of(conn.extensions(), chunking);
        if primed {
            Self::envelope_replies(conn)?;
        } else {
            let mail = Mail::new(Some(envelope.from().clone()), params);
            let rcpt = Rcpt::new(envelope.to().clone(), Vec::new());
            if transfer == Transfer::Chunked && conn.idle() < IDLE_BEFORE_CHUNKING {
                chunked_wire(wire, &mail, &rcpt, message);
                return Self::chunked(conn, wire, before_body);
            }
            if transfer != Transfer::LockStep {
                conn.write(CommandGroup(&mail, &rcpt).to_string().as_bytes())
                    .map_err(|e| Failure::Smtp(Stage::Mail, e))?;
                Self::envelope_replies(conn)?;
            } else {
                conn.command(mail)
                    .map_err(|e| Failure::Smtp(Stage::Mail, e))?;
                conn.command(rcpt)
                    .map_err(|e| Failure::Smtp(Stage::Rcpt, e))?;
                conn.command(Data)
                    .map_err(|e| Failure::Smtp(Stage::Data, e))?;
            }
        }
        // The end-of-data marker brings its own CRLF; a message already ending in one would
        // otherwise gain an empty last line.
        let body = message.strip_suffix(b"\r\n").unwrap_or(message);
        before_body().map_err(Failure::Aborted)?;
        BodyAndDot(body).write_into(wire);
        if let Some(group) = ahead {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(wire, "{group}");
        }
        conn.write(wire)
            .and_then(|()| conn.read_reply())
            .map_err(|e| Failure::Smtp(Stage::Message, e))
    }

    /// Reads the three replies to a pipelined MAIL, RCPT and DATA (RFC 2920), written in one
    /// go, in order. The first negative reply decides, at its stage, as in lock-step: a refused MAIL
    /// or RCPT makes the server refuse DATA too (503 or 554), and the replies after it are
    /// read only to keep the connection in step. Reading stops at a connection error or a
    /// 421 (the server is closing); if one comes after the first failure, or DATA was
    /// accepted although MAIL or RCPT was not, the connection is not reused.
    fn envelope_replies(conn: &mut Connection) -> Result<(), Failure> {
        let mut first_failure: Option<(Stage, SmtpError)> = None;
        for stage in [Stage::Mail, Stage::Rcpt, Stage::Data] {
            match (conn.read_reply(), first_failure.take()) {
                (Ok(_), None) => {}
                // A go-ahead for DATA after a refused MAIL or RCPT: the server now waits for
                // a body. Only a new connection gets out of that.
                (Ok(_), Some((first, e))) if stage == Stage::Data => {
                    return Err(Failure::Unusable(first, e));
                }
                (Ok(_), Some(first)) => first_failure = Some(first),
                (Err(e), None) if ends_session(&e) => return Err(Failure::Smtp(stage, e)),
                (Err(e), None) => first_failure = Some((stage, e)),
                (Err(e), Some((first, first_e))) if ends_session(&e) => {
                    return Err(Failure::Unusable(first, first_e));
                }
                (Err(_), Some(first)) => first_failure = Some(first),
            }
        }
        match first_failure {
            Some((stage, e)) => Err(Failure::Smtp(stage, e)),
            None => Ok(()),
        }
    }

    /// Writes a chunked transaction (`wire`, from [`chunked_wire`]) and reads its three
    /// replies: MAIL, RCPT, BDAT.
    ///
    /// `before_body` comes before the write: the message leaves with the commands. From then
    /// on the server may have it, so a connection that fails before a refusal makes the
    /// outcome [`Outcome::Unknown`] (as a failure after the dot does), never a retry. A refused
    /// MAIL or RCPT decides, at its stage, as in a pipelined group: the donor is not a
    /// recipient, so the message cannot reach them, and the server answers BDAT with 503 or 554
    /// after reading the chunk (RFC 3030); that reply is read only to stay in step. A 421
    /// before any refusal means the server is closing without taking the message. Only a 250 to
    /// BDAT LAST is an acceptance: any other positive reply is not one RFC 3030 allows, and is
    /// treated as a lost connection (Unknown), never as sent.
    fn chunked(
        conn: &mut Connection,
        wire: &[u8],
        before_body: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> Result<Reply, Failure> {
        before_body().map_err(Failure::Aborted)?;
        conn.write(wire)
            .map_err(|e| Failure::Smtp(Stage::Message, e))?;
        conn.ack_promptly();
        let mut refused: Option<(Stage, SmtpError)> = None;
        for stage in [Stage::Mail, Stage::Rcpt] {
            match (conn.read_reply(), refused.take()) {
                (Ok(_), None) => {}
                (Ok(_), Some(first)) => refused = Some(first),
                // No reply at all: the server may have read everything and queued it.
                (Err(e), None) if e.code().is_none() => {
                    return Err(Failure::Smtp(Stage::Message, e));
                }
                (Err(e), None) if e.code() == Some(421) => return Err(Failure::Smtp(stage, e)),
                (Err(e), None) => refused = Some((stage, e)),
                (Err(e), Some((first, first_e))) if ends_session(&e) => {
                    return Err(Failure::Unusable(first, first_e));
                }
                (Err(_), Some(first)) => refused = Some(first),
            }
        }
        match (conn.read_reply(), refused) {
            (Ok(reply), None) if reply.code == 250 => Ok(reply),
            (Ok(reply), None) => {
                conn.abort();
                Err(Failure::Smtp(
                    Stage::Message,
                    SmtpError::Garbled(format!(
                        "{} {} after BDAT LAST, where only 250 means accepted",
                        reply.code,
                        reply.text()
                    )),
                ))
            }
            // The server took a message without the refused MAIL or RCPT: it does not follow
            // the protocol, so the connection is not reused.
            (Ok(_), Some((first, e))) => Err(Failure::Unusable(first, e)),
            (Err(e), None) if e.code().is_none() => Err(Failure::Smtp(Stage::Message, e)),
            (Err(e), None) => Err(Failure::Chunk(e)),
            (Err(e), Some((first, first_e))) if ends_session(&e) => {
                Err(Failure::Unusable(first, first_e))
            }
            (Err(_), Some((stage, e))) => Err(Failure::Smtp(stage, e)),
        }
    }

    /// Turns a failed transaction into an outcome, leaving the connection clean (RSET, when
    /// `reset`) or gone.
    fn failed(&mut self, stage: Stage, err: &SmtpError, to: &str, reset: bool) -> Outcome {
        let Some(code) = err.code() else {
            // No reply: the connection is broken or timed out.
            self.drop_connection();
            return if stage == Stage::Message {
                Outcome::Unknown {
                    text: format!(
                        "the connection to {} failed after the message was sent, before the server confirmed it (it may have been delivered): {err}",
                        self.relay
                    ),
                }
            } else {
                Outcome::Deferred {
                    code: None,
                    text: format!(
                        "the connection to {} failed at {} (the message was not sent): {err}",
                        self.relay,
                        stage.command()
                    ),
                    throttle: false,
                }
            };
        };
        let text = err.text();
        if code == 421 {
            // The server is closing the connection.
            self.drop_connection();
        } else if reset
            && let Some(conn) = &mut self.conn
            && conn.command(Rset).is_err()
        {
            self.drop_connection();
        }
        match classify(stage, code, &text) {
            Outcome::Halt { code, text } => Outcome::Halt {
                code,
                text: format!(
                    "{} refused {} (sending to <{to}>): {text}",
                    self.relay,
                    stage.command(),
                ),
            },
            other => other,
        }
    }
}

/// The MAIL FROM parameters a message needs on a connection offering `ext`: SMTPUTF8 for an
/// address with non-ASCII characters, BODY=8BITMIME for 8-bit content. `Err` is the outcome
/// when the relay lacks what the message needs; `relay` names it there.
fn mail_parameters(
    ext: &Extensions,
    relay: &str,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Vec<MailParameter>, Outcome> {
    let from: &str = envelope.from().as_ref();
    let to: &str = envelope.to().as_ref();
    let mut params = Vec::new();
    if !from.is_ascii() || !to.is_ascii() {
        if !ext.smtputf8 {
            // Not the donor's fault, nor for good: a relay that offers SMTPUTF8 takes the
            // address, so the donor waits for one (deferred, not failed).
            return Err(if from.is_ascii() {
                Outcome::Deferred {
                    code: Some(CLIENT_REFUSED),
                    text: format!(
                        "the address {to:?} has non-ASCII characters before the @, and {relay} does not offer SMTPUTF8: a run through a relay that does will send it"
                    ),
                    throttle: false,
                }
            } else {
                Outcome::Halt {
                    code: None,
                    text: format!(
                        "the envelope sender {from:?} has non-ASCII characters and {relay} does not offer SMTPUTF8"
                    ),
                }
            });
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !ext.eight_bit_mime {
            return Err(Outcome::Bounced {
                code: CLIENT_REFUSED,
                text: format!("the message has 8-bit content and {relay} does not offer 8BITMIME"),
                suppress: false,
            });
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(params)
}

impl SmtpTransport {
    /// Delivers one message of a batch; `before_body` is the journal's `transmitting`.
    /// `next` is the batch's next message when it may start at once: on a pipelining
    /// connection its MAIL, RCPT and DATA then go out with this body.
    fn send_message(
        &mut self,
        m: &Outbound<'_>,
        next: Option<&Outbound<'_>>,
        before_body: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> Outcome {
        let to: &str = m.envelope.to().as_ref();
        if self.used >= self.settings.reconnect_after {
            self.close();
        }
        // A reused connection may have been closed by the server while idle (rate limits and
        // retry waits leave gaps); that shows only when MAIL fails, before anything of the
        // message was sent, so one fresh connection is tried before deferring.
        let mut retried = false;
        loop {
            if self.conn.as_ref().is_some_and(|c| c.has_broken()) {
                self.drop_connection();
            }
            let reused = self.conn.is_some();
            if self.conn.is_none()
                && let Err(outcome) = self.connect()
            {
                return outcome;
            }
            let Some(conn) = self.conn.as_mut() else {
                unreachable!("connect() leaves a connection or returns an error");
            };
            // A message sent ahead passed this check on this connection when it went, and
            // its MAIL is out: checking its every byte again would be waste.
            let params = if self.primed {
                Vec::new()
            } else {
                match mail_parameters(conn.extensions(), &self.relay, m.envelope, m.message) {
                    Ok(params) => params,
                    Err(outcome) => return outcome,
                }
            };
            self.used += 1;
            // The next message goes ahead only on a connection that will carry it.
            let ahead = next
                .filter(|_| {
                    Transfer::of(conn.extensions(), self.settings.chunking) == Transfer::Pipelined
                        && self.used < self.settings.reconnect_after
                })
                .and_then(|n| {
                    let params =
                        mail_parameters(conn.extensions(), &self.relay, n.envelope, n.message)
                            .ok()?;
                    Some((
                        Mail::new(Some(n.envelope.from().clone()), params),
                        Rcpt::new(n.envelope.to().clone(), Vec::new()),
                    ))
                });
            let group = ahead.as_ref().map(|(mail, rcpt)| CommandGroup(mail, rcpt));
            let primed = std::mem::replace(&mut self.primed, false);
            let result = Self::transaction(
                conn,
                self.settings.chunking,
                &mut self.wire,
                m.envelope,
                params,
                m.message,
                primed,
                group.as_ref(),
                before_body,
            );
            // The group went out with the body once a reply to it came, whatever the reply;
            // every path that drops the connection below forgets it again.
            self.primed = group.is_some()
                && match &result {
                    Ok(_) => true,
                    Err(Failure::Smtp(Stage::Message, e)) => e.code().is_some(),
                    Err(_) => false,
                };
            return match result {
                Ok(response) => Outcome::Accepted {
                    reply: response.text(),
                },
                Err(Failure::Aborted(e)) => {
                    self.drop_connection();
                    Outcome::Halt {
                        code: None,
                        text: format!(
                            "stopped before sending the message to <{to}> (not sent): {e}"
                        ),
                    }
                }
                Err(Failure::Smtp(Stage::Mail, e))
                    if reused && !retried && e.code().is_none_or(|c| c == 421) =>
                {
                    self.drop_connection();
                    retried = true;
                    continue;
                }
                Err(Failure::Smtp(stage, e)) => self.failed(stage, &e, to, stage != Stage::Message),
                Err(Failure::Chunk(e)) => self.failed(Stage::Message, &e, to, true),
                Err(Failure::Unusable(stage, e)) => {
                    // No RSET: the outcome is the first failure's, the connection is gone.
                    self.drop_connection();
                    self.failed(stage, &e, to, false)
                }
            };
        }
    }
}

impl Transport for SmtpTransport {
    fn send_batch(&mut self, batch: &[Outbound<'_>], journal: &mut dyn Journal) -> usize {
        for (i, m) in batch.iter().enumerate() {
            if !journal.proceed(i) {
                if self.primed {
                    // This message's commands went ahead; the server waits for its body.
                    self.drop_connection();
                }
                return i;
            }
            let next = batch.get(i + 1).filter(|_| journal.may_start_now(i + 1));
            let outcome = self.send_message(m, next, &mut || journal.transmitting(i));
            // The next message's replies came with this one's: its transmit record follows
            // at once, and may share a write with this outcome.
            if self.primed && self.conn.as_ref().is_some_and(|c| c.replies_waiting(3)) {
                journal.outcome_before_next(i, outcome);
            } else {
                journal.outcome(i, outcome);
            }
        }
        batch.len()
    }

    fn close(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && !conn.has_broken()
            && !self.primed
        {
            // A failed QUIT changes nothing: the connection is dropped either way.
            conn.quit();
        }
        self.used = 0;
        self.primed = false;
    }
}

/// Why the relay cannot be used, found before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The relay refused the sender or the login: fix the settings, then run again.
    #[error("{0}")]
    Refused(String),
    /// The relay could not be reached: run again when it is up.
    #[error("{0}")]
    Unreachable(String),
}

/// What a probe of the relay found: what it offers, and how the session went.
#[derive(Debug, Clone)]
pub struct RelayReport {
    /// The relay, as the settings describe it.
    pub relay: String,
    /// What it offered when greeted (after STARTTLS, when used).
    pub extensions: super::connection::Extensions,
    /// The session was encrypted, the certificate verified (unless the check is skipped).
    pub encrypted: bool,
    /// A login was made and accepted.
    pub logged_in: bool,
    /// The relay's certificate, when the session is encrypted.
    pub certificate: Option<super::certificate::CertificateInfo>,
}

impl RelayReport {
    /// What the operator should hear once, before a run: a relay greeted with HELO.
    pub fn note(&self) -> Option<String> {
        self.extensions.helo_only.then(|| {
            format!(
                "{} refused EHLO, so it is greeted with HELO (RFC 5321 4.1.4): no PIPELINING, SMTPUTF8 or 8BITMIME, so donors whose address needs SMTPUTF8 wait for another relay",
                self.relay
            )
        })
    }
}

/// Opens one session (connect, TLS, AUTH) and closes it, so that a typo in the host or a
/// wrong password stops a run with one clear message instead of deferring every donor; also
/// `campaign check --smtp`.
pub fn probe(settings: &Arc<SmtpSettings>) -> Result<RelayReport, ProbeError> {
    let mut t = SmtpTransport::new(Arc::clone(settings));
    match t.connect_now() {
        Ok(()) => {
            let report = t.conn.as_ref().map(|c| RelayReport {
                relay: settings.describe(),
                extensions: c.extensions().clone(),
                encrypted: c.encrypted(),
                logged_in: settings.username.is_some(),
                certificate: c.certificate(),
            });
            t.close();
            report.ok_or_else(|| {
                ProbeError::Unreachable(format!("{}: no session", settings.describe()))
            })
        }
        // A reply refused the sender or the login; without one, the settings do not fit the
        // relay (a TLS mode that does not match the port, a certificate not trusted).
        Err(Outcome::Halt {
            code: Some(code),
            text,
        }) => Err(ProbeError::Refused(format!(
            "{} refused the sender before anything was sent: {code} {text}",
            settings.describe()
        ))),
        Err(Outcome::Halt { code: None, text }) => Err(ProbeError::Refused(format!(
            "cannot use the relay {} (nothing was sent): {text}",
            settings.describe()
        ))),
        Err(other) => Err(ProbeError::Unreachable(format!(
            "cannot reach the relay {}: {}; nothing was sent, run again when it is up",
            settings.describe(),
            match other {
                Outcome::Deferred { text, .. } | Outcome::Unknown { text } => text,
                o => format!("{o:?}"),
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_one_group() {
        let mail = Mail::new(Some("a@b.example".parse().unwrap()), Vec::new());
        let rcpt = Rcpt::new("c@d.example".parse().unwrap(), Vec::new());
        assert_eq!(
            CommandGroup(&mail, &rcpt).to_string(),
            "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
        );
    }

    #[test]
    fn chunking_needs_pipelining_and_the_setting() {
        let ext = |pipelining, chunking| Extensions {
            pipelining,
            chunking,
            ..Extensions::default()
        };
        assert_eq!(Transfer::of(&ext(true, true), true), Transfer::Chunked);
        assert_eq!(Transfer::of(&ext(true, true), false), Transfer::Pipelined);
        assert_eq!(Transfer::of(&ext(true, false), true), Transfer::Pipelined);
        assert_eq!(Transfer::of(&ext(false, true), true), Transfer::LockStep);
    }

    #[test]
    fn chunk_is_sized_exactly_and_not_stuffed() {
        let mail = Mail::new(Some("a@b.example".parse().unwrap()), Vec::new());
        let rcpt = Rcpt::new("c@d.example".parse().unwrap(), Vec::new());
        let mut wire = b"left over".to_vec();
        chunked_wire(&mut wire, &mail, &rcpt, b".x\r\n.\r\n");
        assert_eq!(
            String::from_utf8(wire.clone()).unwrap(),
            "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 7 LAST\r\n.x\r\n.\r\n"
        );
        chunked_wire(&mut wire, &mail, &rcpt, b"");
        assert!(wire.ends_with(b"BDAT 2 LAST\r\n\r\n"));
    }

    #[test]
    fn body_is_dot_stuffed_and_terminated() {
        // One buffer for every case, as a connection uses it: each write starts it afresh.
        let mut bytes = Vec::new();
        for (body, wire) in [
            ("", "\r\n.\r\n"),
            (".", "..\r\n.\r\n"),
            ("a.b\r\nc.", "a.b\r\nc.\r\n.\r\n"),
            (".a\r\n.\r\n..b\r\nc", "..a\r\n..\r\n...b\r\nc\r\n.\r\n"),
            ("a\r\n.", "a\r\n..\r\n.\r\n"),
            ("bare\n.lf", "bare\n..lf\r\n.\r\n"),
        ] {
            BodyAndDot(body.as_bytes()).write_into(&mut bytes);
            assert_eq!(String::from_utf8_lossy(&bytes), wire, "{body:?}");
        }
    }
}
