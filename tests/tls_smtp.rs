//! `transport::SmtpTransport` over TLS, against an in-process SMTP server speaking rustls with
//! a certificate authority made at test time: STARTTLS and implicit TLS sessions that log in
//! and deliver, a relay whose certificate chains to no trusted root, and a relay that refuses
//! EHLO and is greeted with HELO.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use base64::Engine as _;
use campaign::transport::settings::Password;
use campaign::transport::{Outcome, SmtpSettings, SmtpTransport, TlsMode, Transport, send_one};
use common::{Workdir, assert_code, segment, setup, stderr, stdout};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

const FROM: &str = "appeal@park.example";
const USER: &str = "appeal";
const PASSWORD: &str = "correct horse battery staple";

/// A certificate authority and a server certificate for 127.0.0.1 and localhost it signed.
struct TestCa {
    ca: CertificateDer<'static>,
    ca_pem: String,
    server: Arc<ServerConfig>,
}

fn test_ca() -> TestCa {
    ca_for(vec!["localhost".to_owned()], true)
}

/// A test CA whose server certificate carries `names` (and 127.0.0.1 when `with_ip`).
fn ca_for(names: Vec<String>, with_ip: bool) -> TestCa {
    ca_until(names, with_ip, 2031)
}

/// [`ca_for`] with a server certificate valid until 1 January of `until_year`.
fn ca_until(names: Vec<String>, with_ip: bool, until_year: i32) -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "campaign test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "campaign test relay");
    params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
    if with_ip {
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    }
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    TestCa {
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    StartTls,
    Implicit,
    /// Plain, and EHLO refused with 500 (a server without ESMTP).
    HeloOnly,
    /// Plain, offering SMTPUTF8.
    Utf8,
}

/// What the server saw: each accepted message with whether it came over TLS, and the users
/// that logged in.
#[derive(Default)]
struct Seen {
    messages: Vec<(String, bool)>,
    /// Every EHLO or HELO line, as the client sent it.
    greetings: Vec<String>,
    recipients: Vec<String>,
    logins: Vec<String>,
}

/// The server: one connection at a time on a free port; lives until the test process ends.
fn serve(mode: Mode, tls: Arc<ServerConfig>) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            match mode {
                Mode::Implicit => {
                    let conn = ServerConnection::new(Arc::clone(&tls)).unwrap();
                    session(
                        BufReader::new(StreamOwned::new(conn, tcp)),
                        mode,
                        true,
                        &log,
                    );
                }
                _ => {
                    if let Some(tcp) = session(BufReader::new(tcp), mode, false, &log) {
                        let conn = ServerConnection::new(Arc::clone(&tls)).unwrap();
                        session(
                            BufReader::new(StreamOwned::new(conn, tcp)),
                            mode,
                            true,
                            &log,
                        );
                    }
                }
            }
        }
    });
    (addr, seen)
}

/// Speaks SMTP on `s` until QUIT, a closed connection or, on a plain STARTTLS connection,
/// STARTTLS: then the TCP stream is handed back to be wrapped in TLS.
fn session<S: Read + Write + IntoTcp>(
    mut s: BufReader<S>,
    mode: Mode,
    encrypted: bool,
    seen: &Mutex<Seen>,
) -> Option<TcpStream> {
    let reply = |s: &mut BufReader<S>, text: &str| {
        let _ = s.get_mut().write_all(text.as_bytes());
        let _ = s.get_mut().flush();
    };
    if !(mode == Mode::StartTls && encrypted) {
        reply(&mut s, "220 tls.test ESMTP\r\n");
    }
    let mut data: Option<String> = None;
    let mut rcpt = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if s.read_line(&mut line).unwrap_or(0) == 0 {
            // (read_line needs UTF-8: SMTPUTF8 addresses are UTF-8.)
            return None;
        }
        let cmd = line.trim_end().to_owned();
        if let Some(body) = &mut data {
            if cmd == "." {
                let mut seen = seen.lock().unwrap();
                seen.messages.push((std::mem::take(body), encrypted));
                seen.recipients.push(std::mem::take(&mut rcpt));
                data = None;
                reply(&mut s, "250 2.0.0 Ok: queued as TLS1\r\n");
            } else {
                body.push_str(&cmd);
                body.push('\n');
            }
            continue;
        }
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            seen.lock().unwrap().greetings.push(cmd.clone());
        }
        if upper.starts_with("EHLO") {
            if mode == Mode::HeloOnly {
                reply(&mut s, "500 5.5.1 Command unrecognized\r\n");
            } else if mode == Mode::Utf8 {
                reply(&mut s, "250-tls.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
            } else if encrypted {
                reply(
                    &mut s,
                    "250-tls.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n",
                );
            } else {
                reply(&mut s, "250-tls.test\r\n250 STARTTLS\r\n");
            }
        } else if upper.starts_with("HELO") {
            reply(&mut s, "250 tls.test\r\n");
        } else if upper == "STARTTLS" && !encrypted {
            reply(&mut s, "220 2.0.0 Ready to start TLS\r\n");
            return Some(s.into_inner().into_tcp());
        } else if let Some(token) = cmd.strip_prefix("AUTH PLAIN ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .unwrap_or_default();
            if decoded == format!("\0{USER}\0{PASSWORD}").as_bytes() {
                seen.lock().unwrap().logins.push(USER.to_owned());
                reply(&mut s, "235 2.7.0 Authentication successful\r\n");
            } else {
                reply(&mut s, "535 5.7.8 Authentication credentials invalid\r\n");
            }
        } else if upper.starts_with("MAIL") || upper.starts_with("RCPT") || upper == "RSET" {
            if upper.starts_with("RCPT") {
                rcpt = cmd.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
            }
            reply(&mut s, "250 2.1.0 Ok\r\n");
        } else if upper == "DATA" {
            data = Some(String::new());
            reply(&mut s, "354 End data with <CR><LF>.<CR><LF>\r\n");
        } else if upper == "QUIT" {
            reply(&mut s, "221 2.0.0 Bye\r\n");
            return None;
        } else {
            reply(&mut s, "502 5.5.2 Error: command not recognized\r\n");
        }
    }
}

