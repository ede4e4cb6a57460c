//! `campaign unsubscribe-server`: the real binary on a free loopback port (`--listen
//! 127.0.0.1:0`, the port read from its `listening on` line), spoken to with a real HTTP
//! client, with tokens made by the library from the secret the child was given.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use campaign::unsubscribe::UnsubscribeSecret;
use common::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const CAMPAIGN_ID: &str = "spring-gala-2026";
const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// A second campaign at the fixture's path, its parameters named differently.
const AUTUMN: &str = r#"
[campaign]
id = "autumn-2026"
[[segment]]
name = "all"
[message]
from = "Friends of Riverside Park <appeal@riverside-park.example>"
unsubscribe_url = "https://riverside-park.example/unsubscribe?id={{ campaign.id }}&a={{ email }}&k={{ unsubscribe_token }}"
"#;

/// The running binary; killed when dropped, whatever the test did.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server on the fixture campaign plus `extra` flags, with the secret in the
    /// environment, and waits for its address.
    fn start(w: &Workdir, extra: &[&str]) -> Server {
        let mut cmd = w.command();
        cmd.env(UnsubscribeSecret::ENV, SECRET);
        Server::start_with(w, cmd, extra)
    }

    fn start_with(w: &Workdir, mut cmd: std::process::Command, extra: &[&str]) -> Server {
        let fixture = fixture("campaign.toml");
        let child = cmd
            .args(["unsubscribe-server", "--listen", "127.0.0.1:0", "--out"])
            .arg(w.path("unsubscribed.txt"))
            .arg("--campaign")
            .arg(&fixture)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting campaign unsubscribe-server");
        let mut server = Server {
            child,
            base: String::new(),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        let stderr = server.child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        let log = Arc::clone(&server.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://") {
                    let _ = tx.send(line[i + "listening on ".len()..].to_owned());
                }
                log.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => server.base = base,
            Err(_) => panic!(
                "the server printed no address; stderr:\n{}",
                server.log.lock().unwrap().join("\n")
            ),
        }
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once it holds `needle` (the child writes it before answering, but this
    /// process reads the pipe on another thread), at most 10 s.
    fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit (after a signal), at most 20 s.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not exit; stderr:\n{}", self.log());
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn token(campaign: &str, normalised: &str) -> String {
    UnsubscribeSecret::new(SECRET)
        .unwrap()
        .token(campaign, normalised)
}

/// The fixture's link for `email` as typed, with the token for its normalised form.
fn link(s: &Server, email: &str) -> String {
    let normalised = email.trim().to_lowercase();
    format!(
        "{}/unsubscribe?c={CAMPAIGN_ID}&e={}&t={}",
        s.base,
        encode(email),
        token(CAMPAIGN_ID, &normalised)
    )
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02x}"),
        })
        .collect()
}

/// POSTs `body` as a form; the status and the page.
fn post(url: &str, body: &str) -> (u16, String) {
    let mut resp = agent()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(body)
        .expect("POST");
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), text)
}

fn get(url: &str) -> (u16, String) {
    let mut resp = agent().get(url).call().expect("GET");
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), text)
}

fn listed(w: &Workdir) -> String {
    std::fs::read_to_string(w.path("unsubscribed.txt")).unwrap_or_default()
}

#[test]
fn a_one_click_post_lists_the_normalised_address() {
    let w = Workdir::new();
    let s = Server::start(&w, &[]);
    let url = link(&s, " Zoe@Example.org");
    let (status, page) = post(&url, ONE_CLICK);
    assert_eq!(status, 200, "{page}\n{}", s.log());
    assert!(page.contains("zoe@example.org"), "{page}");
    assert_eq!(listed(&w), "zoe@example.org\n");
    let line = "POST /unsubscribe 200 campaign=spring-gala-2026 domain=example.org";
    let log = s.log_with(line);
    assert!(log.contains(line), "{log}");
    // Neither the address, the token nor the query reach the log.
    assert!(!log.to_lowercase().contains("zoe"), "{log}");
    assert!(
        !log.contains(&token(CAMPAIGN_ID, "zoe@example.org")),
        "{log}"
    );
    assert!(!log.contains("t="), "{log}");
}

