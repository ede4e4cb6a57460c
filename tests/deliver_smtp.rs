//! `transport::SmtpTransport` against real SMTP servers on 127.0.0.1: mailin's engine with a
//! scripted handler (per-RCPT and end-of-data replies), and a tiny raw server for what
//! mailin cannot do (closing without a reply after the dot, going silent, closing while idle).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campaign::transport::{
    CLIENT_REFUSED, Envelope, Journal, Outbound, Outcome, SmtpSettings, SmtpTransport, TlsMode,
    Transport, send_one,
};
use mailin::response::OK;
use mailin::{Handler, Response};

mod common;
use common::smtp::{loopback_settings, raw_server, serve_mailin};

const FROM: &str = "appeal@park.example";

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Connections that said EHLO/HELO. The transport says EHLO twice per connection (the
    /// second to learn whether PIPELINING is offered); only the first is counted.
    helos: usize,
    /// Every RCPT, accepted or not.
    rcpts: Vec<String>,
    /// Accepted messages: (recipients, bytes, BODY=8BITMIME).
    messages: Vec<(Vec<String>, Vec<u8>, bool)>,
    /// The transaction being received.
    current: Option<(Vec<String>, Vec<u8>, bool)>,
}

/// Replies the server gives instead of OK, consumed in order.
#[derive(Default)]
struct Script {
    rcpt: HashMap<String, VecDeque<(u16, &'static str)>>,
    data_end: VecDeque<(u16, &'static str)>,
}

/// Cloned by mailin for every connection.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    script: Arc<Mutex<Script>>,
    /// This connection has said EHLO.
    greeted: bool,
}

impl Handler for Recorder {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if !self.greeted {
            self.greeted = true;
            self.seen.lock().unwrap().helos += 1;
        }
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        self.seen.lock().unwrap().rcpts.push(to.to_owned());
        let scripted = self
            .script
            .lock()
            .unwrap()
            .rcpt
            .get_mut(to)
            .and_then(VecDeque::pop_front);
        match scripted {
            Some((code, text)) => Response::custom(code, text.to_owned()),
            None => OK,
        }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, is8bit: bool, to: &[String]) -> Response {
        self.seen.lock().unwrap().current = Some((to.to_vec(), Vec::new(), is8bit));
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some((_, bytes, _)) = &mut self.seen.lock().unwrap().current {
            bytes.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut seen = self.seen.lock().unwrap();
        let current = seen.current.take();
        match self.script.lock().unwrap().data_end.pop_front() {
            Some((code, text)) => Response::custom(code, text.to_owned()),
            None => {
                seen.messages.extend(current);
                Response::custom(250, "2.0.0 Ok: queued as TEST1".to_owned())
            }
        }
    }
}

struct Mailin {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    script: Arc<Mutex<Script>>,
}

impl Mailin {
    /// Starts a server on a free port; its threads live until the test process ends.
    fn start() -> Mailin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler = Recorder {
            seen: Arc::default(),
            script: Arc::default(),
            greeted: false,
        };
        let (seen, script) = (handler.seen.clone(), handler.script.clone());
        serve_mailin(listener, "mailin.test", handler);
        Mailin { port, seen, script }
    }

    fn transport(&self) -> SmtpTransport {
        SmtpTransport::new(Arc::new(settings(self.port)))
    }