/// The TCP stream under a plain or TLS server stream.
trait IntoTcp {
    fn into_tcp(self) -> TcpStream;
}
impl IntoTcp for TcpStream {
    fn into_tcp(self) -> TcpStream {
        self
    }
}
impl IntoTcp for StreamOwned<ServerConnection, TcpStream> {
    fn into_tcp(self) -> TcpStream {
        self.sock
    }
}

fn settings(addr: SocketAddr, tls: TlsMode, ca: Option<&TestCa>) -> SmtpSettings {
    SmtpSettings {
        host: addr.ip().to_string(),
        tls,
        username: (tls != TlsMode::None).then(|| USER.to_owned()),
        password: (tls != TlsMode::None).then(|| Password::new(PASSWORD.to_owned())),
        ca_certificates: ca.map(|c| vec![c.ca.clone()]).unwrap_or_default(),
        ..common::smtp::loopback_settings(addr.port())
    }
}

fn message(to: &str) -> Vec<u8> {
    format!("From: <{FROM}>\r\nTo: <{to}>\r\nSubject: test\r\nMessage-ID: <1@park.example>\r\n\r\nhi\r\n")
        .into_bytes()
}

fn send(t: &mut SmtpTransport, to: &str) -> Outcome {
    send_one(t, FROM, to, &message(to), &mut || Ok(()))
}

#[test]
fn starttls_with_an_internal_ca_logs_in_and_delivers_encrypted() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::StartTls, Arc::clone(&ca.server));
    let mut t = SmtpTransport::new(Arc::new(settings(addr, TlsMode::StartTls, Some(&ca))));
    for to in ["ann@donor.example", "bob@donor.example"] {
        match send(&mut t, to) {
            Outcome::Accepted { reply } => assert!(reply.contains("TLS1"), "{reply}"),
            other => panic!("expected Accepted, got {other:?}"),
        }
    }
    t.close();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.logins, [USER]);
    assert_eq!(seen.messages.len(), 2);
    assert!(seen.messages.iter().all(|(_, encrypted)| *encrypted));
}

#[test]
fn implicit_tls_with_an_internal_ca_delivers() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::Implicit, Arc::clone(&ca.server));
    delivers_one(settings(addr, TlsMode::Implicit, Some(&ca)), &seen);
}

/// Connecting with `settings` halts the send: the reply code (none when no reply was had) and
/// the text the operator reads.
fn halt(settings: SmtpSettings) -> (Option<u16>, String) {
    match SmtpTransport::new(Arc::new(settings)).connect_now() {
        Err(Outcome::Halt { code, text }) => (code, text),
        other => panic!("expected Halt, got {other:?}"),
    }
}

/// One message through a transport with `settings` reaches the server, and only one.
fn delivers_one(settings: SmtpSettings, seen: &Mutex<Seen>) {
    let mut t = SmtpTransport::new(Arc::new(settings));
    assert!(matches!(
        send(&mut t, "ann@donor.example"),
        Outcome::Accepted { .. }
    ));
    t.close();
    assert_eq!(seen.lock().unwrap().messages.len(), 1);
}

