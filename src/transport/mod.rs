//! Handing pre-built messages to a relay, and saying what happened to each in terms the send
//! loop can act on.
//!
//! The seam between the send loop and the network is [`Transport`] (lettre's
//! `send_raw(&Envelope, &[u8])` is the model): the loop hands it a batch of [`Outbound`]
//! messages, each with a typed [`Envelope`] parsed once when the message was prepared, and a
//! [`Journal`] that the transport calls before each message and right before each body leaves,
//! and tells each message's [`Outcome`], in order. A transport that pipelines across messages,
//! or pulls work from elsewhere, implements the same trait; the loop is testable with a fake.
//!
//! The folder holds the trait with its envelope and journal (here), the reading of replies
//! ([`reply`]), the SMTP session ([`smtp`]) on its connection ([`connection`]: the stream,
//! TLS, the greeting, commands and replies), the relay's certificate as described to the
//! operator ([`certificate`]) and the relay's settings ([`settings`]).
//!
//! Nothing here decides what to do next (retry, suppress, stop: the send loop does, from the
//! outcome), builds or changes messages, records anything, or puts a password in an outcome,
//! error or `Debug`.

pub mod certificate;
pub mod connection;
pub mod reply;
pub mod settings;
pub mod smtp;

use lettre::Address;

pub use reply::{Stage, classify, enhanced_code};
pub use settings::{SmtpSettings, TlsMode};
pub use smtp::SmtpTransport;

/// The `code` of an outcome this client decided without asking the server: an
/// [`Outcome::Bounced`] for an address SMTP cannot carry or 8-bit content a relay without
/// 8BITMIME cannot take, an [`Outcome::Deferred`] for an address that needs SMTPUTF8 from a
/// relay without it.
pub const CLIENT_REFUSED: u16 = 0;

/// What happened to one message, by what the server said (RFC 5321 / RFC 3463).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx after the final dot. `reply` is the server's text (carries its queue id).
    Accepted {
        /// The reply text without the code, e.g. `2.0.0 Ok: queued as 4Fq1`.
        reply: String,
    },
    /// Try again later: a 4xx at any stage, or a connection failure or timeout before the
    /// final dot was sent (the server cannot have the message).
    Deferred {
        /// The reply code; `None` for a connection failure.
        code: Option<u16>,
        /// The server's text, or what went wrong with the connection.
        text: String,
        /// It looks like rate limiting: slow down, not just retry.
        throttle: bool,
    },
    /// A permanent failure that is this donor's: a 5xx on RCPT, DATA or after the dot that is
    /// not the sender's problem.
    Bounced {
        /// The reply code; [`CLIENT_REFUSED`] when refused here without asking the server.
        code: u16,
        /// The server's text, or why it was refused here.
        text: String,
        /// The address itself is bad (enhanced 5.1.x or 5.2.1; or, without an enhanced
        /// code, 550/551/553 on RCPT): never mail it again.
        suppress: bool,
    },
    /// The sender's problem: stop the whole run. 5.7.x anywhere (policy, authentication,
    /// DMARC, reputation), 5xx on MAIL FROM or at connection setup, 530/534/535/538, a TLS
    /// failure, or `before_body` refusing. Not a refused or dropped connection to the relay:
    /// that is [`Outcome::Deferred`].
    Halt {
        /// The reply code; `None` when no reply caused it.
        code: Option<u16>,
        /// What went wrong, with enough context to fix it.
        text: String,
    },
    /// The connection broke or timed out after the body was sent and before a reply: the
    /// server may have queued it.
    Unknown {
        /// What went wrong.
        text: String,
    },
}

/// Who a message goes from and to (SMTP's MAIL FROM and RCPT TO), checked once when the
/// message is prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    from: Address,
    to: Address,
}

impl Envelope {
    /// An envelope from checked addresses.
    pub fn new(from: Address, to: Address) -> Envelope {
        Envelope { from, to }
    }

    /// Parses both addresses. `Err` is the outcome sending would have: [`Outcome::Halt`] for
    /// an unusable sender (every message would fail alike), [`Outcome::Bounced`] with
    /// [`CLIENT_REFUSED`] for a recipient SMTP cannot carry.
    pub fn parse(from: &str, to: &str) -> Result<Envelope, Outcome> {
        let from = from.parse().map_err(|e| Outcome::Halt {
            code: None,
            text: format!("the envelope sender {from:?} is not a usable address: {e}"),
        })?;
        let to = Envelope::recipient(to)?;
        Ok(Envelope { from, to })
    }