#[test]
fn forged_tokens_other_campaigns_and_wrong_bodies_list_nobody() {
    let w = Workdir::new();
    let s = Server::start(&w, &[]);
    let good = token(CAMPAIGN_ID, "bo@example.org");
    let at = |query: &str| format!("{}/unsubscribe?{query}", s.base);

    // A token for another address, and one character changed.
    let other = token(CAMPAIGN_ID, "eve@example.org");
    let forged = format!("A{}", &good[1..]);
    for t in [&other, &forged] {
        let q = format!("c={CAMPAIGN_ID}&e=bo%40example.org&t={t}");
        assert_eq!(post(&at(&q), ONE_CLICK).0, 403, "{t}");
    }
    // A campaign this server does not serve, with a token that is valid for it.
    let q = format!(
        "c=winter-2025&e=bo%40example.org&t={}",
        token("winter-2025", "bo@example.org")
    );
    assert_eq!(post(&at(&q), ONE_CLICK).0, 404);
    // The right link, the wrong body.
    let q = format!("c={CAMPAIGN_ID}&e=bo%40example.org&t={good}");
    for body in ["", "List-Unsubscribe=Yes", "unsubscribe=1"] {
        assert_eq!(post(&at(&q), body).0, 400, "{body:?}");
    }
    // No token, no address, an address that is not one.
    for q in [
        format!("c={CAMPAIGN_ID}&e=bo%40example.org"),
        format!("c={CAMPAIGN_ID}&t={good}"),
        format!("c={CAMPAIGN_ID}&e=not-an-address&t={good}"),
    ] {
        assert_eq!(post(&at(&q), ONE_CLICK).0, 400, "{q}");
    }
    // Another path, another method.
    let q = format!("c={CAMPAIGN_ID}&e=bo%40example.org&t={good}");
    assert_eq!(
        post(&format!("{}/unsubscribe/?{q}", s.base), ONE_CLICK).0,
        404
    );
    let put = agent().put(&at(&q)).send(ONE_CLICK).unwrap();
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(listed(&w), "");
    // Still answering after all that.
    assert_eq!(post(&at(&q), ONE_CLICK).0, 200);
    assert_eq!(listed(&w), "bo@example.org\n");
}

#[test]
fn get_shows_a_button_that_posts_and_lists_nobody() {
    let w = Workdir::new();
    let s = Server::start(&w, &[]);
    let url = link(&s, "bo@example.org");
    let mut resp = agent().get(&url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(resp.headers().get("location").is_none());
    assert!(resp.headers().get("set-cookie").is_none());
    let page = resp.body_mut().read_to_string().unwrap();
    assert!(page.contains("<form method=\"post\""), "{page}");
    assert!(
        page.contains("name=\"List-Unsubscribe\" value=\"One-Click\""),
        "{page}"
    );
    let path_and_query = &url[s.base.len()..];
    let action = path_and_query.replace('&', "&amp;");
    assert!(page.contains(&format!("action=\"{action}\"")), "{page}");
    // Scanners that fetch the link, however often, unsubscribe nobody.
    assert_eq!(get(&url).0, 200);
    assert_eq!(listed(&w), "");
    // The button does.
    assert_eq!(
        post(&format!("{}{path_and_query}", s.base), ONE_CLICK).0,
        200
    );
    assert_eq!(listed(&w), "bo@example.org\n");
    // A forged link, or one of a campaign not served, gets no button.
    let forged = url.replace("&t=", "&t=A");
    let other = url.replace("c=spring", "c=xspring");
    for (url, expected) in [(forged, 403), (other, 404)] {
        let (status, page) = get(&url);
        assert_eq!(status, expected, "{url}");
        assert!(!page.contains("<form"), "{page}");
    }
}

#[test]
fn fifty_concurrent_unsubscribes_are_fifty_whole_lines() {
    let w = Workdir::new();
    let s = Server::start(&w, &[]);
    let addresses: Vec<String> = (0..50)
        .map(|i| format!("donor{i:02}@example{}.org", i % 7))
        .collect();
    std::thread::scope(|scope| {
        for a in &addresses {
            let url = link(&s, a);
            scope.spawn(move || {
                let (status, page) = post(&url, ONE_CLICK);
                assert_eq!(status, 200, "{page}");
            });
        }
    });
    let text = listed(&w);
    assert!(text.ends_with('\n'));
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50, "{text}");
    lines.sort_unstable();
    let mut expected: Vec<&str> = addresses.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(lines, expected);
}

