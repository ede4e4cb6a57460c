//! `transport::SmtpTransport` with CHUNKING (RFC 3030): MAIL, RCPT and `BDAT <size> LAST`
//! with the message in one write, and what each reply then means.
//!
//! mailin (the protocol engine of the other tests' in-process server) does not offer CHUNKING, and
//! the Rust servers that do were not fit to add (one is GPL-3.0 on an old TLS stack, one a
//! young part of a whole mail suite), so the server here is a small one of our own on a
//! loopback port, one connection at a time, that reads BDAT chunks by their size as postfix
//! does and answers as its script says. The same replies from a real postfix `smtpd` are
//! checked end to end by tests/system/chunking.sh.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campaign::transport::{Outcome, SmtpSettings, SmtpTransport, Transport, send_one};

mod common;
use common::smtp::loopback_settings;

const FROM: &str = "appeal@park.example";

/// What the server does where it would reply.
#[derive(Clone, Copy)]
enum Act {
    /// This reply line, CRLF added.
    Reply(&'static str),
    /// Sends the replies owed so far, then closes.
    RepliesThenClose,
    /// Closes at once: the replies owed so far are never sent.
    Vanish,
}

/// The server's behaviour.
#[derive(Clone, Default)]
struct Script {
    /// Offer CHUNKING (PIPELINING is always offered).
    chunking: bool,
    /// What every MAIL gets instead of 250.
    mail: Option<Act>,
    /// What RCPT of an address gets instead of 250.
    rcpt: HashMap<&'static str, Act>,
    /// What the end of a message to an address (BDAT LAST or the final dot) gets instead of
    /// 250.
    end: HashMap<&'static str, Act>,
    /// Accept BDAT LAST even after RCPT was refused (a broken server).
    accept_without_recipient: bool,
    /// After this many messages on one connection, the next MAIL gets 421 and the connection
    /// is closed.
    per_connection: Option<usize>,
}

/// How a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Bdat,
    Data,
}

/// What the server saw.
#[derive(Default)]
struct Log {
    connections: usize,
    /// Every read outside DATA, as text: shows what came in one write.
    reads: Vec<String>,
    /// Every command line, without CRLF.
    commands: Vec<String>,
    /// Messages accepted: recipient, the bytes as delivered (BDAT: as sent; DATA: without
    /// the dot-stuffing and the final dot), and how they came.
    messages: Vec<(String, Vec<u8>, Via)>,
    /// BDAT chunks read and refused (no valid recipient): their recipient.
    discarded: Vec<String>,
}