    fn on_rcpt(&self, to: &str, replies: &[(u16, &'static str)]) {
        self.script
            .lock()
            .unwrap()
            .rcpt
            .insert(to.to_owned(), replies.iter().copied().collect());
    }

    fn on_data_end(&self, replies: &[(u16, &'static str)]) {
        self.script
            .lock()
            .unwrap()
            .data_end
            .extend(replies.iter().copied());
    }

    fn helos(&self) -> usize {
        self.seen.lock().unwrap().helos
    }

    fn messages(&self) -> Vec<(Vec<String>, Vec<u8>, bool)> {
        self.seen.lock().unwrap().messages.clone()
    }
}

fn settings(port: u16) -> SmtpSettings {
    loopback_settings(port)
}

fn message(to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{FROM}>\r\nTo: <{to}>\r\nSubject: test\r\nMessage-ID: <1@park.example>\r\n\r\n{body}"
    )
    .into_bytes()
}

fn ok() -> impl FnMut() -> std::io::Result<()> {
    || Ok(())
}

fn send(t: &mut SmtpTransport, to: &str, msg: &[u8]) -> Outcome {
    send_one(t, FROM, to, msg, &mut ok())
}

fn assert_accepted(outcome: &Outcome) {
    match outcome {
        Outcome::Accepted { reply } => assert!(reply.contains("queued as TEST1"), "{reply}"),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

#[test]
fn accepted_message_arrives_byte_exact() {
    let server = Mailin::start();
    let mut t = server.transport();
    let body = "Dear friend,\r\n.leading dot\r\n.\r\n..two dots\r\n\r\nline\r\n.";
    let msg = message("ann@donor.example", &format!("{body}\r\n"));
    let mut called = 0;
    let outcome = send_one(&mut t, FROM, "ann@donor.example", &msg, &mut || {
        called += 1;
        Ok(())
    });
    assert_accepted(&outcome);
    assert_eq!(called, 1);
    t.close();
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, ["ann@donor.example"]);
    assert_eq!(
        String::from_utf8_lossy(&messages[0].1),
        String::from_utf8_lossy(&msg)
    );
    assert!(!messages[0].2, "a 7-bit message must not ask for 8BITMIME");
}

#[test]
fn a_message_without_final_crlf_gets_one() {
    let server = Mailin::start();
    let mut t = server.transport();
    let msg = message("ann@donor.example", "no newline at the end");
    assert_accepted(&send(&mut t, "ann@donor.example", &msg));
    let mut want = msg.clone();
    want.extend_from_slice(b"\r\n");
    assert_eq!(server.messages()[0].1, want);
}

#[test]
fn eight_bit_body_is_sent_with_8bitmime() {
    let server = Mailin::start();
    let mut t = server.transport();
    let msg = message("ann@donor.example", "Merci, chère amie\r\n");
    assert_accepted(&send(&mut t, "ann@donor.example", &msg));
    let messages = server.messages();
    assert_eq!(messages[0].1, msg);
    assert!(messages[0].2, "BODY=8BITMIME expected");
}

#[test]
fn eight_bit_body_in_a_legacy_charset_is_sent_as_is() {
    let server = Mailin::start();
    let mut t = server.transport();
    // Latin-1 "chère" and a dot line: not UTF-8, so lettre's own writer does the stuffing.
    let mut msg = message("ann@donor.example", "");
    msg.extend_from_slice(b"ch\xe8re\r\n.\r\n.x\r\n");
    assert_accepted(&send(&mut t, "ann@donor.example", &msg));
    let messages = server.messages();
    assert_eq!(messages[0].1, msg);
    assert!(messages[0].2);
}

#[test]
fn rejected_recipient_keeps_the_connection() {
    let server = Mailin::start();
    server.on_rcpt("gone@donor.example", &[(550, "5.1.1 No such user")]);
    let mut t = server.transport();
    let outcome = send(
        &mut t,
        "gone@donor.example",
        &message("gone@donor.example", "hi\r\n"),
    );
    assert_eq!(
        outcome,
        Outcome::Bounced {
            code: 550,
            text: "5.1.1 No such user".into(),
            suppress: true
        }
    );
    assert_accepted(&send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ));
    t.close();
    assert_eq!(server.helos(), 1, "the bounce must not cost a reconnect");
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    // RSET cleared the failed transaction: only the good recipient is on the message.
    assert_eq!(messages[0].0, ["ann@donor.example"]);
}

#[test]
fn transient_rcpt_then_success() {
    let server = Mailin::start();
    server.on_rcpt("busy@donor.example", &[(451, "4.3.0 Temporary failure")]);
    let mut t = server.transport();
    let msg = message("busy@donor.example", "hi\r\n");
    assert_eq!(
        send(&mut t, "busy@donor.example", &msg),
        Outcome::Deferred {
            code: Some(451),
            text: "4.3.0 Temporary failure".into(),
            throttle: false
        }
    );
    assert_accepted(&send(&mut t, "busy@donor.example", &msg));
    assert_eq!(server.helos(), 1);
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn policy_rejection_halts() {
    let server = Mailin::start();
    server.on_rcpt("x@donor.example", &[(550, "5.7.1 Relaying denied")]);
    let mut t = server.transport();
    match send(
        &mut t,
        "x@donor.example",
        &message("x@donor.example", "hi\r\n"),
    ) {
        Outcome::Halt {
            code: Some(550),
            text,
        } => {
            assert!(text.contains("5.7.1 Relaying denied"), "{text}");
            assert!(text.contains("RCPT TO"), "{text}");
        }
        other => panic!("expected Halt, got {other:?}"),
    }
}

#[test]
fn closing_421_at_end_of_data_defers_and_reconnects() {
    let server = Mailin::start();
    server.on_data_end(&[(421, "4.7.0 Too busy, closing")]);
    let mut t = server.transport();
    let msg = message("ann@donor.example", "hi\r\n");
    assert_eq!(
        send(&mut t, "ann@donor.example", &msg),
        Outcome::Deferred {
            code: Some(421),
            text: "4.7.0 Too busy, closing".into(),
            throttle: true
        }
    );
    assert_accepted(&send(&mut t, "ann@donor.example", &msg));
    assert_eq!(server.helos(), 2, "a 421 closes the connection: reconnect");
    assert_eq!(server.messages().len(), 1);
}

/// A refusal at the end of the data ends only that transaction: the next message goes on
/// the same connection.
#[test]
fn refused_at_end_of_data_the_next_message_keeps_the_connection() {
    let server = Mailin::start();
    server.on_data_end(&[(552, "5.2.2 Mailbox full")]);
    let mut t = server.transport();
    let msg = message("ann@donor.example", "hi\r\n");
    match send(&mut t, "ann@donor.example", &msg) {
        Outcome::Bounced {
            code: 552, text, ..
        } => assert!(text.contains("5.2.2"), "{text}"),
        other => panic!("expected Bounced, got {other:?}"),
    }
    assert_accepted(&send(&mut t, "bob@donor.example", &msg));
    assert_eq!(server.helos(), 1);
    assert_eq!(server.messages().len(), 1);
}

/// A relay that never answers QUIT holds the goodbye for a moment, not for the command
/// timeout (30 s here): a send would otherwise end that much later per connection.
#[test]
fn a_relay_that_never_answers_quit_is_left_after_a_moment() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Some(Ok(stream)) = listener.incoming().next() else {
            return;
        };
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let _ = w.write_all(b"220 mute.test ESMTP\r\n");
        let (mut line, mut in_data) = (String::new(), false);
        loop {
            line.clear();
            if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
                return;
            }
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if in_data {
                if line != ".\r\n" {
                    continue;
                }
                in_data = false;
                b"250 2.0.0 Ok: queued as TEST1\r\n"
            } else if upper.starts_with("EHLO") {
                b"250 mute.test\r\n"
            } else if upper.starts_with("DATA") {
                in_data = true;
                b"354 go ahead\r\n"
            } else if upper.starts_with("QUIT") {
                std::thread::sleep(Duration::from_secs(60));
                return;
            } else {
                b"250 ok\r\n"
            };
            let _ = w.write_all(reply);
        }
    });
    let mut s = settings(port);
    s.timeout = Duration::from_secs(30);
    let mut t = SmtpTransport::new(Arc::new(s));
    let msg = message("ann@donor.example", "hi\r\n");
    assert_accepted(&send(&mut t, "ann@donor.example", &msg));
    let started = std::time::Instant::now();
    t.close();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "QUIT held the connection {took:?}"
    );
}