#[test]
fn a_certificate_from_an_unknown_authority_halts_and_names_the_fix() {
    let ca = test_ca();
    for (mode, tls) in [
        (Mode::StartTls, TlsMode::StartTls),
        (Mode::Implicit, TlsMode::Implicit),
    ] {
        let (addr, seen) = serve(mode, Arc::clone(&ca.server));
        // Without ca_file: only the built-in roots, which the test CA is not among.
        let (code, text) = halt(settings(addr, tls, None));
        assert_eq!(code, None);
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(text.contains("ca_file"), "{text}");
        assert!(seen.lock().unwrap().logins.is_empty(), "no password sent");
    }
}

/// Each way a TLS session can fail names what failed and the setting to look at.
#[test]
fn an_expired_certificate_or_a_plain_port_for_implicit_tls_halts_and_says_so() {
    let old = ca_until(vec!["localhost".to_owned()], true, 2021);
    let (addr, _) = serve(Mode::Implicit, Arc::clone(&old.server));
    let (code, text) = halt(settings(addr, TlsMode::Implicit, Some(&old)));
    assert_eq!(code, None);
    assert!(text.contains("certificate expired"), "{text}");
    let ca = test_ca();
    let (addr, seen) = serve(Mode::StartTls, Arc::clone(&ca.server));
    let (code, text) = halt(settings(addr, TlsMode::Implicit, Some(&ca)));
    assert_eq!(code, None);
    assert!(
        text.contains("answered in plain text") && text.contains("tls = \"starttls\""),
        "{text}"
    );
    assert!(seen.lock().unwrap().messages.is_empty());
}

/// `tls = "starttls"` never falls back to plain text: a relay that does not offer STARTTLS is
/// refused before any login or message. The relay saw the configured EHLO name.
#[test]
fn starttls_not_offered_is_refused_and_the_hello_name_is_the_configured_one() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::Utf8, Arc::clone(&ca.server));
    let (_, text) = halt(settings(addr, TlsMode::StartTls, Some(&ca)));
    assert!(text.contains("does not offer STARTTLS"), "{text}");
    let seen = seen.lock().unwrap();
    assert!(seen.logins.is_empty() && seen.messages.is_empty());
    assert_eq!(seen.greetings, ["EHLO client.test"]);
}

#[test]
fn a_relay_that_refuses_ehlo_is_greeted_with_helo() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::HeloOnly, Arc::clone(&ca.server));
    let mut t = SmtpTransport::new(Arc::new(settings(addr, TlsMode::None, None)));
    assert_eq!(t.helo_only(), None);
    assert!(matches!(
        send(&mut t, "ann@donor.example"),
        Outcome::Accepted { .. }
    ));
    assert_eq!(t.helo_only(), Some(true));
    // Without extensions, an international address cannot go (no SMTPUTF8).
    match send(&mut t, "josé@donor.example") {
        Outcome::Deferred { text, .. } => assert!(text.contains("SMTPUTF8"), "{text}"),
        other => panic!("expected Deferred, got {other:?}"),
    }
    t.close();
    assert_eq!(seen.lock().unwrap().messages.len(), 1);
}

/// The binary checks a relay against the operating system's trust store: with the test CA in
/// it (SSL_CERT_FILE, which the store reader honours), a real send over implicit TLS logs in
/// and delivers; without, it stops before sending, naming the reason and the setting.
#[test]
fn a_send_trusts_the_systems_store() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::Implicit, Arc::clone(&ca.server));
    let w: Workdir = setup("email,name,total\nann@example.org,Ann,10\nbob@example.org,Bob,20\n");
    segment(&w);
    let store = w.write("system-ca.pem", &ca.ca_pem);
    let send = |store: &std::path::Path| {
        w.command()
            .args(["send", "run"])
            .env("CAMPAIGN_SMTP_URL", format!("smtps://{USER}@{addr}"))
            .env("CAMPAIGN_SMTP_PASSWORD", PASSWORD)
            .env(
                "CAMPAIGN_UNSUBSCRIBE_SECRET",
                "0123456789abcdef0123456789abcdef",
            )
            .env("SSL_CERT_FILE", store)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap()
    };
    let empty = w.write("empty.pem", "");
    let o = send(&empty);
    assert_code(&o, 6);
    assert!(
        stderr(&o).contains("UnknownIssuer") && stderr(&o).contains("ca_file"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("refused the sender"), "{}", stderr(&o));
    let o = send(&store);
    assert_code(&o, 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 2);
    assert!(seen.messages.iter().all(|(_, encrypted)| *encrypted));
    // The probe's session and the one worker's: two donors are one lease, so one worker.
    assert_eq!(seen.logins.len(), 2);
}