struct Peer {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

/// One session's transaction state.
#[derive(Default)]
struct Session {
    mail: bool,
    rcpt: Option<String>,
    /// The address of the last RCPT, accepted or not.
    last_rcpt: String,
    /// Inside BDAT: bytes still to read, and those read.
    chunk: Option<(usize, Vec<u8>)>,
    /// Inside DATA: the lines so far.
    data: Option<Vec<u8>>,
    accepted: usize,
}

/// What handling the input so far asks for.
enum Next {
    Read,
    Close { flush: bool },
}

impl Peer {
    fn start(script: Script) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                shared.lock().unwrap().connections += 1;
                Self::session(stream, &script, &shared);
            }
        });
        Peer { addr, log }
    }

    fn session(mut stream: TcpStream, script: &Script, log: &Mutex<Log>) {
        let _ = stream.write_all(b"220 peer.test ESMTP\r\n");
        let mut s = Session::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0; 65536];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if s.data.is_none() && s.chunk.is_none() {
                log.lock()
                    .unwrap()
                    .reads
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            pending.extend_from_slice(&buf[..n]);
            let mut out = String::new();
            let next = Self::handle(&mut s, &mut pending, &mut out, script, log);
            match next {
                Next::Read => {
                    if !out.is_empty() && stream.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                }
                Next::Close { flush } => {
                    if flush {
                        let _ = stream.write_all(out.as_bytes());
                    }
                    return;
                }
            }
        }
    }

    /// Handles every complete command (and chunk) in `pending`, replies appended to `out`.
    fn handle(
        s: &mut Session,
        pending: &mut Vec<u8>,
        out: &mut String,
        script: &Script,
        log: &Mutex<Log>,
    ) -> Next {
        // Applies an act, or the positive reply; `None` when the session ends.
        fn act(out: &mut String, act: Option<Act>, ok: &str) -> Option<Next> {
            match act {
                None => out.push_str(ok),
                Some(Act::Reply(r)) => out.push_str(r),
                Some(Act::RepliesThenClose) => return Some(Next::Close { flush: true }),
                Some(Act::Vanish) => return Some(Next::Close { flush: false }),
            }
            out.push_str("\r\n");
            None
        }
        loop {
            if let Some((left, got)) = &mut s.chunk {
                let take = (*left).min(pending.len());
                got.extend(pending.drain(..take));
                *left -= take;
                if *left > 0 {
                    return Next::Read;
                }
                let got = std::mem::take(got);
                s.chunk = None;
                let (mail, rcpt) = (std::mem::take(&mut s.mail), s.rcpt.take());
                if !mail {
                    out.push_str("503 5.5.1 Error: need MAIL command\r\n");
                    continue;
                }
                let end = script.end.get(s.last_rcpt.as_str()).copied();
                if rcpt.is_none() && !script.accept_without_recipient {
                    log.lock().unwrap().discarded.push(s.last_rcpt.clone());
                    if let Some(next) = act(out, end, "554 5.5.1 Error: no valid recipients") {
                        return next;
                    }
                    continue;
                }
                let to = rcpt.unwrap_or_default();
                if end.is_none() {
                    s.accepted += 1;
                    log.lock().unwrap().messages.push((to, got, Via::Bdat));
                }
                if let Some(next) = act(out, end, "250 2.0.0 Ok: queued as PEER") {
                    return next;
                }
                continue;
            }
            let Some(end) = pending.windows(2).position(|w| w == b"\r\n") else {
                return Next::Read;
            };
            let raw: Vec<u8> = pending.drain(..end + 2).collect();
            if let Some(body) = &mut s.data {
                if raw == b".\r\n" {
                    let body = std::mem::take(body);
                    s.data = None;
                    s.mail = false;
                    let to = s.rcpt.take().unwrap_or_default();
                    let end = script.end.get(to.as_str()).copied();
                    if end.is_none() {
                        s.accepted += 1;
                        log.lock().unwrap().messages.push((to, body, Via::Data));
                    }
                    if let Some(next) = act(out, end, "250 2.0.0 Ok: queued as PEER") {
                        return next;
                    }
                } else {
                    body.extend_from_slice(raw.strip_prefix(b".").unwrap_or(&raw));
                }
                continue;
            }
            let line = String::from_utf8_lossy(&raw[..end]).into_owned();
            log.lock().unwrap().commands.push(line.clone());
            let upper = line.to_ascii_uppercase();
            let step = if upper.starts_with("EHLO") {
                out.push_str("250-peer.test\r\n250-PIPELINING\r\n");
                if script.chunking {
                    out.push_str("250-CHUNKING\r\n");
                }
                out.push_str("250 8BITMIME\r\n");
                None
            } else if upper.starts_with("MAIL") {
                if script.per_connection.is_some_and(|n| s.accepted >= n) {
                    out.push_str("421 4.7.0 peer.test too many messages on one connection\r\n");
                    return Next::Close { flush: true };
                }
                s.mail = script.mail.is_none();
                act(out, script.mail, "250 2.1.0 Ok")
            } else if upper.starts_with("RCPT") {
                let to = line.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
                s.last_rcpt = to.clone();
                match script.rcpt.get(to.as_str()).copied() {
                    Some(a) => act(out, Some(a), ""),
                    None if !s.mail => {
                        out.push_str("503 5.5.1 Error: need MAIL command\r\n");
                        None
                    }
                    None => {
                        s.rcpt = Some(to);
                        act(out, None, "250 2.1.5 Ok")
                    }
                }
            } else if let Some(args) = upper.strip_prefix("BDAT ") {
                let mut words = args.split_whitespace();
                let size: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                assert_eq!(words.next(), Some("LAST"), "one chunk per message: {line}");
                s.chunk = Some((size, Vec::new()));
                None
            } else if upper.starts_with("DATA") {
                if s.rcpt.is_some() {
                    s.data = Some(Vec::new());
                    out.push_str("354 End data with <CR><LF>.<CR><LF>\r\n");
                } else {
                    out.push_str("554 5.5.1 Error: no valid recipients\r\n");
                }
                None
            } else if upper.starts_with("RSET") {
                (s.mail, s.rcpt) = (false, None);
                out.push_str("250 2.0.0 Ok\r\n");
                None
            } else if upper.starts_with("QUIT") {
                out.push_str("221 2.0.0 Bye\r\n");
                Some(Next::Close { flush: true })
            } else {
                out.push_str("502 5.5.2 Error: command not recognized\r\n");
                None
            };
            if let Some(next) = step {
                return next;
            }
        }
    }

    fn transport(&self, chunking: bool) -> SmtpTransport {
        SmtpTransport::new(Arc::new(SmtpSettings {
            chunking,
            ..loopback_settings(self.addr.port())
        }))
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    /// The commands from the first RCPT to `to` on, `n` of them.
    fn commands_from(&self, to: &str, n: usize) -> Vec<String> {
        let rcpt = format!("RCPT TO:<{to}>");
        self.log()
            .commands
            .iter()
            .skip_while(|c| **c != rcpt)
            .take(n)
            .cloned()
            .collect()
    }
}

