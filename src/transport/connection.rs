//! The lowest layer of the SMTP conversation: one TCP or TLS (rustls) stream, the greeting,
//! commands written and replies read.
//!
//! Owns the greeting (EHLO, and HELO when the relay refuses EHLO with 500 or 502, as RFC 5321
//! §4.1.4 allows: no extensions then), reading the extensions a relay offers, STARTTLS, AUTH
//! PLAIN and LOGIN, TLS with the roots it is given, and reading replies, single- and
//! multi-line. lettre's `SmtpConnection` sends EHLO as part of connecting and drops the
//! connection when it is refused, which left no way to fall back, and keeps its stream
//! private. It never decides what a reply means (see [`super::reply`]) and never puts the
//! password in an error.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lettre::transport::smtp::commands::{Ehlo, Quit, Starttls};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::settings::Password;

/// The longest reply line read, and the most lines, before the reply is taken as garbage.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 200;
/// How long a goodbye waits for its 221. Nothing depends on that reply, and a relay that
/// never gives it (one seen here reads QUIT as message text after refusing a message) would
/// otherwise hold every connection for the whole command timeout at the end of a send.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// One reply: its code and its lines' text (without code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text, lines joined by spaces.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// Why a command got no positive reply.
#[derive(Debug)]
pub enum SmtpError {
    /// The server answered with a 4xx or 5xx.
    Refused(Reply),
    /// The connection could not be opened, or TLS could not be set up on it (lettre's words;
    /// `tls` says it was the TLS handshake).
    Connect {
        /// What went wrong.
        text: String,
        /// The TLS handshake failed (a bad certificate, or a server not speaking TLS).
        tls: bool,
    },
    /// Reading or writing failed, timed out, or the server closed the connection.
    Io(io::Error),
    /// The server sent something that is not an SMTP reply.
    Garbled(String),
}

impl SmtpError {
    /// The reply code, when the server replied.
    pub fn code(&self) -> Option<u16> {
        match self {
            SmtpError::Refused(r) => Some(r.code),
            _ => None,
        }
    }

    /// The server's text for a refusal, else what went wrong.
    pub fn text(&self) -> String {
        match self {
            SmtpError::Refused(r) => r.text(),
            other => other.to_string(),
        }
    }

    /// The TLS handshake failed, or a server not speaking TLS answered one.
    pub fn is_tls(&self) -> bool {
        match self {
            SmtpError::Connect { tls, .. } => *tls,
            SmtpError::Io(e) => e.kind() == io::ErrorKind::InvalidData,
            _ => false,
        }
    }
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpError::Refused(r) => write!(f, "{} {}", r.code, r.text()),
            SmtpError::Connect { text, .. } => f.write_str(text),
            SmtpError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "no reply before the timeout ({e})")
            }
            SmtpError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the server closed the connection")
            }
            SmtpError::Io(e) => write!(f, "{e}"),
            SmtpError::Garbled(what) => write!(f, "the server's reply is not SMTP: {what}"),
        }
    }
}

/// How TLS is set up for one relay: the roots its certificate must chain to, and the name it
/// must carry.
#[derive(Clone)]
pub struct TlsSetup {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// TLS to `host`, trusting the operating system's store (the built-in Mozilla roots where
    /// it has none) and `extra` (an internal CA); with `check_certificate` false, trusting any
    /// certificate at all.
    pub fn new(
        host: &str,
        extra: &[CertificateDer<'static>],
        check_certificate: bool,
    ) -> Result<TlsSetup, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = if check_certificate {
            let mut roots = system_roots().clone();
            for cert in extra {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("a certificate authority cannot be used: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        Ok(TlsSetup {
            config: Arc::new(config),
            name,
        })
    }
}

/// Accepts any certificate (`[smtp] dangerous_skip_certificate_check`), still checking that
/// the relay holds the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The operating system's trust store, read once per process; the built-in Mozilla roots
/// where it yields none (a minimal container without ca-certificates).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

/// The connection's bytes: plain TCP, or TLS over it.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only while a TCP stream is being upgraded.
    Gone,
}

