//! The endpoint in this process, on a listener bound to 127.0.0.1:0, spoken to over raw TCP:
//! what the binary's tests cannot easily send (oversized headers, multipart bodies), and
//! that a stop handle ends [`serve`].

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;
use crate::campaign::Campaign;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const URL: &str =
    "https://x.example/u?c={{ campaign.id }}&e={{ email | urlencode }}&t={{ unsubscribe_token }}";

struct Running {
    addr: SocketAddr,
    stop: Stop,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    out: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[campaign]\nid = \"gala\"\n[[segment]]\nname = \"all\"\n[message]\nfrom = \"a@x.example\"\nunsubscribe_url = \"{URL}\"\n"
        );
        let campaign = Campaign::parse(std::path::Path::new("c.toml"), &text).unwrap();
        let out = dir.path().join("unsubscribed.txt");
        let endpoint = Endpoint {
            routes: Routes::new(&[campaign]).unwrap(),
            list: SuppressionList::open(&out).unwrap(),
            secret: UnsubscribeSecret::new(KEY).unwrap(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Stop::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, log) = (stop.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                serve(listener, endpoint, Limits::default(), &stop, move |l| {
                    log.lock().unwrap().push(l.to_owned())
                })
            })
        };
        Running {
            addr,
            stop,
            thread: Some(thread),
            out,
            log,
            _dir: dir,
        }
    }

    /// Sends `raw` and reads the whole answer (the request asks to close the connection).
    fn send(&self, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn listed(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn link(email: &str) -> String {
    let token = UnsubscribeSecret::new(KEY).unwrap().token("gala", email);
    format!("/u?c=gala&e={}&t={token}", email.replace('@', "%40"))
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

#[test]
fn a_multipart_one_click_post_is_recorded() {
    let r = Running::start();
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\n\r\n{body}",
        link("bo@example.org"),
        body.len()
    );
    let answer = r.send(req.as_bytes());
    assert_eq!(status(&answer), "200", "{answer}");
    assert_eq!(r.listed(), "bo@example.org\n");
    let log = r.log.lock().unwrap().join("\n");
    assert!(
        log.contains("POST /u 200 campaign=gala domain=example.org"),
        "{log}"
    );
    assert!(!log.contains("bo@") && !log.contains("t="), "{log}");
}

#[test]
fn oversized_headers_get_431_and_other_methods_405() {
    let r = Running::start();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        link("bo@example.org"),
        "a".repeat(9000)
    );
    assert_eq!(status(&r.send(req.as_bytes())), "431");
    let req = format!(
        "DELETE {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        link("bo@example.org")
    );
    let answer = r.send(req.as_bytes());
    assert_eq!(status(&answer), "405", "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, post"),
        "{answer}"
    );
    // A repeated parameter is a damaged link, whichever copy holds the real token.
    let req = format!(
        "GET {}&t=forged HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        link("bo@example.org")
    );
    assert_eq!(status(&r.send(req.as_bytes())), "400");
    assert_eq!(r.listed(), "");
}

#[test]
fn stop_ends_serve() {
    let mut r = Running::start();
    r.stop.stop();
    let result = r.thread.take().unwrap().join().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(TcpStream::connect(r.addr).is_err(), "still listening");
}