#[test]
fn an_oversized_body_is_refused_with_413() {
    let w = Workdir::new();
    let s = Server::start(&w, &[]);
    let body = format!("{ONE_CLICK}&pad={}", "x".repeat(5000));
    assert_eq!(post(&link(&s, "bo@example.org"), &body).0, 413);
    assert_eq!(listed(&w), "");
}

#[test]
fn slow_clients_are_dropped_after_the_timeouts() {
    let w = Workdir::new();
    let s = Server::start(&w, &["--header-timeout", "1", "--body-timeout", "1"]);
    let addr = s.base.trim_start_matches("http://");

    // Connects and sends nothing: the connection is closed after about a second.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = silent.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        read.is_ok() && waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "{read:?} after {waited:?}"
    );

    // Sends the headers of a POST but never its body: 408, nothing written.
    let url = link(&s, "bo@example.org");
    let path_and_query = &url[s.base.len()..];
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        slow,
        "POST {path_and_query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 26\r\n\r\n"
    )
    .unwrap();
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 408");
    assert_eq!(listed(&w), "");
    // The server is not held up by them.
    assert_eq!(post(&url, ONE_CLICK).0, 200);
}

#[test]
fn two_campaigns_at_one_path_are_told_apart_by_id() {
    let w = Workdir::new();
    let autumn = w.write("autumn.toml", AUTUMN);
    let s = Server::start(&w, &["--campaign", autumn.to_str().unwrap()]);
    assert_eq!(post(&link(&s, "bo@example.org"), ONE_CLICK).0, 200);
    let url = format!(
        "{}/unsubscribe?id=autumn-2026&a=al%40example.org&k={}",
        s.base,
        token("autumn-2026", "al@example.org")
    );
    assert_eq!(post(&url, ONE_CLICK).0, 200);
    // The spring token does not work in autumn's link.
    let crossed = format!(
        "{}/unsubscribe?id=autumn-2026&a=cy%40example.org&k={}",
        s.base,
        token(CAMPAIGN_ID, "cy@example.org")
    );
    assert_eq!(post(&crossed, ONE_CLICK).0, 403);
    assert_eq!(listed(&w), "bo@example.org\nal@example.org\n");
}

