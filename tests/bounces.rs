//! `campaign bounces` with the real binary: the corpus of bounce shapes (fixtures/bounces),
//! Maildir and standard input, de-duplication, and reports matched back to a run's donors
//! after a real send to an in-process SMTP server.

mod common;

use std::io::Write as _;
use std::process::Stdio;

use common::smtp::TestServer;
use common::*;

const SECRET: &str = "test-secret-for-unsubscribe-tokens";

fn corpus(name: &str) -> String {
    fixture(&format!("bounces/{name}")).display().to_string()
}

/// `campaign bounces ARGS` with `stdin` on standard input.
fn bounces(w: &Workdir, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = w
        .command()
        .arg("bounces")
        .args(args)
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn listed(w: &Workdir, file: &str) -> Vec<String> {
    w.read(file)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_corpus_suppresses_permanent_failures_and_complaints_only() {
    let w = Workdir::new();
    let mut args = vec![corpus("mixed.mbox")];
    for f in std::fs::read_dir(fixture("bounces")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "eml") {
            args.push(p.display().to_string());
        }
    }
    args.extend(["--out".into(), "bounced.txt".into(), "--json".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = bounces(&w, &args, b"");
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let read = &v["read"];
    assert_eq!(read["messages"], 24, "{v}");
    assert_eq!(read["auto_replies"], 3, "{v}");
    assert_eq!(read["complaints"], 1, "{v}");
    let unread = read["unrecognised"].as_array().unwrap();
    assert_eq!(unread.len(), 1, "{v}");
    assert!(
        unread[0]["origin"]
            .as_str()
            .unwrap()
            .ends_with("human-reply.eml")
    );

    // Every permanent failure and complaint of expected.json, once; nothing temporary.
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("bounces/expected.json")).unwrap())
            .unwrap();
    let mut want = std::collections::BTreeSet::new();
    let mut temporary = std::collections::BTreeSet::new();
    for (_, e) in expected.as_object().unwrap() {
        let list = e.as_array().cloned().unwrap_or_else(|| vec![e.clone()]);
        for x in list {
            for k in ["permanent", "complaints"] {
                for a in x[k].as_array().unwrap() {
                    want.insert(a.as_str().unwrap().to_owned());
                }
            }
            for a in x["temporary"].as_array().unwrap() {
                temporary.insert(a.as_str().unwrap().to_owned());
            }
        }
    }
    let got = listed(&w, "bounced.txt");
    assert_eq!(
        got.iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        want
    );
    assert_eq!(got.len(), want.len(), "listed twice: {got:?}");
    assert!(got.iter().all(|a| !temporary.contains(a)));
    assert_eq!(v["applied"]["added"], want.len(), "{v}");

    // Read again: nothing added, all already listed.
    let o = bounces(&w, &[&corpus("mixed.mbox"), "--out", "bounced.txt"], b"");
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("0 address(es) added, 3 already listed"),
        "{out}"
    );
    assert_eq!(listed(&w, "bounced.txt").len(), want.len());
    // The list is one `--suppress` reads: a segment with it drops those donors.

    // It holds donors' addresses: readable by its owner only, like the endpoint's list, and
    // it says what it is on its first line.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(w.path("bounced.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let text = std::fs::read_to_string(w.path("bounced.txt")).unwrap();
    assert!(
        text.starts_with("# Bounced, complained or unsubscribed"),
        "{text}"
    );

    // A list edited by hand without its last line break gets one before the next address.
    std::fs::write(w.path("edited.txt"), "# by hand\nsomeone@example.org").unwrap();
    assert_code(
        &bounces(&w, &[&corpus("mixed.mbox"), "--out", "edited.txt"], b""),
        0,
    );
    let text = std::fs::read_to_string(w.path("edited.txt")).unwrap();
    assert!(
        text.starts_with("# by hand\nsomeone@example.org\n"),
        "{text}"
    );
    // mixed.mbox alone holds three of the addresses (read again above: 3 already listed).
    assert_eq!(listed(&w, "edited.txt").len(), 1 + 3);
}

#[test]
fn maildir_and_standard_input_are_read_and_nothing_is_moved() {
    let w = Workdir::new();
    let qmail = std::fs::read(fixture("bounces/qmail.eml")).unwrap();
    let human = std::fs::read(fixture("bounces/human-reply.eml")).unwrap();
    w.write("Maildir/new/1.host", &qmail);
    w.write("Maildir/cur/2.host:2,S", &human);
    std::fs::create_dir_all(w.path("Maildir/tmp")).unwrap();
    let exim = std::fs::read(fixture("bounces/exim.eml")).unwrap();
    let o = bounces(&w, &["Maildir", "-", "--out", "list.txt"], &exim);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("read 3 message(s)"), "{out}");
    assert!(
        out.contains("Maildir/cur/2.host:2,S: not a bounce"),
        "{out}"
    );
    assert_eq!(
        listed(&w, "list.txt"),
        ["kate.lowe@example.com", "quentin.ross@example.net"]
    );
    assert!(w.path("Maildir/new/1.host").is_file());

    // A directory that is not a Maildir, and a missing file: exit 2, named.
    std::fs::create_dir_all(w.path("notes")).unwrap();
    let o = bounces(&w, &["notes", "--out", "list.txt"], b"");
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("notes is a directory but not a Maildir"),
        "{}",
        stderr(&o)
    );
    let o = bounces(&w, &["missing.mbox", "--out", "list.txt"], b"");
    assert_code(&o, 2);
    assert!(stderr(&o).contains("missing.mbox"), "{}", stderr(&o));
}