#[test]
fn a_refused_login_halts_with_the_servers_words() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::StartTls, Arc::clone(&ca.server));
    let mut s = settings(addr, TlsMode::StartTls, Some(&ca));
    s.password = Some(Password::new("wrong".to_owned()));
    let (code, text) = halt(s);
    assert_eq!(code, Some(535));
    assert!(
        text.contains("log in as") && text.contains("credentials invalid"),
        "{text}"
    );
    assert!(seen.lock().unwrap().logins.is_empty());
}

#[test]
fn skipping_the_certificate_check_takes_any_certificate() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::Implicit, Arc::clone(&ca.server));
    let mut s = settings(addr, TlsMode::Implicit, None);
    s.skip_certificate_check = true;
    delivers_one(s, &seen);
}

/// A donor whose address needs SMTPUTF8 waits (deferred, not failed) while the relay lacks
/// it, and a later run through a relay that offers it sends them, once.
#[test]
fn a_donor_needing_smtputf8_waits_for_a_relay_that_has_it() {
    let ca = test_ca();
    let (plain, _) = serve(Mode::HeloOnly, Arc::clone(&ca.server));
    let (utf8, seen) = serve(Mode::Utf8, Arc::clone(&ca.server));
    let w: Workdir = setup("email,name,total\njosé@example.org,José,10\nann@example.org,Ann,20\n");
    segment(&w);
    let send = |addr: SocketAddr| {
        w.command()
            .args(["send", "run", "--retry-delay", "0"])
            .env("CAMPAIGN_SMTP_URL", format!("smtp://{addr}"))
            .env(
                "CAMPAIGN_UNSUBSCRIBE_SECRET",
                "0123456789abcdef0123456789abcdef",
            )
            .output()
            .unwrap()
    };
    let dry = w.run(&["send", "run", "--dry-run"]);
    assert_code(&dry, 0);
    assert!(
        stdout(&dry).contains("1 donors have non-ASCII characters before the @"),
        "{}",
        stdout(&dry)
    );
    let o = send(plain);
    assert_code(&o, 5);
    let status = w.run(&["status", "run", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let sum = |k: &str| {
        status["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("sent"), sum("deferred"), sum("failed")), (1, 1, 0));
    let o = send(utf8);
    assert_code(&o, 0);
    let got = seen.lock().unwrap();
    assert_eq!(got.recipients, ["josé@example.org"]);
}

/// `check --smtp` opens the session `send` would, says what the relay offers, and sends
/// nothing; a refusal exits 6, an unreachable relay 5.
#[test]
fn check_smtp_reports_the_relay_without_sending() {
    let ca = test_ca();
    let (addr, seen) = serve(Mode::StartTls, Arc::clone(&ca.server));
    let w: Workdir = setup("email,name,total\nann@example.org,Ann,10\n");
    let store = w.write("system-ca.pem", &ca.ca_pem);
    let check = |url: String, store: &std::path::Path| {
        w.command()
            .args(["check", "campaign.toml", "--smtp"])
            .env("CAMPAIGN_SMTP_URL", url)
            .env("CAMPAIGN_SMTP_PASSWORD", PASSWORD)
            .env("SSL_CERT_FILE", store)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap()
    };
    let o = check(format!("smtp+starttls://{USER}@{addr}"), &store);
    assert_code(&o, 0);
    let out = stdout(&o);
    for want in [
        "ready; nothing was sent",
        "TLS: yes, certificate verified",
        "login: accepted as \"appeal\"",
        "PIPELINING",
        "AUTH PLAIN LOGIN",
        "certificate: CN=campaign test relay, issued by CN=campaign test CA, expires 2031-01-01 (in ",
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    assert!(seen.lock().unwrap().messages.is_empty());
    let o = check(
        format!("smtp+starttls://{USER}@{addr}"),
        &w.write("none.pem", ""),
    );
    assert_code(&o, 6);
    assert!(stderr(&o).contains("UnknownIssuer"), "{}", stderr(&o));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = check(format!("smtp://{dead}"), &store);
    assert_code(&o, 5);
    assert!(
        stderr(&o).contains("cannot reach the relay"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_certificate_for_another_name_halts_and_says_so() {
    let ca = ca_for(vec!["relay.other.example".to_owned()], false);
    let (addr, _) = serve(Mode::Implicit, Arc::clone(&ca.server));
    let (code, text) = halt(settings(addr, TlsMode::Implicit, Some(&ca)));
    assert_eq!(code, None);
    assert!(text.contains("not valid for name"), "{text}");
    assert!(text.contains("host name matches"), "{text}");
}