#[test]
fn before_body_error_halts_and_nothing_is_delivered() {
    let server = Mailin::start();
    let mut t = server.transport();
    let msg = message("ann@donor.example", "hi\r\n");
    let outcome = send_one(&mut t, FROM, "ann@donor.example", &msg, &mut || {
        Err(std::io::Error::other("ledger disk full"))
    });
    match outcome {
        Outcome::Halt { code: None, text } => assert!(text.contains("ledger disk full"), "{text}"),
        other => panic!("expected Halt, got {other:?}"),
    }
    // The server saw DATA but never the final dot; give it a moment to notice the close.
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.messages().is_empty());
    // The transport is usable again (a fresh connection).
    assert_accepted(&send(&mut t, "ann@donor.example", &msg));
    assert_eq!(server.messages().len(), 1);
    assert_eq!(server.helos(), 2);
}

#[test]
fn server_not_listening_is_deferred() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut t = SmtpTransport::new(Arc::new(settings(port)));
    match send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ) {
        Outcome::Deferred {
            code: None,
            text,
            throttle: false,
        } => assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}"),
        other => panic!("expected Deferred, got {other:?}"),
    }
}

#[test]
fn connect_now_opens_the_session_used_by_send() {
    let server = Mailin::start();
    let mut t = server.transport();
    assert_eq!(t.connect_now(), Ok(()));
    assert_eq!(t.connect_now(), Ok(()));
    assert_accepted(&send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ));
    assert_eq!(server.helos(), 1);
}