fn message(to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{FROM}>\r\nTo: <{to}>\r\nSubject: test\r\nMessage-ID: <1@park.example>\r\n\r\n{body}"
    )
    .into_bytes()
}

fn send(t: &mut SmtpTransport, to: &str) -> Outcome {
    send_one(t, FROM, to, &message(to, "hi\r\n"), &mut || Ok(()))
}

fn assert_accepted(outcome: &Outcome) {
    match outcome {
        Outcome::Accepted { reply } => assert!(reply.contains("PEER"), "{reply}"),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn refuse(pairs: &[(&'static str, Act)]) -> HashMap<&'static str, Act> {
    pairs.iter().copied().collect()
}

#[test]
fn mail_rcpt_bdat_and_the_message_leave_in_one_write_without_dot_stuffing() {
    let peer = Peer::start(Script {
        chunking: true,
        ..Script::default()
    });
    let mut t = peer.transport(true);
    let dotted = message("ann@donor.example", "hi\r\n.dot\r\n.\r\nend\r\n");
    let unterminated = message("bob@donor.example", "no final line break");
    for (to, msg) in [
        ("ann@donor.example", &dotted),
        ("bob@donor.example", &unterminated),
    ] {
        assert_accepted(&send_one(&mut t, FROM, to, msg, &mut || Ok(())));
    }
    t.close();
    let log = peer.log();
    assert_eq!(log.connections, 1);
    let mut bob = unterminated.clone();
    bob.extend_from_slice(b"\r\n");
    assert_eq!(
        log.messages,
        [
            ("ann@donor.example".to_owned(), dotted.clone(), Via::Bdat),
            ("bob@donor.example".to_owned(), bob.clone(), Via::Bdat),
        ],
        "as given, no dot-stuffing, no end marker; a missing last CRLF added"
    );
    for (to, msg) in [("ann@donor.example", &dotted), ("bob@donor.example", &bob)] {
        let wire = format!(
            "MAIL FROM:<{FROM}>\r\nRCPT TO:<{to}>\r\nBDAT {} LAST\r\n{}",
            msg.len(),
            String::from_utf8_lossy(msg)
        );
        assert!(
            log.reads.contains(&wire),
            "expected the transaction in one read: {wire:?} in {:?}",
            log.reads
        );
    }
    assert!(
        !log.commands.iter().any(|c| c == "DATA"),
        "{:?}",
        log.commands
    );
}

#[test]
fn the_transmit_call_comes_before_any_byte_of_the_transaction() {
    let peer = Peer::start(Script {
        chunking: true,
        ..Script::default()
    });
    let mut t = peer.transport(true);
    assert_accepted(&send(&mut t, "ann@donor.example"));
    let mails = || {
        peer.log()
            .commands
            .iter()
            .filter(|c| c.starts_with("MAIL"))
            .count()
    };
    let mut seen_before = None;
    let msg = message("bob@donor.example", "hi\r\n");
    let outcome = send_one(&mut t, FROM, "bob@donor.example", &msg, &mut || {
        seen_before = Some(mails());
        Ok(())
    });
    assert_accepted(&outcome);
    assert_eq!(seen_before, Some(1), "only ann's MAIL was on the wire");
    // A failing transmit record sends nothing of the transaction.
    let outcome = send_one(&mut t, FROM, "cy@donor.example", &msg, &mut || {
        Err(std::io::Error::other("disk full"))
    });
    assert!(
        matches!(&outcome, Outcome::Halt { text, .. } if text.contains("disk full")),
        "{outcome:?}"
    );
    t.close();
    assert_eq!(mails(), 2);
    assert_eq!(peer.log().messages.len(), 2);
}

#[test]
fn a_refused_recipient_decides_although_bdat_went_out_and_the_connection_is_kept() {
    let peer = Peer::start(Script {
        chunking: true,
        rcpt: refuse(&[
            ("gone@donor.example", Act::Reply("550 5.1.1 No such user")),
            ("busy@donor.example", Act::Reply("450 4.2.1 Mailbox busy")),
        ]),
        ..Script::default()
    });
    let mut t = peer.transport(true);
    assert_eq!(
        send(&mut t, "gone@donor.example"),
        Outcome::Bounced {
            code: 550,
            text: "5.1.1 No such user".into(),
            suppress: true
        },
        "the RCPT reply decides, not BDAT's 554"
    );
    assert!(
        matches!(
            send(&mut t, "busy@donor.example"),
            Outcome::Deferred {
                code: Some(450),
                ..
            }
        ),
        "a transient RCPT refusal is retried later, not sent"
    );
    assert_accepted(&send(&mut t, "ann@donor.example"));
    t.close();
    assert_eq!(
        peer.commands_from("gone@donor.example", 3),
        [
            "RCPT TO:<gone@donor.example>".to_owned(),
            format!(
                "BDAT {} LAST",
                message("gone@donor.example", "hi\r\n").len()
            ),
            "RSET".to_owned()
        ]
    );
    let log = peer.log();
    assert_eq!(log.connections, 1, "a refused recipient costs an RSET only");
    assert_eq!(
        log.discarded.len(),
        2,
        "the server read both chunks and threw them away"
    );
    let delivered: Vec<&str> = log.messages.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(delivered, ["ann@donor.example"]);
}

#[test]
fn a_refused_sender_halts() {
    let peer = Peer::start(Script {
        chunking: true,
        mail: Some(Act::Reply(
            "553 5.7.1 Sender address rejected: not owned by you",
        )),
        ..Script::default()
    });
    let mut t = peer.transport(true);
    match send(&mut t, "ann@donor.example") {
        Outcome::Halt { code, text } => {
            assert_eq!(code, Some(553));
            assert!(
                text.contains("MAIL FROM") && text.contains("not owned"),
                "{text}"
            );
        }
        other => panic!("expected Halt, got {other:?}"),
    }
    assert!(peer.log().messages.is_empty());
}

#[test]
fn a_refused_bdat_is_the_end_of_message_reply_and_is_followed_by_rset() {
    let peer = Peer::start(Script {
        chunking: true,
        end: refuse(&[
            (
                "big@donor.example",
                Act::Reply("552 5.3.4 Message size exceeds limit"),
            ),
            (
                "spam@donor.example",
                Act::Reply("554 5.7.1 Message rejected as spam"),
            ),
            (
                "later@donor.example",
                Act::Reply("451 4.3.0 Queue file write error"),
            ),
        ]),
        ..Script::default()
    });
    let mut t = peer.transport(true);
    assert!(
        matches!(
            send(&mut t, "big@donor.example"),
            Outcome::Deferred {
                code: Some(552),
                ..
            }
        ),
        "a system error after the message is the relay's, not the donor's"
    );
    assert!(matches!(
        send(&mut t, "later@donor.example"),
        Outcome::Deferred {
            code: Some(451),
            ..
        }
    ));
    assert!(matches!(
        send(&mut t, "spam@donor.example"),
        Outcome::Halt {
            code: Some(554),
            ..
        }
    ));
    assert_accepted(&send(&mut t, "ann@donor.example"));
    t.close();
    // RFC 3030: after a refused BDAT the session's state is undefined until RSET.
    assert_eq!(
        peer.commands_from("big@donor.example", 3),
        [
            "RCPT TO:<big@donor.example>".to_owned(),
            format!("BDAT {} LAST", message("big@donor.example", "hi\r\n").len()),
            "RSET".to_owned()
        ]
    );
    let log = peer.log();
    assert_eq!(log.connections, 1);
    assert_eq!(log.messages.len(), 1);
}

#[test]
fn a_connection_lost_before_the_bdat_reply_is_unknown() {
    let peer = Peer::start(Script {
        chunking: true,
        end: refuse(&[
            ("lost@donor.example", Act::RepliesThenClose),
            ("vanished@donor.example", Act::Vanish),
        ]),
        ..Script::default()
    });
    let mut t = peer.transport(true);
    for to in ["lost@donor.example", "vanished@donor.example"] {
        // MAIL and RCPT accepted, or no reply at all: either way the message was on the
        // wire, so the server may have it.
        assert!(
            matches!(send(&mut t, to), Outcome::Unknown { .. }),
            "{to}: never sent, never retried"
        );
    }
    assert_accepted(&send(&mut t, "ann@donor.example"));
    t.close();
    assert_eq!(peer.log().connections, 3);
}

#[test]
fn a_refused_recipient_stays_refused_when_the_connection_is_then_lost() {
    let peer = Peer::start(Script {
        chunking: true,
        rcpt: refuse(&[("gone@donor.example", Act::Reply("550 5.1.1 No such user"))]),
        end: refuse(&[("gone@donor.example", Act::RepliesThenClose)]),
        ..Script::default()
    });
    let mut t = peer.transport(true);
    // The server had nobody to deliver to: only the BDAT reply is missing.
    assert!(matches!(
        send(&mut t, "gone@donor.example"),
        Outcome::Bounced { code: 550, .. }
    ));
    assert_accepted(&send(&mut t, "ann@donor.example"));
    t.close();
    let log = peer.log();
    assert_eq!(log.connections, 2, "the connection is not reused");
    assert_eq!(log.messages.len(), 1);
}

#[test]
fn a_message_accepted_after_a_refused_recipient_is_not_sent_and_the_connection_dropped() {
    // RFC 3030 forbids it; such a server is not followed further on this connection.
    let peer = Peer::start(Script {
        chunking: true,
        rcpt: refuse(&[("gone@donor.example", Act::Reply("550 5.1.1 No such user"))]),
        accept_without_recipient: true,
        ..Script::default()
    });
    let mut t = peer.transport(true);
    assert_eq!(
        send(&mut t, "gone@donor.example"),
        Outcome::Bounced {
            code: 550,
            text: "5.1.1 No such user".into(),
            suppress: true
        }
    );
    assert_accepted(&send(&mut t, "ann@donor.example"));
    t.close();
    let log = peer.log();
    assert_eq!(log.connections, 2);
    assert!(
        !log.commands.iter().any(|c| c == "RSET"),
        "{:?}",
        log.commands
    );
}

#[test]
fn only_250_to_bdat_last_counts_as_sent() {
    let peer = Peer::start(Script {
        chunking: true,
        end: refuse(&[("odd@donor.example", Act::Reply("354 go ahead"))]),
        ..Script::default()
    });
    let mut t = peer.transport(true);
    assert!(
        matches!(send(&mut t, "odd@donor.example"), Outcome::Unknown { .. }),
        "a positive reply RFC 3030 does not allow is no acceptance"
    );
    assert_accepted(&send(&mut t, "ann@donor.example"));
    t.close();
    assert_eq!(peer.log().connections, 2);
}

#[test]
fn a_421_to_mail_on_a_reused_connection_is_retried_on_a_new_one() {
    let peer = Peer::start(Script {
        chunking: true,
        per_connection: Some(2),
        ..Script::default()
    });
    let mut t = peer.transport(true);
    let donors = ["a@donor.example", "b@donor.example", "c@donor.example"];
    for to in donors {
        assert_accepted(&send(&mut t, to));
    }
    t.close();
    let log = peer.log();
    assert_eq!(log.connections, 2);
    let delivered: Vec<&str> = log.messages.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        delivered, donors,
        "each once: the 421 came before the server read the chunk"
    );
}

#[test]
fn chunking_off_or_not_offered_sends_with_data() {
    for (offered, allowed) in [(true, false), (false, true)] {
        let peer = Peer::start(Script {
            chunking: offered,
            ..Script::default()
        });
        let mut t = peer.transport(allowed);
        let msg = message("ann@donor.example", "hi\r\n.dot\r\n");
        assert_accepted(&send_one(
            &mut t,
            FROM,
            "ann@donor.example",
            &msg,
            &mut || Ok(()),
        ));
        t.close();
        let log = peer.log();
        assert!(
            log.commands.iter().any(|c| c == "DATA"),
            "{:?}",
            log.commands
        );
        assert!(!log.commands.iter().any(|c| c.starts_with("BDAT")));
        assert_eq!(
            log.messages,
            [("ann@donor.example".to_owned(), msg, Via::Data)],
            "the same bytes delivered as with BDAT"
        );
    }
}

#[test]
fn an_idle_connection_proves_itself_with_data_before_the_next_message_leaves() {
    let peer = Peer::start(Script {
        chunking: true,
        ..Script::default()
    });
    let mut t = peer.transport(true);
    assert_accepted(&send(&mut t, "a@donor.example"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_accepted(&send(&mut t, "b@donor.example"));
    assert_accepted(&send(&mut t, "c@donor.example"));
    t.close();
    let log = peer.log();
    let via: Vec<Via> = log.messages.iter().map(|m| m.2).collect();
    assert_eq!(via, [Via::Bdat, Via::Data, Via::Bdat]);
    assert_eq!(log.connections, 1);
}