/// A message the server received for `email`.
fn received_for(server: &TestServer, email: &str) -> String {
    let r = server
        .received()
        .into_iter()
        .find(|r| r.to.iter().any(|t| t == email))
        .unwrap_or_else(|| panic!("nothing received for {email}"));
    String::from_utf8(r.data).unwrap()
}

/// A header's value, unfolded.
fn header(message: &str, name: &str) -> String {
    let head = &message[..message.find("\r\n\r\n").unwrap()];
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let line = unfolded
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {head}"));
    line[prefix.len()..].trim().to_owned()
}

/// After a real send: a DSN returning d3's headers, an ARF complaint about d5 whose address
/// is redacted, a DSN to d7's VERP address that names no recipient we could read back, and
/// d9's reply to the mailto unsubscribe. With --run each is recorded against its donor and
/// `status` counts them; the list gets every address, d5's from the run's chunk.
#[test]
fn reports_are_matched_to_the_run_by_message_id_verp_and_token() {
    let server = TestServer::start();
    let w = setup(&{
        let mut csv = String::from("email,name,total\n");
        for i in 0..12 {
            csv.push_str(&format!("d{i}@example.org,Donor {i},{}\n", i * 10));
        }
        csv
    });
    let campaign = w.read("campaign.toml").replace(
        "unsubscribe_mailto",
        "return_path = \"bounces+{{ key }}@riverside-park.example\"\nunsubscribe_mailto",
    );
    w.write("campaign.toml", campaign);
    segment(&w);
    let o = w
        .command()
        .args(["send", "run"])
        .env("CAMPAIGN_SMTP_URL", server.url())
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET", SECRET)
        .output()
        .unwrap();
    assert_code(&o, 0);

    let d3 = received_for(&server, "d3@example.org");
    let dsn = format!(
        "Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.net\r\nTo: bounces@riverside-park.example\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.example.net.\r\n\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; d3@example.org\r\nAction: failed\r\nStatus: 5.2.1\r\nDiagnostic-Code: smtp; 550 5.2.1 mailbox disabled\r\n\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {}\r\nTo: d3@example.org\r\n\r\n--b1--\r\n",
        header(&d3, "Message-ID")
    );
    let d5 = received_for(&server, "d5@example.org");
    let arf = format!(
        "From: feedback@isp.example\r\nTo: fbl@riverside-park.example\r\nSubject: complaint\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n\r\n--b2\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n\r\n--b2\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {}\r\nTo: redacted@isp.example\r\n\r\n--b2--\r\n",
        header(&d5, "Message-ID")
    );
    let verp = server
        .received()
        .into_iter()
        .find(|r| r.to.iter().any(|t| t == "d7@example.org"))
        .unwrap()
        .from;
    assert!(verp.starts_with("bounces+") && verp.len() > 40, "{verp}");
    let mangled = format!(
        "Return-Path: <>\r\nDelivered-To: {verp}\r\nFrom: MAILER-DAEMON@old.example.net\r\nTo: {verp}\r\nSubject: failure notice\r\n\r\nHi. This is the qmail-send program at old.example.net.\r\nThis is a permanent error; I've given up.\r\n\r\n<D7@EXAMPLE.ORG>:\r\n550 5.1.1 no mailbox\r\n"
    );
    let d9 = received_for(&server, "d9@example.org");
    let lu = header(&d9, "List-Unsubscribe");
    let subject = lu[lu.find("subject=").unwrap() + 8..lu.rfind('>').unwrap()].replace("%20", " ");
    assert!(
        subject.starts_with("unsubscribe dry-2026 d9@example.org "),
        "{subject}"
    );
    let reply = format!(
        "From: Donor 9 <d9.other@example.net>\r\nTo: unsubscribe@riverside-park.example\r\nSubject: {subject}\r\n\r\n\r\n"
    );
    for m in [&dsn, &arf, &mangled, &reply] {
        let o = bounces(
            &w,
            &["-", "--out", "suppress.txt", "--run", "run"],
            m.as_bytes(),
        );
        assert_code(&o, 0);
        assert!(
            stdout(&o).contains("1 recorded in the ledger"),
            "{m}\n{}",
            stdout(&o)
        );
    }
    let mut got = listed(&w, "suppress.txt");
    got.sort();
    assert_eq!(
        got,
        [
            "d3@example.org",
            "d5@example.org",
            "d7@example.org",
            "d9@example.org"
        ]
    );
    let o = w.run(&["status", "run", "--json"]);
    assert_code(&o, 0);
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let sum = |k: &str| -> u64 {
        s["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("bounced_later"), 2, "{s}");
    assert_eq!(sum("complaints"), 2, "{s}");
    assert_eq!(sum("sent"), 12, "{s}");

    // A forged reply (another donor's address with d9's token) is not honoured.
    let forged = reply.replace("d9@example.org", "d10@example.org");
    let o = bounces(
        &w,
        &["-", "--out", "suppress.txt", "--run", "run"],
        forged.as_bytes(),
    );
    assert_code(&o, 0);
    assert!(stdout(&o).contains("does not verify"), "{}", stdout(&o));
    assert_eq!(listed(&w, "suppress.txt").len(), 4);
}
