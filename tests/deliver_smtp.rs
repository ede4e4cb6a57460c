//! `deliver::SmtpTransport` against real SMTP servers on 127.0.0.1: mailin-embedded with a
//! scripted handler (per-RCPT and end-of-data replies), and a tiny raw server for what
//! mailin cannot do (closing without a reply after the dot, going silent, closing while idle).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campaign::deliver::{CLIENT_REFUSED, Outcome, SmtpTransport, Transport};
use campaign::smtp::{SmtpSettings, TlsMode};
use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, Server};

const FROM: &str = "appeal@park.example";

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// EHLO/HELO count: one per connection.
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

#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    script: Arc<Mutex<Script>>,
}

impl Handler for Recorder {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        self.seen.lock().unwrap().helos += 1;
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
    /// Starts a server on a free port; its thread lives until the test process ends.
    fn start() -> Mailin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler = Recorder {
            seen: Arc::default(),
            script: Arc::default(),
        };
        let (seen, script) = (handler.seen.clone(), handler.script.clone());
        let mut server = Server::new(handler);
        server.with_name("mailin.test").with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
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
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        username: None,
        password: None,
        hello_name: "client.test".into(),
        timeout: Duration::from_secs(5),
        reconnect_after: 1000,
        allow_insecure_auth: false,
    }
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
    t.send(FROM, to, msg, &mut ok())
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
    let outcome = t.send(FROM, "ann@donor.example", &msg, &mut || {
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

#[test]
fn before_body_error_halts_and_nothing_is_delivered() {
    let server = Mailin::start();
    let mut t = server.transport();
    let msg = message("ann@donor.example", "hi\r\n");
    let outcome = t.send(FROM, "ann@donor.example", &msg, &mut || {
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
        Outcome::Bounced {
            code: CLIENT_REFUSED,
            text,
            suppress: false,
        } => assert!(text.contains("SMTPUTF8"), "{text}"),
        other => panic!("expected Bounced, got {other:?}"),
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
    match t.send("bad sender", "ann@donor.example", b"x\r\n", &mut ok()) {
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

/// A server speaking SMTP by script on one connection at a time: `after_dot` decides what
/// happens after each message (`true` = reply 250, `false` = close silently), and the
/// connection is closed after `per_connection` messages without telling the client.
fn raw_server(
    mut after_dot: impl FnMut(usize) -> bool + Send + 'static,
    per_connection: usize,
) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            *count.lock().unwrap() += 1;
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut w: TcpStream = stream;
            let _ = w.write_all(b"220 raw.test ESMTP\r\n");
            let mut in_data = false;
            let mut on_this = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        n += 1;
                        on_this += 1;
                        if !after_dot(n) {
                            break;
                        }
                        let _ = w.write_all(b"250 2.0.0 Ok: queued as RAW\r\n");
                        if on_this >= per_connection {
                            break;
                        }
                    }
                    continue;
                }
                let upper = line.to_ascii_uppercase();
                let reply: &[u8] = if upper.starts_with("EHLO") {
                    b"250-raw.test\r\n250 8BITMIME\r\n"
                } else if upper.starts_with("DATA") {
                    in_data = true;
                    b"354 go ahead\r\n"
                } else if upper.starts_with("QUIT") {
                    let _ = w.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 ok\r\n"
                };
                let _ = w.write_all(reply);
            }
        }
    });
    (addr, connections)
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
    assert!(matches!(
        send(
            &mut t,
            "ann@donor.example",
            &message("ann@donor.example", "hi\r\n")
        ),
        Outcome::Deferred { code: None, .. }
    ));
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