#[test]
fn a_secret_file_serves_and_sigterm_stops_cleanly() {
    use std::os::unix::fs::PermissionsExt as _;
    let w = Workdir::new();
    let secret = w.write("secret", format!("{SECRET}\n"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = w.command();
    cmd.env(UnsubscribeSecret::FILE_ENV, &secret);
    let mut s = Server::start_with(&w, cmd, &[]);
    assert_eq!(post(&link(&s, "bo@example.org"), ONE_CLICK).0, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(s.wait_exit(), Some(0), "{}", s.log());
    assert_eq!(listed(&w), "bo@example.org\n");
}

#[test]
fn what_cannot_be_served_is_refused_at_start() {
    let w = Workdir::new();
    let refuse = |campaign_text: Option<&str>, env: &[(&str, &str)], needles: &[&str]| {
        let mut cmd = w.command();
        cmd.args([
            "unsubscribe-server",
            "--listen",
            "127.0.0.1:0",
            "--out",
            "out.txt",
        ]);
        match campaign_text {
            Some(text) => {
                w.write("c.toml", text);
                cmd.args(["--campaign", "c.toml"]);
            }
            None => {
                cmd.arg("--campaign").arg(fixture("campaign.toml"));
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.stdin(Stdio::null()).output().unwrap();
        assert_code(&o, 2);
        let err = stderr(&o);
        for n in needles {
            assert!(err.contains(n), "{n:?} not in:\n{err}");
        }
        assert!(!err.contains(SECRET), "the secret leaked:\n{err}");
    };
    let secret = [(UnsubscribeSecret::ENV, SECRET)];
    let no_url = AUTUMN.replace("unsubscribe_url", "list_id");
    refuse(Some(&no_url), &secret, &["c.toml", "no unsubscribe_url"]);
    let in_path = AUTUMN.replace(
        "unsubscribe?id={{ campaign.id }}&",
        "unsubscribe/{{ campaign.id }}?",
    );
    refuse(Some(&in_path), &secret, &["c.toml", "before the `?`"]);
    let no_token = AUTUMN.replace("&k={{ unsubscribe_token }}", "");
    refuse(
        Some(&no_token),
        &secret,
        &["c.toml", "{{ unsubscribe_token }}"],
    );
    refuse(
        None,
        &[],
        &["no unsubscribe secret", UnsubscribeSecret::ENV],
    );
    refuse(None, &[(UnsubscribeSecret::ENV, "short")], &["16"]);

    use std::os::unix::fs::PermissionsExt as _;
    let file = w.write("secret", SECRET);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file_env = [(UnsubscribeSecret::FILE_ENV, file.to_str().unwrap())];
    refuse(None, &file_env, &["mode 0644", "chmod 600"]);
    // Refused before the list was opened: nothing was created.
    assert!(!w.path("out.txt").exists());
}

/// The loop closed: a donor unsubscribes through the running server between two resumes of
/// a send, and the second resume, given the server's list, does not mail them; `status`
/// counts them as suppressed.
#[test]
fn a_donor_unsubscribed_between_two_resumes_is_not_mailed_by_the_second() {
    let w = Workdir::new();
    assert_code(&segment_fixtures(&w, &[]), 0);
    let smtp = common::smtp::TestServer::start();
    let send = |extra: &[&str]| {
        w.command()
            // The fixtures' donors with non-ASCII local parts wait (deferred) for a relay with
            // SMTPUTF8, which the test server lacks: no waiting for their retries.
            .args(["send", "run", "--concurrency", "1", "--max-attempts", "1"])
            .args(extra)
            .env("CAMPAIGN_SMTP_URL", smtp.url())
            .env(UnsubscribeSecret::ENV, SECRET)
            .output()
            .unwrap()
    };
    assert_code(&send(&["--limit", "3"]), 5);
    let first: Vec<String> = smtp.counts().into_keys().collect();

    // A donor not mailed yet: the last row of the last chunk.
    let m = manifest(&w.path("run"));
    let chunk = m["segments"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|s| s["chunks"].as_array().and_then(|c| c.last()))
        .unwrap()["file"]
        .as_str()
        .unwrap()
        .to_owned();
    let rows = w.read(&format!("run/{chunk}"));
    let header: Vec<&str> = rows
        .lines()
        .next()
        .unwrap()
        .trim_start_matches('\u{feff}')
        .split(',')
        .collect();
    let col = header.iter().position(|h| *h == "email").unwrap();
    let email = rows
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(col)
        .unwrap()
        .to_owned();
    let normalised = email.trim().to_lowercase();
    assert!(!first.contains(&normalised), "{email} was already mailed");

    let s = Server::start(&w, &[]);
    let (status, page) = post(&link(&s, &email), ONE_CLICK);
    assert_eq!(status, 200, "{page}\n{}", s.log());
    drop(s);

    let o = send(&["--suppress", "unsubscribed.txt"]);
    assert_code(&o, 5);
    let counts = smtp.counts();
    assert_eq!(
        counts.get(&normalised),
        None,
        "{normalised} was mailed after unsubscribing"
    );
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let o = w.run(&["status", "run", "--json"]);
    assert_code(&o, 5);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let suppressed: u64 = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["suppressed"].as_u64().unwrap())
        .sum();
    assert_eq!(suppressed, 1, "{v}");
    assert!(w.read("run/suppressed.csv").contains(&normalised));
}