#[test]
fn reconnects_after_the_configured_count() {
    let server = Mailin::start();
    let mut s = settings(server.port);
    s.reconnect_after = 2;
    let mut t = SmtpTransport::new(Arc::new(s));
    let msg = message("ann@donor.example", "hi\r\n");
    for _ in 0..5 {
        assert_accepted(&send(&mut t, "ann@donor.example", &msg));
    }
    t.close();
    assert_eq!(server.helos(), 3);
    assert_eq!(server.messages().len(), 5);
}

#[test]
fn addresses_the_client_cannot_send() {
    let server = Mailin::start();
    let mut t = server.transport();
    // mailin does not offer SMTPUTF8.
    match send(
        &mut t,
        "josé@donor.example",
        &message("x@donor.example", "hi\r\n"),
    ) {
        Outcome::Deferred {
            code: Some(CLIENT_REFUSED),
            text,
            throttle: false,
        } => assert!(text.contains("SMTPUTF8"), "{text}"),
        other => panic!("expected Deferred, got {other:?}"),
    }
    match send(
        &mut t,
        "not an address",
        &message("x@donor.example", "hi\r\n"),
    ) {
        Outcome::Bounced {
            code: CLIENT_REFUSED,
            suppress: false,
            ..
        } => {}
        other => panic!("expected Bounced, got {other:?}"),
    }
    match send_one(
        &mut t,
        "bad sender",
        "ann@donor.example",
        b"x\r\n",
        &mut ok(),
    ) {
        Outcome::Halt { code: None, text } => assert!(text.contains("bad sender"), "{text}"),
        other => panic!("expected Halt, got {other:?}"),
    }
    assert_accepted(&send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ));
    assert_eq!(server.helos(), 1);
}

#[test]
fn connection_lost_after_the_dot_is_unknown() {
    let (addr, _) = raw_server(|n| n != 1, usize::MAX);
    let mut t = SmtpTransport::new(Arc::new(settings(addr.port())));
    let msg = message("ann@donor.example", "hi\r\n");
    match send(&mut t, "ann@donor.example", &msg) {
        Outcome::Unknown { text } => assert!(text.contains("may have been delivered"), "{text}"),
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert!(matches!(
        send(&mut t, "ann@donor.example", &msg),
        Outcome::Accepted { .. }
    ));
}

#[test]
fn connection_closed_while_idle_is_reopened_transparently() {
    let (addr, connections) = raw_server(|_| true, 1);
    let mut t = SmtpTransport::new(Arc::new(settings(addr.port())));
    let msg = message("ann@donor.example", "hi\r\n");
    for _ in 0..3 {
        // Let the server's close arrive, as it would during a pause.
        std::thread::sleep(Duration::from_millis(20));
        match send(&mut t, "ann@donor.example", &msg) {
            Outcome::Accepted { reply } => assert!(reply.contains("RAW"), "{reply}"),
            other => panic!("expected Accepted, got {other:?}"),
        }
    }
    assert_eq!(*connections.lock().unwrap(), 3);
}

#[test]
fn silent_server_times_out_as_deferred() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and never says a word.
    std::thread::spawn(move || {
        let _held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(10));
    });
    let mut s = settings(port);
    s.timeout = Duration::from_millis(300);
    let mut t = SmtpTransport::new(Arc::new(s));
    match send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ) {
        Outcome::Deferred {
            code: None, text, ..
        } => assert!(
            text.contains("no SMTP greeting") && text.contains("within 0.3 s"),
            "{text}"
        ),
        other => panic!("expected Deferred, got {other:?}"),
    }
}

#[test]
fn starttls_required_but_not_offered_halts() {
    let (addr, _) = raw_server(|_| true, usize::MAX);
    let mut s = settings(addr.port());
    s.tls = TlsMode::StartTls;
    let mut t = SmtpTransport::new(Arc::new(s));
    match send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ) {
        Outcome::Halt { text, .. } => assert!(text.contains("STARTTLS"), "{text}"),
        other => panic!("expected Halt, got {other:?}"),
    }
}

#[test]
fn implicit_tls_to_a_plaintext_server_halts() {
    let (addr, _) = raw_server(|_| true, usize::MAX);
    let mut s = settings(addr.port());
    s.tls = TlsMode::Implicit;
    let mut t = SmtpTransport::new(Arc::new(s));
    match send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ) {
        Outcome::Halt { text, .. } => assert!(text.contains("TLS"), "{text}"),
        other => panic!("expected Halt, got {other:?}"),
    }
}

/// What a [`Scripted`] server saw.
#[derive(Default)]
struct Transcript {
    connections: usize,
    ehlos: usize,
    /// Every `read` outside message data, as text: shows which commands came in one write.
    reads: Vec<String>,
    /// Every `read` that began inside message data, as text.
    data_reads: Vec<String>,
    /// Every command line, without CRLF.
    commands: Vec<String>,
    /// Accepted messages: (recipient, bytes as sent, dot-stuffed, without the final dot).
    messages: Vec<(String, String)>,
}