impl Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(t) => Some(t),
            Stream::Tls(t) => Some(&t.sock),
            Stream::Gone => None,
        }
    }

    /// TLS over `tcp`, with the handshake done now, so its failure is the connection's.
    fn tls(tcp: TcpStream, setup: &TlsSetup) -> Result<Stream, SmtpError> {
        let failed = |text: String| SmtpError::Connect { text, tls: true };
        let conn = ClientConnection::new(Arc::clone(&setup.config), setup.name.clone())
            .map_err(|e| failed(e.to_string()))?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                // A plain-text greeting read as a TLS record: the port speaks SMTP first.
                let plain = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| {
                        matches!(
                            r,
                            rustls::Error::InvalidMessage(
                                rustls::InvalidMessage::InvalidContentType
                            )
                        )
                    });
                if plain {
                    failed(format!(
                        "TLS failed: the relay answered in plain text, so this port does not take implicit TLS; use tls = \"starttls\" (usually port 587) or the relay's implicit-TLS port (usually 465) ({e})"
                    ))
                } else {
                    failed(format!("TLS failed: {e}"))
                }
            })?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(t) => t.read(buf),
            Stream::Tls(t) => t.read(buf),
            Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(t) => t.write(buf),
            Stream::Tls(t) => t.write(buf),
            Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(t) => t.flush(),
            Stream::Tls(t) => t.flush(),
            Stream::Gone => Ok(()),
        }
    }
}

/// A TCP connection to `host:port`, trying each address it resolves to.
fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, SmtpError> {
    let failed = |text: String| SmtpError::Connect { text, tls: false };
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| failed(format!("cannot resolve {host}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                tcp.set_read_timeout(Some(timeout))
                    .and_then(|()| tcp.set_write_timeout(Some(timeout)))
                    .map_err(SmtpError::Io)?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(failed(match last {
        Some(e) => format!("Connection error: {e}"),
        None => format!("{host} resolves to no address"),
    }))
}

/// What the relay offers, from its EHLO reply (nothing after a HELO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// The AUTH mechanisms offered, upper case.
    pub auth: Vec<String>,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// SIZE (RFC 1870): the largest message the relay takes, when it says.
    pub size: Option<u64>,
    /// The relay refused EHLO and was greeted with HELO.
    pub helo_only: bool,
}

impl Extensions {
    /// Reads the extension lines of an EHLO reply (every line after the first).
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "8BITMIME" => ext.eight_bit_mime = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "SIZE" => ext.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                "AUTH" => ext.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        ext
    }
}

/// A reply line's code and whether more lines of its reply follow (`250-`), given the line
/// without its CRLF; `None` when it is no reply line (no three-digit code from 200 to 599).
fn reply_line(line: &[u8]) -> Option<(u16, bool)> {
    let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit))?;
    let code = digits
        .iter()
        .fold(0, |code, d| code * 10 + u16::from(d - b'0'));
    (200..600)
        .contains(&code)
        .then(|| (code, line.get(3) == Some(&b'-')))
}

/// Whether `buffer` begins with `n` whole replies that [`Connection::read_reply`] reads as
/// `Ok`: well formed, 2xx or 3xx, lines no longer than it reads.
fn replies_complete(buffer: &[u8], n: usize) -> bool {
    let (mut seen, mut lines) = (0, 0);
    for line in buffer.split_inclusive(|&b| b == b'\n') {
        if seen == n {
            break;
        }
        // A partial line (its end still on the wire), an overlong, garbled or negative
        // one: the caller reads it the ordinary way, and may have to wait or fail.
        if !line.ends_with(b"\n") || line.len() > MAX_REPLY_LINE {
            return false;
        }
        let end = line
            .iter()
            .rposition(|&b| b != b'\r' && b != b'\n')
            .map_or(0, |i| i + 1);
        match reply_line(&line[..end]) {
            Some((code, _)) if code >= 400 => return false,
            Some((_, true)) => {
                lines += 1;
                if lines >= MAX_REPLY_LINES {
                    return false;
                }
            }
            Some((_, false)) => (seen, lines) = (seen + 1, 0),
            None => return false,
        }
    }
    seen == n
}

/// One connection to the relay.
pub struct Connection {
    stream: BufReader<Stream>,
    extensions: Extensions,
    /// A read or write failed: the conversation's state is unknown, so it is not reused.
    broken: bool,
    /// When the last reply was read: how long the relay has had to close the connection
    /// without this client noticing.
    last_reply: Instant,
}