    /// Parses a recipient address; `Err` is [`Outcome::Bounced`] with [`CLIENT_REFUSED`].
    pub fn recipient(to: &str) -> Result<Address, Outcome> {
        to.parse().map_err(|e| Outcome::Bounced {
            code: CLIENT_REFUSED,
            text: format!("the address {to:?} cannot be used in SMTP: {e}"),
            suppress: false,
        })
    }

    /// The envelope sender.
    pub fn from(&self) -> &Address {
        &self.from
    }

    /// The one recipient.
    pub fn to(&self) -> &Address {
        &self.to
    }
}

/// One message of a batch: its envelope and its RFC 5322 bytes (CRLF line ends).
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// Sender and recipient.
    pub envelope: &'a Envelope,
    /// The whole message, sent as given (dot-stuffed after DATA, as it is after BDAT).
    pub message: &'a [u8],
}

/// What a transport tells the caller while it sends a batch; `i` is the message's index in
/// the batch.
pub trait Journal {
    /// Message `i` is next. `false` stops the batch before it: neither it nor any later
    /// message of the batch is started. This is where the caller paces and stops.
    fn proceed(&mut self, i: usize) -> bool;

    /// Whether message `i` could start now without waiting (no pacing delay, no pause, no
    /// stop). A transport may then send its first commands ahead, with message `i - 1`'s
    /// body; [`Journal::proceed`] is still asked before `i`'s own body, and a `false` there
    /// abandons those commands. Changes nothing. `false`, the default, keeps one transaction
    /// on the wire at a time.
    fn may_start_now(&self, _i: usize) -> bool {
        false
    }

    /// Message `i`'s body is about to leave (with BDAT, its whole transaction: the body goes
    /// in the same write as MAIL): from now on its outcome may be [`Outcome::Unknown`], so
    /// this is where the caller records "in flight". If it fails, the body is not sent (the
    /// transaction is abandoned without the final dot, or never written, so the server has
    /// nothing) and the outcome is [`Outcome::Halt`] with the error.
    fn transmitting(&mut self, i: usize) -> std::io::Result<()>;

    /// Message `i`'s outcome, as soon as it is known: exactly once for every message started,
    /// in batch order.
    fn outcome(&mut self, i: usize, outcome: Outcome);

    /// Message `i`'s outcome, told as [`Journal::outcome`] is, when the transport holds
    /// message `i + 1`'s replies already (its commands went ahead and were accepted): its
    /// [`Journal::transmitting`] comes next without waiting for the relay, unless
    /// [`Journal::proceed`] stops it. The journal may keep the record to write it with that
    /// one, provided it writes it before it waits for anything itself.
    fn outcome_before_next(&mut self, i: usize, outcome: Outcome) {
        self.outcome(i, outcome);
    }
}

/// The seam between the send loop and the network.
pub trait Transport: Send {
    /// Sends `batch` in order, asking `journal` before each message and each body, and
    /// telling it each outcome. Returns how many messages were started: the batch's first
    /// `n`; the rest were never offered to the relay.
    fn send_batch(&mut self, batch: &[Outbound<'_>], journal: &mut dyn Journal) -> usize;

    /// Ends the session politely (QUIT). Sending again afterwards opens a new connection.
    fn close(&mut self);
}

/// Sends one message through `transport`: for a proof, a probe or a test. `before_body` is
/// the journal's [`Journal::transmitting`].
pub fn send_one(
    transport: &mut dyn Transport,
    from: &str,
    to: &str,
    message: &[u8],
    before_body: &mut dyn FnMut() -> std::io::Result<()>,
) -> Outcome {
    struct One<'a> {
        before_body: &'a mut dyn FnMut() -> std::io::Result<()>,
        outcome: Option<Outcome>,
    }
    impl Journal for One<'_> {
        fn proceed(&mut self, _: usize) -> bool {
            true
        }
        fn transmitting(&mut self, _: usize) -> std::io::Result<()> {
            (self.before_body)()
        }
        fn outcome(&mut self, _: usize, outcome: Outcome) {
            self.outcome = Some(outcome);
        }
    }
    let envelope = match Envelope::parse(from, to) {
        Ok(e) => e,
        Err(outcome) => return outcome,
    };
    let mut journal = One {
        before_body,
        outcome: None,
    };
    transport.send_batch(
        &[Outbound {
            envelope: &envelope,
            message,
        }],
        &mut journal,
    );
    journal.outcome.unwrap_or_else(|| Outcome::Halt {
        code: None,
        text: "the transport returned without an outcome".into(),
    })
}
