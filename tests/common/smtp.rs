//! A real SMTP server for tests: mailin's protocol engine on a free loopback port, recording
//! every message it accepts, with a policy deciding each reply.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mailin::response::{OK, START_DATA};
use mailin::{Action, Handler, Response, SessionBuilder};

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

/// Where in the transaction a policy is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Rcpt,
    DataEnd,
}

/// Decides a reply: `None` means the normal positive reply. Gets the step, the recipient,
/// and how many times this recipient was seen at this step before.
pub type Policy = Arc<dyn Fn(Step, &str, usize) -> Option<(u16, String)> + Send + Sync>;

#[derive(Clone)]
struct Conn {
    shared: Arc<Inner>,
    /// A client may send EHLO twice on one connection (to read its extensions); count once.
    greeted: bool,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

struct Inner {
    /// Ends of data read with the next command already in (see [`TestServer::ahead`]).
    ahead: Arc<AtomicUsize>,
    received: Mutex<Vec<Received>>,
    seen: Mutex<std::collections::HashMap<(bool, String), usize>>,
    connections: AtomicUsize,
    policy: Policy,
}

impl Inner {
    fn ask(&self, step: Step, rcpt: &str) -> Option<Response> {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let e = seen
                .entry((step == Step::Rcpt, rcpt.to_owned()))
                .or_insert(0);
            *e += 1;
            *e - 1
        };
        (self.policy)(step, rcpt, n).map(|(code, text)| Response::custom(code, text))
    }
}

impl Handler for Conn {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if !self.greeted {
            self.greeted = true;
            self.shared.connections.fetch_add(1, Ordering::SeqCst);
        }
        OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_owned();
        self.to.clear();
        self.data.clear();
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if let Some(r) = self.shared.ask(Step::Rcpt, to) {
            return r;
        }
        self.to.push(to.to_owned());
        OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.data.clear();
        START_DATA
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let rcpt = self.to.first().cloned().unwrap_or_default();
        if let Some(r) = self.shared.ask(Step::DataEnd, &rcpt) {
            return r;
        }
        self.shared.received.lock().unwrap().push(Received {
            from: self.from.clone(),
            to: self.to.clone(),
            data: std::mem::take(&mut self.data),
        });
        Response::custom(250, "2.0.0 Ok: queued as TEST123".to_owned())
    }
}

/// Settings for a transport to a plain test server on loopback `port`: no TLS, no AUTH,
/// CHUNKING used when offered, a 5 s timeout. Tests override what they are about.
pub fn loopback_settings(port: u16) -> campaign::transport::SmtpSettings {
    campaign::transport::SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        tls: campaign::transport::TlsMode::None,
        username: None,
        password: None,
        hello_name: "client.test".into(),
        timeout: std::time::Duration::from_secs(5),
        reconnect_after: 1000,
        chunking: true,
        allow_insecure_auth: false,
        ca_certificates: Vec::new(),
        skip_certificate_check: false,
    }
}

/// A running test server. It lives until the test process ends.
pub struct TestServer {
    pub port: u16,
    inner: Arc<Inner>,
}

impl TestServer {
    /// Accepts everything.
    pub fn start() -> TestServer {
        TestServer::with_policy(Arc::new(|_, _, _| None))
    }

    pub fn with_policy(policy: Policy) -> TestServer {
        TestServer::serving(policy, false)
    }

    /// [`TestServer::with_policy`], offering PIPELINING (RFC 2920) too, as postfix does: the
    /// replies to commands that came in one write go out together.
    pub fn pipelining(policy: Policy) -> TestServer {
        TestServer::serving(policy, true)
    }

    fn serving(policy: Policy, pipelining: bool) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let ahead = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Inner {
            ahead: Arc::clone(&ahead),
            received: Mutex::new(Vec::new()),
            seen: Mutex::new(Default::default()),
            connections: AtomicUsize::new(0),
            policy,
        });
        let handler = Conn {
            shared: Arc::clone(&inner),
            greeted: false,
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        serve(
            listener,
            "test.invalid",
            handler,
            pipelining.then_some(ahead),
        );
        TestServer { port, inner }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Messages received per recipient address.
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for r in self.received() {
            for t in r.to {
                *m.entry(t).or_insert(0) += 1;
            }
        }
        m
    }

    /// How many times a message's end of data arrived with the next command right behind it,
    /// in the same read: the client sent that command ahead (PIPELINING only).
    pub fn ahead(&self) -> usize {
        self.inner.ahead.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }
}