/// A raw SMTP server, one connection at a time, that can offer PIPELINING and refuse chosen
/// recipients. It answers DATA without a valid recipient like postfix (554 5.5.1), or, when
/// `data_despite_refusal`, with 354 as a broken server might.
struct Scripted {
    addr: SocketAddr,
    log: Arc<Mutex<Transcript>>,
}

impl Scripted {
    fn start(
        pipelining: bool,
        refuse: &[(&'static str, &'static str)],
        data_despite_refusal: bool,
    ) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Transcript::default()));
        let refuse: HashMap<&str, &str> = refuse.iter().copied().collect();
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                shared.lock().unwrap().connections += 1;
                Self::session(stream, pipelining, &refuse, data_despite_refusal, &shared);
            }
        });
        Scripted { addr, log }
    }

    fn session(
        mut stream: TcpStream,
        pipelining: bool,
        refuse: &HashMap<&str, &str>,
        data_despite_refusal: bool,
        log: &Mutex<Transcript>,
    ) {
        use std::io::Read;
        let _ = stream.write_all(b"220 scripted.test ESMTP\r\n");
        let mut pending = Vec::new();
        let mut data: Option<String> = None;
        let (mut mail, mut rcpt) = (false, None::<String>);
        let mut buf = [0; 65536];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if data.is_none() {
                log.lock().unwrap().reads.push(text);
            } else {
                log.lock().unwrap().data_reads.push(text);
            }
            pending.extend_from_slice(&buf[..n]);
            let mut out = String::new();
            while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = pending.drain(..end + 2).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                if let Some(body) = &mut data {
                    if line == "." {
                        let to = rcpt.take().unwrap_or_default();
                        log.lock()
                            .unwrap()
                            .messages
                            .push((to, std::mem::take(body)));
                        data = None;
                        mail = false;
                        out.push_str("250 2.0.0 Ok: queued as SCRIPTED\r\n");
                    } else {
                        body.push_str(&line);
                        body.push_str("\r\n");
                    }
                    continue;
                }
                log.lock().unwrap().commands.push(line.clone());
                let upper = line.to_ascii_uppercase();
                if upper.starts_with("EHLO") {
                    log.lock().unwrap().ehlos += 1;
                    out.push_str("250-scripted.test\r\n");
                    if pipelining {
                        out.push_str("250-PIPELINING\r\n");
                    }
                    out.push_str("250 8BITMIME\r\n");
                } else if upper.starts_with("MAIL") {
                    mail = true;
                    out.push_str("250 2.1.0 Ok\r\n");
                } else if upper.starts_with("RCPT") {
                    let to = line.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
                    if let Some(reply) = refuse.get(to.as_str()) {
                        out.push_str(reply);
                        out.push_str("\r\n");
                    } else if !mail {
                        out.push_str("503 5.5.1 Error: need MAIL command\r\n");
                    } else {
                        rcpt = Some(to);
                        out.push_str("250 2.1.5 Ok\r\n");
                    }
                } else if upper.starts_with("DATA") {
                    if rcpt.is_some() || data_despite_refusal {
                        data = Some(String::new());
                        out.push_str("354 End data with <CR><LF>.<CR><LF>\r\n");
                    } else {
                        out.push_str("554 5.5.1 Error: no valid recipients\r\n");
                    }
                } else if upper.starts_with("RSET") {
                    (mail, rcpt) = (false, None);
                    out.push_str("250 2.0.0 Ok\r\n");
                } else if upper.starts_with("QUIT") {
                    let _ = stream.write_all(format!("{out}221 2.0.0 Bye\r\n").as_bytes());
                    return;
                } else {
                    out.push_str("502 5.5.2 Error: command not recognized\r\n");
                }
            }
            if !out.is_empty() && stream.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn transport(&self) -> SmtpTransport {
        SmtpTransport::new(Arc::new(settings(self.addr.port())))
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Transcript> {
        self.log.lock().unwrap()
    }
}