impl Connection {
    /// Connects (TLS from the first byte when `implicit_tls` is given), reads the greeting
    /// and greets the relay.
    pub fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        implicit_tls: Option<&TlsSetup>,
        hello: &ClientId,
    ) -> Result<Connection, SmtpError> {
        let tcp = connect_tcp(host, port, timeout)?;
        let stream = match implicit_tls {
            Some(setup) => Stream::tls(tcp, setup)?,
            None => Stream::Tcp(tcp),
        };
        let mut conn = Connection {
            stream: BufReader::new(stream),
            extensions: Extensions::default(),
            broken: false,
            last_reply: Instant::now(),
        };
        match conn.read_reply() {
            // A port that never greets is most often not an SMTP port, or the wrong TLS mode.
            Err(SmtpError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(SmtpError::Connect {
                    text: format!(
                        "no SMTP greeting from {host}:{port} within {} s; is this an SMTP port? (587 is STARTTLS, 465 implicit TLS: tls = \"tls\")",
                        timeout.as_secs_f64()
                    ),
                    tls: false,
                });
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        conn.greet(hello)?;
        Ok(conn)
    }

    /// EHLO, or HELO when the relay refuses EHLO with 500 or 502.
    fn greet(&mut self, hello: &ClientId) -> Result<(), SmtpError> {
        match self.command(Ehlo::new(hello.clone())) {
            Ok(reply) => self.extensions = Extensions::from_ehlo(&reply),
            Err(SmtpError::Refused(r)) if matches!(r.code, 500 | 502) => {
                self.command(format_args!("HELO {hello}\r\n"))?;
                self.extensions = Extensions {
                    helo_only: true,
                    ..Extensions::default()
                };
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// What the relay offered when greeted.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The connection is TLS.
    pub fn encrypted(&self) -> bool {
        matches!(self.stream.get_ref(), Stream::Tls(_))
    }

    /// The relay's own certificate, when the session is encrypted.
    pub fn certificate(&self) -> Option<super::certificate::CertificateInfo> {
        let Stream::Tls(tls) = self.stream.get_ref() else {
            return None;
        };
        let der = tls.conn.peer_certificates()?.first()?;
        super::certificate::CertificateInfo::from_der(der)
    }

    /// Upgrades the connection with STARTTLS and greets the relay again, as RFC 3207 asks.
    pub fn starttls(&mut self, tls: &TlsSetup, hello: &ClientId) -> Result<(), SmtpError> {
        self.command(Starttls)?;
        let plain = std::mem::replace(&mut self.stream, BufReader::new(Stream::Gone));
        let Stream::Tcp(tcp) = plain.into_inner() else {
            self.broken = true;
            return Err(SmtpError::Garbled(
                "STARTTLS on a connection already encrypted".into(),
            ));
        };
        match Stream::tls(tcp, tls) {
            Ok(stream) => self.stream = BufReader::new(stream),
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        }
        self.greet(hello)
    }

    /// Logs in with PLAIN, else LOGIN, whichever the relay offers first in that order; `None`
    /// when it offers neither.
    pub fn auth(&mut self, user: &str, password: &Password) -> Option<Result<(), SmtpError>> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let offers = |m: &str| self.extensions.auth.iter().any(|a| a == m);
        let (plain, login) = (offers("PLAIN"), offers("LOGIN"));
        if plain {
            let token = b64(&format!("\0{user}\0{}", password.expose()));
            return Some(
                self.command(format_args!("AUTH PLAIN {token}\r\n"))
                    .map(drop),
            );
        }
        if login {
            let steps = ["AUTH LOGIN".to_owned(), b64(user), b64(password.expose())];
            for step in steps {
                if let Err(e) = self.command(format_args!("{step}\r\n")) {
                    return Some(Err(e));
                }
            }
            return Some(Ok(()));
        }
        None
    }

    /// Writes `command` and reads its reply; a 4xx or 5xx is [`SmtpError::Refused`].
    pub fn command(&mut self, command: impl fmt::Display) -> Result<Reply, SmtpError> {
        self.write(command.to_string().as_bytes())?;
        self.read_reply()
    }

    /// Writes bytes as they are.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let stream = self.stream.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| {
                self.broken = true;
                SmtpError::Io(e)
            })
    }

    /// Reads one reply; a 4xx or 5xx is [`SmtpError::Refused`].
    pub fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read =
                io::Read::take(&mut self.stream, MAX_REPLY_LINE as u64).read_until(b'\n', &mut buf);
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    self.broken = true;
                    return Err(SmtpError::Io(e));
                }
            };
            if n == 0 {
                self.broken = true;
                return Err(SmtpError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\r', '\n']);
            let Some((code, more)) = reply_line(line.as_bytes()) else {
                self.broken = true;
                return Err(SmtpError::Garbled(format!("{line:?}")));
            };
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if !more {
                self.last_reply = Instant::now();
                let reply = Reply { code, lines };
                return if code < 400 {
                    Ok(reply)
                } else {
                    Err(SmtpError::Refused(reply))
                };
            }
            if lines.len() >= MAX_REPLY_LINES || !buf.ends_with(b"\n") {
                self.broken = true;
                return Err(SmtpError::Garbled(
                    "a reply of too many or too long lines".into(),
                ));
            }
        }
    }

    /// Whether the next `n` replies have already arrived (they are in the read buffer, so
    /// reading them will not wait for the relay) and [`Connection::read_reply`] will return
    /// each as `Ok` (2xx or 3xx, well formed). Reads nothing.
    pub fn replies_waiting(&self, n: usize) -> bool {
        replies_complete(self.stream.buffer(), n)
    }

    /// A read or write failed: do not reuse the connection.
    pub fn has_broken(&self) -> bool {
        self.broken
    }

    /// Asks the kernel to acknowledge what the relay sends next at once, not after the
    /// delayed-ACK timer (Linux; elsewhere nothing). Needed after a BDAT transaction: postfix
    /// smtpd sends the MAIL and RCPT replies as soon as it must read beyond its 4 KB buffer
    /// into the chunk, and with that small segment unacknowledged Nagle's algorithm holds its
    /// 250 for the chunk until our delayed ACK, 40 ms later: 47 ms per message measured here
    /// against postfix 3.7, 0.75 ms with this. The kernel drops the mode again once replies
    /// and commands alternate, so it is asked for once per transaction. A failure only costs
    /// time, so it is ignored.
    pub fn ack_promptly(&self) {
        #[cfg(target_os = "linux")]
        if let Some(tcp) = self.stream.get_ref().tcp() {
            let _ = rustix::net::sockopt::set_tcp_quickack(tcp, true);
        }
    }

    /// How long since the last reply was read (since the greeting, on a new connection).
    pub fn idle(&self) -> Duration {
        self.last_reply.elapsed()
    }

    /// Says goodbye; a failure changes nothing (the connection is dropped either way).
    pub fn quit(&mut self) {
        if !self.broken {
            if let Some(tcp) = self.stream.get_ref().tcp() {
                let wait = tcp.read_timeout().ok().flatten().unwrap_or(QUIT_WAIT);
                let _ = tcp.set_read_timeout(Some(wait.min(QUIT_WAIT)));
            }
            let _ = self.command(Quit);
        }
    }

    /// Drops the connection without a word (mid-DATA a QUIT would become body text).
    pub fn abort(&mut self) {
        self.broken = true;
        if let Some(tcp) = self.stream.get_ref().tcp() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("extensions", &self.extensions)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies counted as waiting are exactly those `read_reply` would read as `Ok` without
    /// touching the socket; anything else (a line still arriving, a refusal, a line it would
    /// call garbled or read in two) leaves the caller to read the ordinary way.
    #[test]
    fn replies_waiting_are_whole_and_positive() {
        let three = b"250 2.0.0 Ok: queued\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n";
        assert!(replies_complete(three, 3));
        assert!(replies_complete(three, 2));
        assert!(!replies_complete(three, 4), "only three are there");
        let multi = b"250-first\r\n250 last\r\n250\r\n354 go\n";
        assert!(replies_complete(multi, 3));
        assert!(!replies_complete(b"250 Ok\r\n250 Ok\r\n354 End da", 3));
        assert!(!replies_complete(b"250 Ok\r\n250-Ok\r\n", 2));
        for bad in [
            &b"250 Ok\r\n550 5.1.1 no such user\r\n554 no valid recipients\r\n"[..],
            b"250 Ok\r\n421 closing\r\n250 Ok\r\n",
            b"250 Ok\r\n2 ok\r\n354 go\r\n",
            b"250 Ok\r\n2x0 ok\r\n354 go\r\n",
            b"250 Ok\r\n199 ok\r\n354 go\r\n",
        ] {
            assert!(
                !replies_complete(bad, 3),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"250 ".to_vec();
        long.resize(MAX_REPLY_LINE + 1, b'x');
        long.extend_from_slice(b"\r\n250 Ok\r\n354 go\r\n");
        assert!(!replies_complete(&long, 3), "read_reply reads it in two");
        let mut many = b"250-x\r\n".repeat(MAX_REPLY_LINES);
        many.extend_from_slice(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
        assert!(!replies_complete(&many, 3), "read_reply refuses it");
    }

    #[test]
    fn extensions_are_read_from_ehlo_lines() {
        let reply = Reply {
            code: 250,
            lines: [
                "relay.test greets you PIPELINING",
                "8BITMIME",
                "pipelining",
                "AUTH=LOGIN PLAIN",
                "SMTPUTF8",
                "STARTTLS",
                "CHUNKING",
                "SIZE 10240000",
            ]
            .map(String::from)
            .to_vec(),
        };
        let ext = Extensions::from_ehlo(&reply);
        assert!(ext.pipelining && ext.eight_bit_mime && ext.smtputf8 && ext.starttls);
        assert_eq!(ext.auth, ["LOGIN", "PLAIN"]);
        assert!(ext.chunking);
        assert_eq!(ext.size, Some(10_240_000));
        assert!(!ext.helo_only);
        // The first line is the server's name, not an extension; a keyword is a whole word.
        for lines in [
            &["PIPELINING is what I say"][..],
            &["sink.test", "8BITMIME", "XPIPELINING", "AUTH PIPELINING"],
        ] {
            let reply = Reply {
                code: 250,
                lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            };
            assert!(!Extensions::from_ehlo(&reply).pipelining, "{lines:?}");
        }
    }
}