/// Serves SMTP on `listener` with mailin's protocol engine (its parser and state machine decide
/// every reply the handler does not), one thread per connection, each with its own clone of
/// `handler`. The threads live until the test process ends.
///
/// mailin is the protocol core of mailin-embedded without that crate's TLS, whose rustls
/// default features build a C crypto library; STARTTLS is not offered here (tls_smtp.rs has
/// its own TLS server).
pub fn serve_mailin<H: Handler + Clone + Send + 'static>(
    listener: TcpListener,
    name: &str,
    handler: H,
) {
    serve(listener, name, handler, None);
}

/// [`serve_mailin`], adding PIPELINING to the EHLO reply when given `ahead`, which counts the
/// ends of data read with the next command behind them.
fn serve<H: Handler + Clone + Send + 'static>(
    listener: TcpListener,
    name: &str,
    handler: H,
    pipelining: Option<Arc<AtomicUsize>>,
) {
    let builder = SessionBuilder::new(name);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (builder, handler, pipelining) =
                (builder.clone(), handler.clone(), pipelining.clone());
            std::thread::spawn(move || {
                // A client that hangs up mid-session ends only its own session.
                let _ = mailin_session(stream, &builder, handler, pipelining.as_deref());
            });
        }
    });
}

/// Ends the transaction after the end of the data whatever the reply, as RFC 5321 (4.1.1.4)
/// has it. mailin stays in its data state after a refused message and would read the
/// client's next MAIL or QUIT as message text, so a refusal is stashed for the session loop to
/// send while mailin is told the message was taken.
struct EndOfData<H> {
    inner: H,
    refused: Arc<Mutex<Option<Response>>>,
}

impl<H: Handler> Handler for EndOfData<H> {
    fn helo(&mut self, ip: IpAddr, domain: &str) -> Response {
        self.inner.helo(ip, domain)
    }

    fn mail(&mut self, ip: IpAddr, domain: &str, from: &str) -> Response {
        self.inner.mail(ip, domain, from)
    }

    fn rcpt(&mut self, to: &str) -> Response {
        self.inner.rcpt(to)
    }

    fn data_start(&mut self, domain: &str, from: &str, is8bit: bool, to: &[String]) -> Response {
        self.inner.data_start(domain, from, is8bit, to)
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.data(buf)
    }

    fn data_end(&mut self) -> Response {
        let res = self.inner.data_end();
        if res.is_error && res.action != Action::Close {
            *self.refused.lock().unwrap() = Some(res);
            return OK;
        }
        res
    }
}

/// One connection: the greeting, then a reply for each line until QUIT, an error that
/// closes, or the client hanging up.
fn mailin_session<H: Handler>(
    stream: TcpStream,
    builder: &SessionBuilder,
    handler: H,
    pipelining: Option<&AtomicUsize>,
) -> std::io::Result<()> {
    let refused = Arc::new(Mutex::new(None));
    let handler = EndOfData {
        inner: handler,
        refused: Arc::clone(&refused),
    };
    let mut session = builder.build(stream.peer_addr()?.ip(), handler);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    session.greeting().write_to(&mut writer)?;
    writer.flush()?;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if let Some(ahead) = pipelining
            && line == b".\r\n"
            && !reader.buffer().is_empty()
        {
            ahead.fetch_add(1, Ordering::SeqCst);
        }
        let res = session.process(&line);
        let res = refused.lock().unwrap().take().unwrap_or(res);
        if res.action == Action::NoReply {
            continue;
        }
        if pipelining.is_some()
            && res.code == 250
            && line.len() >= 4
            && line[..4].eq_ignore_ascii_case(b"EHLO")
        {
            let mut reply = Vec::new();
            res.write_to(&mut reply)?;
            writer.write_all(&with_pipelining(&reply))?;
        } else {
            res.write_to(&mut writer)?;
        }
        // Replies wait while more commands are already here, and leave together when the
        // client waits for them: how a server answers a pipelined group (RFC 2920 3.2).
        let ending = matches!(res.action, Action::Close | Action::UpgradeTls);
        if reader.buffer().is_empty() || ending {
            writer.flush()?;
        }
        // UpgradeTls cannot come: STARTTLS is never offered.
        if ending {
            return Ok(());
        }
    }
}

/// An EHLO reply with `250-PIPELINING` after its first line.
fn with_pipelining(reply: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(reply);
    let mut lines: Vec<String> = text.lines().map(|l| format!("250-{}", &l[4..])).collect();
    lines.insert(1, "250-PIPELINING".to_owned());
    let last = lines.len() - 1;
    lines[last].replace_range(3..4, " ");
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out.into_bytes()
}

/// A server speaking SMTP by script on one connection at a time: `after_dot` decides what
/// happens after each message (`true` = reply 250, `false` = close silently), and the
/// connection is closed after `per_connection` messages without telling the client.
pub fn raw_server(
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