fn assert_scripted_accepted(outcome: &Outcome) {
    match outcome {
        Outcome::Accepted { reply } => assert!(reply.contains("SCRIPTED"), "{reply}"),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

#[test]
fn pipelining_sends_mail_rcpt_and_data_in_one_write() {
    let server = Scripted::start(true, &[], false);
    let mut t = server.transport();
    let msg = message("ann@donor.example", "hi\r\n.dot\r\n");
    assert_scripted_accepted(&send(&mut t, "ann@donor.example", &msg));
    assert_scripted_accepted(&send(&mut t, "bob@donor.example", &msg));
    t.close();
    let log = server.log();
    assert_eq!(log.connections, 1);
    assert_eq!(log.ehlos, 1, "PIPELINING is read from the one EHLO");
    for to in ["ann@donor.example", "bob@donor.example"] {
        let group = format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
        assert!(
            log.reads.contains(&group),
            "expected {group:?} in one read: {:?}",
            log.reads
        );
    }
    let want = String::from_utf8(msg).unwrap().replace("\n.dot", "\n..dot");
    assert_eq!(
        log.messages,
        [
            ("ann@donor.example".to_owned(), want.clone()),
            ("bob@donor.example".to_owned(), want)
        ]
    );
}

#[test]
fn pipelined_rejected_recipient_bounces_and_keeps_the_connection() {
    let server = Scripted::start(
        true,
        &[("gone@donor.example", "550 5.1.1 No such user")],
        false,
    );
    let mut t = server.transport();
    assert_eq!(
        send(
            &mut t,
            "gone@donor.example",
            &message("gone@donor.example", "hi\r\n")
        ),
        Outcome::Bounced {
            code: 550,
            text: "5.1.1 No such user".into(),
            suppress: true
        },
        "decided by the RCPT reply, not by DATA's 554"
    );
    assert_scripted_accepted(&send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ));
    t.close();
    let log = server.log();
    assert_eq!(log.connections, 1, "the bounce must not cost a reconnect");
    let after_group: Vec<&str> = log
        .commands
        .iter()
        .skip_while(|c| !c.starts_with("RCPT TO:<gone@"))
        .map(String::as_str)
        .take(3)
        .collect();
    assert_eq!(
        after_group,
        ["RCPT TO:<gone@donor.example>", "DATA", "RSET"]
    );
    assert_eq!(log.messages.len(), 1);
    assert_eq!(log.messages[0].0, "ann@donor.example");
}

#[test]
fn pipelined_data_accepted_after_a_refused_recipient_drops_the_connection() {
    // RFC 2920 forbids it; a server doing it waits for a body that must not come.
    let server = Scripted::start(
        true,
        &[("gone@donor.example", "550 5.1.1 No such user")],
        true,
    );
    let mut t = server.transport();
    assert_eq!(
        send(
            &mut t,
            "gone@donor.example",
            &message("gone@donor.example", "hi\r\n")
        ),
        Outcome::Bounced {
            code: 550,
            text: "5.1.1 No such user".into(),
            suppress: true
        }
    );
    assert_scripted_accepted(&send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ));
    t.close();
    let log = server.log();
    assert_eq!(
        log.connections, 2,
        "no RSET into the data: a new connection"
    );
    assert!(
        !log.commands.iter().any(|c| c == "RSET"),
        "{:?}",
        log.commands
    );
    assert_eq!(log.messages.len(), 1);
    assert_eq!(log.messages[0].0, "ann@donor.example");
}

#[test]
fn without_pipelining_commands_go_in_lock_step() {
    let server = Scripted::start(
        false,
        &[("gone@donor.example", "550 5.1.1 No such user")],
        false,
    );
    let mut t = server.transport();
    assert!(matches!(
        send(
            &mut t,
            "gone@donor.example",
            &message("gone@donor.example", "hi\r\n")
        ),
        Outcome::Bounced { code: 550, .. }
    ));
    assert_scripted_accepted(&send(
        &mut t,
        "ann@donor.example",
        &message("ann@donor.example", "hi\r\n"),
    ));
    t.close();
    let log = server.log();
    assert_eq!(log.connections, 1);
    // Every command read on its own: each waited for the previous reply. After the refused
    // RCPT no DATA was sent, only RSET.
    let commands: Vec<String> = log.commands.iter().map(|c| format!("{c}\r\n")).collect();
    let reads: Vec<&String> = log.reads.iter().collect();
    assert_eq!(reads, commands.iter().collect::<Vec<_>>());
    let after_refusal: Vec<&str> = log
        .commands
        .iter()
        .skip_while(|c| !c.starts_with("RCPT TO:<gone@"))
        .map(String::as_str)
        .take(2)
        .collect();
    assert_eq!(after_refusal, ["RCPT TO:<gone@donor.example>", "RSET"]);
}

