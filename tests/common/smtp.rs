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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
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
        serve_mailin(listener, "test.invalid", handler);
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
    let builder = SessionBuilder::new(name);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (builder, handler) = (builder.clone(), handler.clone());
            std::thread::spawn(move || {
                // A client that hangs up mid-session ends only its own session.
                let _ = mailin_session(stream, &builder, handler);
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
        let res = session.process(&line);
        let res = refused.lock().unwrap().take().unwrap_or(res);
        if res.action == Action::NoReply {
            continue;
        }
        res.write_to(&mut writer)?;
        writer.flush()?;
        // UpgradeTls cannot come: STARTTLS is never offered.
        if matches!(res.action, Action::Close | Action::UpgradeTls) {
            return Ok(());
        }
    }
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