/// Throughput against an external sink, e.g.
/// `smtp-sink -u nobody 127.0.0.1:2525 256 &` then
/// `CAMPAIGN_BENCH_SMTP=127.0.0.1:2525 cargo test --release --test deliver_smtp -- --ignored --nocapture`.
#[test]
#[ignore = "needs CAMPAIGN_BENCH_SMTP=host:port of a fast sink"]
fn bench_throughput() {
    let Ok(target) = std::env::var("CAMPAIGN_BENCH_SMTP") else {
        eprintln!("set CAMPAIGN_BENCH_SMTP=host:port");
        return;
    };
    let (host, port) = target.rsplit_once(':').unwrap();
    let mut s = settings(port.parse().unwrap());
    s.host = host.to_owned();
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let total: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let settings = Arc::new(s);
    let line = "x".repeat(72);
    let body: String = (0..56).map(|i| format!("{i:02} {line}\r\n")).collect();
    let msg = Arc::new(message("ann@donor.example", &body));
    eprintln!("message size {} bytes", msg.len());
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let settings = settings.clone();
            let msg = msg.clone();
            std::thread::spawn(move || {
                let mut t = SmtpTransport::new(settings);
                for _ in 0..total / threads {
                    let o = send(&mut t, "ann@donor.example", &msg);
                    assert!(matches!(o, Outcome::Accepted { .. }), "{o:?}");
                }
                t.close();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{threads} connections: {total} messages in {secs:.2} s = {:.0} msg/s",
        total as f64 / secs
    );
}

/// A journal that records what the transport asked and told, in order. `start_now` is its
/// answer to `may_start_now`; `proceed` says no for message `stop_at`.
struct BatchLog {
    start_now: bool,
    stop_at: Option<usize>,
    events: Vec<String>,
    outcomes: Vec<Outcome>,
}

impl BatchLog {
    fn new(start_now: bool, stop_at: Option<usize>) -> BatchLog {
        BatchLog {
            start_now,
            stop_at,
            events: Vec::new(),
            outcomes: Vec::new(),
        }
    }
}

impl Journal for BatchLog {
    fn proceed(&mut self, i: usize) -> bool {
        self.events.push(format!("proceed {i}"));
        self.stop_at != Some(i)
    }

    fn may_start_now(&self, _: usize) -> bool {
        self.start_now
    }

    fn transmitting(&mut self, i: usize) -> std::io::Result<()> {
        self.events.push(format!("transmitting {i}"));
        Ok(())
    }

    fn outcome(&mut self, i: usize, outcome: Outcome) {
        self.events.push(format!("outcome {i}"));
        self.outcomes.push(outcome);
    }

    fn outcome_before_next(&mut self, i: usize, outcome: Outcome) {
        self.events.push(format!("outcome {i}, next in hand"));
        self.outcomes.push(outcome);
    }
}

const BATCH: [&str; 3] = [
    "ann@donor.example",
    "bob@donor.example",
    "cat@donor.example",
];

/// Sends one message to each of `BATCH` as one batch.
fn send_batch(t: &mut SmtpTransport, journal: &mut BatchLog) -> (usize, Vec<u8>) {
    let msg = message("donor@donor.example", "hi\r\n.dot\r\n");
    let envelopes: Vec<Envelope> = BATCH
        .iter()
        .map(|to| Envelope::parse(FROM, to).unwrap())
        .collect();
    let batch: Vec<Outbound<'_>> = envelopes
        .iter()
        .map(|envelope| Outbound {
            envelope,
            message: &msg,
        })
        .collect();
    (t.send_batch(&batch, journal), msg)
}

fn group(to: &str) -> String {
    format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{to}>\r\nDATA\r\n")
}

/// Within a batch each body carries the next message's MAIL, RCPT and DATA: one write and
/// one wait per message. The journal still hears of each body before it leaves, and the
/// last body goes alone, so QUIT ends the session politely. The next message's replies come
/// with each body's, so each outcome but the last is told as one the next transmit record
/// follows at once.
#[test]
fn pipelining_sends_the_next_messages_commands_with_each_body() {
    let server = Scripted::start(true, &[], false);
    let mut t = server.transport();
    let mut journal = BatchLog::new(true, None);
    let (sent, msg) = send_batch(&mut t, &mut journal);
    assert_eq!(sent, 3);
    for o in &journal.outcomes {
        assert_scripted_accepted(o);
    }
    let mut want = Vec::new();
    for i in 0..3 {
        want.extend([
            format!("proceed {i}"),
            format!("transmitting {i}"),
            if i < 2 {
                format!("outcome {i}, next in hand")
            } else {
                format!("outcome {i}")
            },
        ]);
    }
    assert_eq!(journal.events, want);
    t.close();
    let log = server.log();
    assert_eq!(log.connections, 1);
    assert_eq!(log.reads.first(), Some(&"EHLO client.test\r\n".to_owned()));
    assert!(log.reads.contains(&group(BATCH[0])), "{:?}", log.reads);
    for to in &BATCH[1..] {
        let tail = format!("\r\n.\r\n{}", group(to));
        assert!(
            log.data_reads.iter().any(|r| r.ends_with(&tail)),
            "expected a body ending in {tail:?}: {:?}",
            log.data_reads
        );
    }
    assert!(
        log.data_reads.last().unwrap().ends_with("\r\n.\r\n"),
        "{:?}",
        log.data_reads
    );
    assert_eq!(log.commands.last().map(String::as_str), Some("QUIT"));
    let body = String::from_utf8(msg).unwrap().replace("\n.dot", "\n..dot");
    let got: Vec<_> = log
        .messages
        .iter()
        .map(|(to, b)| (to.as_str(), b))
        .collect();
    assert_eq!(got, BATCH.iter().map(|to| (*to, &body)).collect::<Vec<_>>());
}

/// A journal that cannot say a message may start at once (pacing, a pause) keeps one
/// transaction on the wire at a time.
#[test]
fn a_message_that_may_not_start_at_once_is_not_sent_ahead() {
    let server = Scripted::start(true, &[], false);
    let mut t = server.transport();
    let mut journal = BatchLog::new(false, None);
    assert_eq!(send_batch(&mut t, &mut journal).0, 3);
    let log = server.log();
    for to in BATCH {
        assert!(log.reads.contains(&group(to)), "{:?}", log.reads);
    }
    assert!(
        log.data_reads.iter().all(|r| !r.contains("MAIL FROM")),
        "{:?}",
        log.data_reads
    );
    assert_eq!(log.messages.len(), 3);
}

/// A recipient refused after its commands went ahead is bounced like any other, and the
/// batch goes on over the same connection.
#[test]
fn a_recipient_refused_after_going_ahead_bounces_and_the_batch_goes_on() {
    let server = Scripted::start(
        true,
        &[(
            "bob@donor.example",
            "550 5.1.1 <bob@donor.example>: no such user",
        )],
        false,
    );
    let mut t = server.transport();
    let mut journal = BatchLog::new(true, None);
    assert_eq!(send_batch(&mut t, &mut journal).0, 3);
    assert_scripted_accepted(&journal.outcomes[0]);
    match &journal.outcomes[1] {
        Outcome::Bounced {
            code: 550,
            suppress: true,
            ..
        } => {}
        other => panic!("expected Bounced, got {other:?}"),
    }
    assert_scripted_accepted(&journal.outcomes[2]);
    assert!(
        !journal.events.contains(&"transmitting 1".to_owned()),
        "{:?}",
        journal.events
    );
    // Bob's refusal came with Ann's acceptance: no transmit record follows it, so Ann's
    // outcome is told the ordinary way.
    assert_eq!(journal.events[2], "outcome 0", "{:?}", journal.events);
    let log = server.log();
    assert_eq!(log.connections, 1);
    let to: Vec<_> = log.messages.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(to, ["ann@donor.example", "cat@donor.example"]);
}

/// A stop after the next message's commands went ahead leaves the server waiting for a body
/// that must not come: the connection is dropped without QUIT (which would become message
/// text), nothing more is delivered, and the next send opens a new connection.
#[test]
fn a_stop_after_the_next_commands_went_ahead_drops_the_connection() {
    let server = Scripted::start(true, &[], false);
    let mut t = server.transport();
    let mut journal = BatchLog::new(true, Some(1));
    assert_eq!(send_batch(&mut t, &mut journal).0, 1);
    assert_eq!(
        journal.events,
        [
            "proceed 0",
            "transmitting 0",
            "outcome 0, next in hand",
            "proceed 1"
        ]
    );
    // The same transport, as a worker's next batch would use it: never bob's transaction.
    let msg = message("dan@donor.example", "hi\r\n");
    assert_scripted_accepted(&send(&mut t, "dan@donor.example", &msg));
    t.close();
    let log = server.log();
    assert_eq!(log.connections, 2);
    let to: Vec<_> = log.messages.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(to, ["ann@donor.example", "dan@donor.example"]);
    assert!(
        log.messages.iter().all(|(_, body)| !body.contains("QUIT")),
        "{:?}",
        log.messages
    );
    assert_eq!(log.commands.iter().filter(|c| *c == "QUIT").count(), 1);
}
