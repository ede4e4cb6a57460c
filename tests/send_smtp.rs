//! `campaign send` against a real SMTP server (mailin on loopback): delivery, retries,
//! bounces, halts, resume after a crash, the lock, pacing and the daily cap.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::smtp::{Step, TestServer, raw_server};
use common::*;

const SECRET: &str = "test-secret-for-unsubscribe-tokens";

fn donors(n: usize) -> String {
    let mut csv = String::from("email,name,total\n");
    for i in 0..n {
        csv.push_str(&format!("d{i}@example.org,Donor {i},{}\n", i * 10));
    }
    csv
}

fn send(w: &Workdir, server: &TestServer, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--retry-delay", "0.05"];
    args.extend_from_slice(extra);
    send_to(w, &server.url(), &args)
}

/// `campaign send run ARGS` to the relay at `url`, with the unsubscribe secret set.
fn send_to(w: &Workdir, url: &str, args: &[&str]) -> std::process::Output {
    w.command()
        .args(["send", "run"])
        .args(args)
        .env("CAMPAIGN_SMTP_URL", url)
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET", SECRET)
        .output()
        .unwrap()
}

/// Starts `send` in the background, its output captured, so a test can stop it mid-run.
fn spawn_send(w: &Workdir, server: &TestServer, extra: &[&str]) -> std::process::Child {
    w.command()
        .args(["send", "run"])
        .args(extra)
        .env("CAMPAIGN_SMTP_URL", server.url())
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The per-segment totals of `status run --json` (which exits 0 when the run is complete, 5
/// with donors left, 6 halted).
fn status(w: &Workdir) -> serde_json::Value {
    let o = w.run(&["status", "run", "--json"]);
    assert!(matches!(o.status.code(), Some(0 | 5 | 6)), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    v["segments"].clone()
}

fn total(status: &serde_json::Value, field: &str) -> u64 {
    status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .sum()
}

#[test]
fn every_donor_is_delivered_exactly_once_with_its_message() {
    let server = TestServer::start();
    let w = setup(&donors(120));
    segment(&w);
    let o = send(&w, &server, &["--concurrency", "4"]);
    assert_code(&o, 0);
    let counts = server.counts();
    assert_eq!(counts.len(), 120);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let msg = server
        .received()
        .into_iter()
        .find(|r| r.to == ["d12@example.org"])
        .unwrap();
    let text = String::from_utf8_lossy(&msg.data);
    assert!(
        text.contains("Thank you, Donor 12") || text.contains("Spring news for Donor 12"),
        "{text}"
    );
    assert_eq!(msg.from, "appeal@riverside-park.example");
    assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    let s = status(&w);
    assert_eq!(total(&s, "sent"), 120);
    assert_eq!(total(&s, "pending"), 0);
    assert!(w.path("run/report.json").exists());

    // A re-run (cron) sends nothing more.
    let again = send(&w, &server, &[]);
    assert_code(&again, 0);
    assert_eq!(server.received().len(), 120);
}

#[test]
fn a_temporary_rejection_is_retried_within_the_run() {
    let server = TestServer::with_policy(Arc::new(|step, rcpt, n| {
        (step == Step::Rcpt && rcpt == "d3@example.org" && n < 2)
            .then(|| (451, "4.3.0 Try again later".to_owned()))
    }));
    let w = setup(&donors(6));
    segment(&w);
    let o = send(&w, &server, &["--concurrency", "1"]);
    assert_code(&o, 0);
    assert_eq!(server.counts().get("d3@example.org"), Some(&1));
    assert_eq!(server.received().len(), 6);
    // The pre-flight check's connection plus one that served everyone: a rejected RCPT
    // costs a RSET, not the connection.
    assert_eq!(server.connections(), 2);
}

/// A deferral does not hold up the donors after it: with 6 of 300 deferred at RCPT, the
/// other 294 reach the server first, then the 6 after their retry delay, and nobody twice.
#[test]
fn deferred_donors_wait_on_the_schedule_while_the_rest_are_sent() {
    const DEFERRED: [&str; 6] = [
        "d7@example.org",
        "d50@example.org",
        "d51@example.org",
        "d120@example.org",
        "d200@example.org",
        "d299@example.org",
    ];
    let server = TestServer::with_policy(Arc::new(|step, rcpt, n| {
        (step == Step::Rcpt && n == 0 && DEFERRED.contains(&rcpt))
            .then(|| (451, "4.3.0 Temporary lookup failure".to_owned()))
    }));
    let w = setup(&donors(300));
    segment(&w);
    // A retry delay far longer than sending the rest takes, so the order says it all.
    let o = send_to(
        &w,
        &server.url(),
        &["--concurrency", "1", "--retry-delay", "2"],
    );
    assert_code(&o, 0);
    let received = server.received();
    assert_eq!(received.len(), 300);
    assert!(server.counts().values().all(|&c| c == 1), "nobody twice");
    let (healthy, retried) = received.split_at(294);
    assert!(
        healthy
            .iter()
            .all(|r| !DEFERRED.contains(&r.to[0].as_str()))
    );
    assert!(retried.iter().all(|r| DEFERRED.contains(&r.to[0].as_str())));
}

/// `[message] return_path` is the envelope sender the relay sees; From stays as it is.
#[test]
fn the_return_path_is_the_envelope_sender() {
    let server = TestServer::start();
    let w = setup(&donors(2));
    w.write(
        "campaign.toml",
        CAMPAIGN.replace(
            "[message]\n",
            "[message]\nreturn_path = \"bounces@riverside-park.example\"\n",
        ),
    );
    segment(&w);
    assert_code(&send(&w, &server, &[]), 0);
    for r in server.received() {
        assert_eq!(r.from, "bounces@riverside-park.example");
        let text = String::from_utf8_lossy(&r.data);
        assert!(
            text.contains("From: \"Friends of Riverside Park\" <appeal@riverside-park.example>"),
            "{text}"
        );
    }
}

/// A donor whose domain alone is international needs no SMTPUTF8: the domain goes out in
/// its ASCII form, envelope and To alike (the test server offers no SMTPUTF8).
#[test]
fn an_international_domain_is_sent_in_its_ascii_form() {
    let server = TestServer::start();
    let w = setup("email,name,total\nbob@bücher.example,Bob,10\nann@example.org,Ann,20\n");
    segment(&w);
    let o = send(&w, &server, &[]);
    assert_code(&o, 0);
    let received = server.received();
    let bob = received
        .iter()
        .find(|r| r.to == ["bob@xn--bcher-kva.example"])
        .unwrap_or_else(|| panic!("{:?}", received.iter().map(|r| &r.to).collect::<Vec<_>>()));
    let text = String::from_utf8_lossy(&bob.data);
    assert!(
        text.contains("To: bob@xn--bcher-kva.example")
            || text.contains("<bob@xn--bcher-kva.example>"),
        "{text}"
    );
    assert_eq!(total(&status(&w), "sent"), 2);
}

#[test]
fn a_donor_still_failing_after_max_attempts_is_deferred_for_the_next_run() {
    let server = TestServer::with_policy(Arc::new(|step, rcpt, n| {
        (step == Step::Rcpt && rcpt == "d1@example.org" && n < 3)
            .then(|| (450, "4.2.1 Mailbox busy".to_owned()))
    }));
    let w = setup(&donors(3));
    segment(&w);
    let o = send(&w, &server, &["--max-attempts", "2"]);
    assert_code(&o, 5);
    assert!(stdout(&o).contains("deferred"), "{}", stdout(&o));
    assert_eq!(total(&status(&w), "deferred"), 1);
    let o = send(&w, &server, &[]);
    assert_code(&o, 0);
    assert_eq!(server.counts().get("d1@example.org"), Some(&1));
}

#[test]
fn a_hard_bounce_is_recorded_and_suppressed_next_time() {
    let server = TestServer::with_policy(Arc::new(|step, rcpt, _| {
        (step == Step::Rcpt && rcpt == "d2@example.org")
            .then(|| (550, "5.1.1 No such user".to_owned()))
    }));
    let w = setup(&donors(5));
    segment(&w);
    let o = send(&w, &server, &[]);
    assert_code(&o, 0);
    assert_eq!(server.received().len(), 4);
    assert_eq!(total(&status(&w), "failed"), 1);
    let failed = w.read("run/failed.csv");
    assert!(
        failed.contains("d2@example.org") && failed.contains("550"),
        "{failed}"
    );
    let bounced = w.read("run/suppress-bounced.txt");
    assert!(bounced.lines().any(|l| l == "d2@example.org"), "{bounced}");

    let o = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "run2",
        "--suppress",
        "run/suppress-bounced.txt",
    ]);
    assert_code(&o, 0);
    assert_eq!(manifest(&w.path("run2"))["dropped"]["suppressed"], 1);
}

#[test]
fn a_server_that_closes_the_connection_mid_run_costs_nobody() {
    // 421 after the body: the server closes the connection and keeps nothing.
    let server = TestServer::with_policy(Arc::new(|step, rcpt, n| {
        (step == Step::DataEnd && rcpt == "d4@example.org" && n == 0)
            .then(|| (421, "4.3.2 Shutting down".to_owned()))
    }));
    let w = setup(&donors(8));
    segment(&w);
    let o = send(&w, &server, &["--concurrency", "1"]);
    assert_code(&o, 0);
    let counts = server.counts();
    assert_eq!(counts.len(), 8);
    assert!(counts.values().all(|&n| n == 1));
    assert!(server.connections() >= 2, "reconnected after the close");
}

#[test]
fn a_policy_rejection_halts_the_run_and_leaves_the_rest_pending() {
    let server = TestServer::with_policy(Arc::new(|step, _, _| {
        (step == Step::Rcpt).then(|| (550, "5.7.1 Sender rejected by DMARC policy".to_owned()))
    }));
    let w = setup(&donors(50));
    segment(&w);
    let o = send(&w, &server, &["--concurrency", "1"]);
    assert_code(&o, 6);
    assert!(stdout(&o).contains("HALTED"), "{}", stdout(&o));
    assert!(stdout(&o).contains("5.7.1"), "{}", stdout(&o));
    assert!(server.received().is_empty());
    let s = status(&w);
    assert_eq!(
        total(&s, "failed"),
        0,
        "donors are not blamed for the sender's problem"
    );
    assert!(total(&s, "pending") >= 48, "{s}");
    // The process's own counts agree with the ledger's, and with the report it wrote.
    let report: serde_json::Value = serde_json::from_str(&w.read("run/report.json")).unwrap();
    for field in ["sent", "failed", "deferred", "unknown"] {
        assert_eq!(
            report["session"][field].as_u64().unwrap(),
            total(&s, field),
            "{field}: {report}"
        );
    }
}

/// A relay that answers every RCPT with a system error is failing, not the donors: the run
/// halts after --halt-after donors, nobody is failed, and the report and ledger agree.
#[test]
fn a_broken_relay_trips_the_breaker_and_fails_nobody() {
    let server = TestServer::with_policy(Arc::new(|step, _, _| {
        (step == Step::Rcpt).then(|| (500, "5.3.0 Internal server error".to_owned()))
    }));
    let w = setup(&donors(60));
    segment(&w);
    let o = send(&w, &server, &["--concurrency", "1", "--halt-after", "10"]);
    assert_code(&o, 6);
    let out = stdout(&o);
    assert!(out.contains("HALTED: the relay is failing"), "{out}");
    assert!(
        out.contains("10 donors in a row") && out.contains("5.3.0"),
        "{out}"
    );
    let s = status(&w);
    assert_eq!(total(&s, "failed"), 0, "{s}");
    assert_eq!(total(&s, "deferred"), 10, "{s}");
    assert_eq!(total(&s, "pending"), 50, "{s}");
    let report: serde_json::Value = serde_json::from_str(&w.read("run/report.json")).unwrap();
    assert_eq!(report["session"]["deferred"], 10, "{report}");
    assert_eq!(report["stop"]["kind"], "relay_failing", "{report}");
}

/// A relay that drops the connection after every final dot: every outcome is unknown, so
/// the breaker halts the run instead of turning the whole list into unknowns.
#[test]
fn a_relay_that_drops_after_every_message_is_halted_not_burnt() {
    let (addr, _) = raw_server(|_| false, usize::MAX);
    let w = setup(&donors(40));
    segment(&w);
    let o = send_to(
        &w,
        &format!("smtp://{addr}"),
        &["--concurrency", "1", "--halt-after", "5"],
    );
    assert_code(&o, 6);
    assert!(
        stdout(&o).contains("lost after the message was sent"),
        "{}",
        stdout(&o)
    );
    let s = status(&w);
    assert_eq!(total(&s, "unknown"), 5, "{s}");
    assert_eq!(total(&s, "pending"), 35, "{s}");
}

/// A finished send with outcomes lost in this run says so, and exits 8, not 0.
#[test]
fn a_finished_send_with_unknown_outcomes_exits_8_and_names_them() {
    // The third message's connection is dropped after its final dot.
    let (addr, _) = raw_server(|n| n != 3, usize::MAX);
    let w = setup(&donors(6));
    segment(&w);
    let send = || send_to(&w, &format!("smtp://{addr}"), &["--concurrency", "1"]);
    let o = send();
    assert_code(&o, 8);
    let out = stdout(&o);
    assert!(!out.contains("every donor is sent or failed"), "{out}");
    assert!(
        out.contains("1 donor(s) whose outcome is unknown (1 of them from this run)"),
        "{out}"
    );
    assert_eq!(w.read("run/unknown.csv").lines().count(), 2);
    // Nothing new is unknown on the next run: a clean finish, the old unknown still named.
    let o = send();
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("(0 of them from this run)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_second_send_on_the_same_run_is_refused() {
    let server = TestServer::start();
    let w = setup(&donors(3));
    segment(&w);
    let lock = campaign::ledger::RunLock::acquire(&w.path("run")).unwrap();
    let o = send(&w, &server, &[]);
    assert_code(&o, 7);
    assert!(server.received().is_empty());
    drop(lock);
    assert_code(&send(&w, &server, &[]), 0);
}

#[test]
fn the_rate_limit_spaces_messages() {
    let server = TestServer::start();
    let w = setup(&donors(11));
    segment(&w);
    let start = Instant::now();
    let o = send(&w, &server, &["--rate", "20/s", "--concurrency", "4"]);
    assert_code(&o, 0);
    // 11 messages at 20/s need at least 10 intervals of 50 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.received().len(), 11);
}

#[test]
fn the_daily_cap_holds_across_runs() {
    let server = TestServer::start();
    let w = setup(&donors(5));
    segment(&w);
    let o = send(&w, &server, &["--daily-cap", "2"]);
    assert_code(&o, 5);
    assert!(stdout(&o).contains("daily cap"), "{}", stdout(&o));
    assert_eq!(server.received().len(), 2);
    let o = send(&w, &server, &["--daily-cap", "3"]);
    assert_code(&o, 5);
    assert_eq!(server.received().len(), 3);
}

#[test]
fn a_real_send_needs_the_unsubscribe_secret_and_unchanged_templates() {
    let server = TestServer::start();
    let w = setup(&donors(3));
    segment(&w);
    let o = w
        .command()
        .args(["send", "run"])
        .env("CAMPAIGN_SMTP_URL", server.url())
        .output()
        .unwrap();
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("CAMPAIGN_UNSUBSCRIBE_SECRET"),
        "{}",
        stderr(&o)
    );
    assert_code(&send(&w, &server, &["--limit", "1"]), 5);
    w.write("templates/general/subject.txt", "A different subject");
    let o = send(&w, &server, &[]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("changed after this run started sending"),
        "{}",
        stderr(&o)
    );
    assert_eq!(server.received().len(), 1);
}

/// Kills `send` mid-run, re-runs it, and counts what the server got: every donor is delivered
/// once or listed as unknown; with --on-unknown skip nobody gets two messages, with resend
/// only donors listed as unknown can.
#[test]
fn resume_after_a_crash_never_mails_anyone_twice() {
    crash_and_resume(&TestServer::start(), &["--rate", "400/s"]);
}

/// The same against a relay offering PIPELINING, where each body carries the next donor's
/// MAIL, RCPT and DATA: commands sent ahead make nobody unknown and nobody mailed twice. No
/// --rate, which would mostly keep them from going ahead; the relay takes 3 ms a message
/// instead, so that the kill lands mid-run.
#[test]
fn resume_after_a_crash_with_pipelining_never_mails_anyone_twice() {
    let server = TestServer::pipelining(Arc::new(|step, _, _| {
        if step == Step::DataEnd {
            std::thread::sleep(Duration::from_millis(3));
        }
        None
    }));
    crash_and_resume(&server, &[]);
    assert!(
        server.ahead() > 100,
        "commands went ahead {} times",
        server.ahead()
    );
}

/// Kills a send of 1,500 donors over 3 connections after 200 messages arrived, sends again,
/// and checks what the server got.
fn crash_and_resume(server: &TestServer, pace: &[&str]) {
    let n = 1500;
    let w = setup(&donors(n));
    segment(&w);
    let mut args = vec!["--concurrency", "3"];
    args.extend_from_slice(pace);
    let mut child = spawn_send(&w, server, &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.received().len() < 200 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "send finished too early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = server.received().len();
    assert!(before < n, "killed before the end");

    let o = send(&w, server, &["--concurrency", "3"]);
    assert_code(&o, 0);
    let counts = server.counts();
    assert!(counts.values().all(|&c| c == 1), "someone got two messages");
    let unknown = w.read("run/unknown.csv");
    let unknown: Vec<String> = unknown
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().to_owned())
        .collect();
    assert!(
        unknown.len() <= 3,
        "at most one unknown per worker: {unknown:?}"
    );
    for i in 0..n {
        let a = format!("d{i}@example.org");
        assert!(
            counts.contains_key(&a) || unknown.contains(&a),
            "{a} was neither delivered nor listed as unknown"
        );
    }
    let o = send(&w, server, &["--on-unknown", "resend"]);
    assert_code(&o, 0);
    for (a, c) in server.counts() {
        assert!(c == 1 || unknown.contains(&a), "{a} got {c} messages");
    }
}

#[test]
fn an_unreachable_relay_sends_nothing_and_says_so() {
    let w = setup(&donors(3));
    segment(&w);
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = send_to(&w, &format!("smtp://127.0.0.1:{port}"), &[]);
    assert_code(&o, 5);
    assert!(
        stderr(&o).contains("cannot reach the relay"),
        "{}",
        stderr(&o)
    );
    assert_eq!(total(&status(&w), "pending"), 3);
    // Nothing was written, so the run can still be replaced.
    assert!(!w.path("run/ledger").exists());
}

/// SIGTERM (what cron's timeout or systemd sends): messages in flight finish, nothing new
/// starts, the summary says how to resume, and the re-run completes without duplicates.
#[test]
fn sigterm_stops_cleanly_and_the_rerun_finishes() {
    let server = TestServer::start();
    let n = 400;
    let w = setup(&donors(n));
    segment(&w);
    let child = spawn_send(&w, &server, &["--rate", "200/s", "--concurrency", "2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.received().len() < 40 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The shell's built-in kill, so the test needs no procps.
    let killed = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 5);
    assert!(stdout(&o).contains("interrupted"), "{}", stdout(&o));
    let got = server.received().len();
    assert!(got < n, "stopped before the end ({got})");
    let s = status(&w);
    assert_eq!(total(&s, "sent") as usize, got);
    assert_eq!(
        total(&s, "unknown"),
        0,
        "a clean stop leaves nothing unknown"
    );

    assert_code(&send(&w, &server, &[]), 0);
    let counts = server.counts();
    assert_eq!(counts.len(), n);
    assert!(counts.values().all(|&c| c == 1));
}

/// An edited export segmented into a new run, with the old run given to --suppress, mails
/// only the donors the old run did not reach.
#[test]
fn a_new_run_can_suppress_everyone_an_earlier_run_mailed() {
    let server = TestServer::start();
    let w = setup(&donors(10));
    segment(&w);
    assert_code(&send(&w, &server, &["--limit", "4"]), 5);
    assert_eq!(server.received().len(), 4);
    let mut edited = donors(10);
    edited.push_str("new@example.org,Newcomer,5\n");
    w.write("donors.csv", edited);
    let o = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "run2",
        "--suppress",
        "run",
    ]);
    assert_code(&o, 0);
    let m = manifest(&w.path("run2"));
    assert_eq!(m["dropped"]["suppressed"], 4);
    assert!(
        w.read("run2/dropped/suppressed.csv")
            .contains("already sent, or possibly sent, by a run given to --suppress")
    );
    let o = w
        .command()
        .args(["send", "run2"])
        .env("CAMPAIGN_SMTP_URL", server.url())
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET", SECRET)
        .output()
        .unwrap();
    assert_code(&o, 0);
    let counts = server.counts();
    assert_eq!(counts.len(), 11);
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
}

/// Cron re-runs over a finished run must not grow or sync its ledgers.
#[test]
fn a_rerun_over_a_finished_run_leaves_the_ledgers_untouched() {
    let server = TestServer::start();
    let w = setup(&donors(60));
    let o = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "run",
        "--chunk-size",
        "10",
    ]);
    assert_code(&o, 0);
    assert_code(&send(&w, &server, &["--concurrency", "1"]), 0);
    let snapshot = |w: &Workdir| {
        // Every segment's ledger directory (only `rest` has donors here).
        let mut files = Vec::new();
        for dir in std::fs::read_dir(w.path("run/ledger")).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                files.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
        files.sort();
        files
    };
    let before = snapshot(&w);
    assert!(before.len() >= 6, "one ledger per chunk");
    assert_code(&send(&w, &server, &["--concurrency", "1"]), 0);
    assert_eq!(snapshot(&w), before);
    assert_eq!(server.received().len(), 60);
}

/// An unsubscribe between two resumes: the donor listed in a `--suppress` file (and in the
/// campaign's `[send] suppress`) after segment ran is not mailed by the next send, and
/// `status`, the report and suppressed.csv say so.
#[test]
fn donors_suppressed_after_segment_are_not_mailed_on_resume() {
    let server = TestServer::start();
    let w = setup(&donors(30));
    segment(&w);
    let o = send(&w, &server, &["--concurrency", "1", "--limit", "5"]);
    assert_code(&o, 5);
    // d0..d4 went out; d7 unsubscribes through a --suppress list, d9 through the campaign
    // file's own list, and d2 (already mailed) changes nothing.
    w.write(
        "unsubscribed.txt",
        "# one-click unsubscribes\nD7@Example.org\nd2@example.org\n",
    );
    w.write(
        "lists/bounced.csv",
        "email,reason\nd9@example.org,complaint\n",
    );
    let campaign = w.read("campaign.toml").replace(
        "[[segment]]\nname = \"major\"",
        "[send]\nsuppress = [\"lists/bounced.csv\"]\n[[segment]]\nname = \"major\"",
    );
    w.write("campaign.toml", &campaign);
    let o = send(&w, &server, &["--suppress", "unsubscribed.txt"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("2 suppressed"), "{out}");
    assert!(out.contains("suppressed.csv"), "{out}");
    let counts = server.counts();
    assert_eq!(counts.get("d7@example.org"), None, "{counts:?}");
    assert_eq!(counts.get("d9@example.org"), None, "{counts:?}");
    assert_eq!(counts.get("d2@example.org"), Some(&1), "{counts:?}");
    assert_eq!(counts.len(), 28, "{counts:?}");
    let s = status(&w);
    assert_eq!(total(&s, "suppressed"), 2, "{s}");
    assert_eq!(total(&s, "sent"), 28, "{s}");
    assert_eq!(total(&s, "pending"), 0, "{s}");
    let listed = w.read("run/suppressed.csv");
    assert!(
        listed.contains("d7@example.org") && listed.contains("d9@example.org"),
        "{listed}"
    );
    let report: serde_json::Value = serde_json::from_str(&w.read("run/report.json")).unwrap();
    assert_eq!(report["session"]["suppressed"], 2, "{report}");

    // A list that cannot be read refuses the send before anything is sent.
    let o = send(&w, &server, &["--suppress", "missing.txt"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("missing.txt"), "{}", stderr(&o));
}

/// Cron: `--quiet` says nothing when all went well, also on a re-run of a finished run;
/// `--ok-if-locked` makes cron overlap silent; off a terminal a progress line is printed.
#[test]
fn cron_runs_are_silent_when_all_is_well() {
    let server = TestServer::start();
    let w = setup(&donors(20));
    segment(&w);
    let o = send(&w, &server, &["--quiet", "--limit", "5"]);
    assert_code(&o, 5);
    assert_eq!(stdout(&o), "");
    let o = send(&w, &server, &["--quiet"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "");
    let o = send(&w, &server, &["--quiet"]);
    assert_code(&o, 0);
    assert_eq!((stdout(&o).as_str(), server.received().len()), ("", 20));

    let _lock = campaign::ledger::RunLock::acquire(&w.path("run")).unwrap();
    let o = send(&w, &server, &["--quiet", "--ok-if-locked"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "");
    let o = send(&w, &server, &["--quiet"]);
    assert_code(&o, 7);
}

#[test]
fn off_a_terminal_a_send_prints_timestamped_progress_lines() {
    let server = TestServer::start();
    let w = setup(&donors(20));
    segment(&w);
    let o = send(&w, &server, &["--progress-every", "0"]);
    assert_code(&o, 0);
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("donors done"))
        .unwrap_or_else(|| panic!("no progress line: {err}"));
    assert!(line.starts_with("campaign: 20"), "{line}");
    assert!(line.contains("of 20 donors done"), "{line}");
}

/// Proofs: one message per segment to the marketer through the relay, the subject marked,
/// and nothing recorded: the run is as if never sent.
#[test]
fn proofs_reach_the_proof_address_and_leave_the_run_untouched() {
    let server = TestServer::start();
    let w = setup(&donors(120));
    segment(&w);
    let o = send(
        &w,
        &server,
        &["--proof-to", "marketing@riverside-park.example"],
    );
    assert_code(&o, 0);
    let got = server.received();
    assert_eq!(got.len(), 2, "{}", stdout(&o));
    for r in &got {
        assert_eq!(r.to, ["marketing@riverside-park.example"]);
        let m = mail_parser::MessageParser::default()
            .parse(&r.data)
            .unwrap();
        assert!(
            m.subject().unwrap().starts_with("[PROOF] "),
            "{:?}",
            m.subject()
        );
    }
    let subjects: Vec<String> = got
        .iter()
        .map(|r| {
            let m = mail_parser::MessageParser::default()
                .parse(&r.data)
                .unwrap();
            m.subject().unwrap().to_owned()
        })
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("Thank you, Donor 100")),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("Spring news for Donor 0")),
        "{subjects:?}"
    );
    assert!(stdout(&o).contains("nothing was recorded"));
    assert!(!w.path("run/ledger").exists());
    assert_eq!(total(&status(&w), "pending"), 120);

    let o = send(
        &w,
        &server,
        &[
            "--proof-to",
            "marketing@riverside-park.example",
            "--donor",
            "D7@example.org",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(server.received().len(), 3);
    assert!(
        stdout(&o).contains("donor d7@example.org"),
        "{}",
        stdout(&o)
    );
    let o = send(&w, &server, &["--proof-to", "not an address"]);
    assert_code(&o, 2);
}

/// `explain RUN EMAIL` reads the run's own inputs: a donor dropped by a suppression list is
/// told with the list's file and line, a sent one with their ledger records.
#[test]
fn explain_tells_a_donor_s_story_from_the_run() {
    let server = TestServer::start();
    let w = setup(&donors(10));
    w.write(
        "dnc.txt",
        "# do not contact\nnobody@example.net\nD4@Example.org\n",
    );
    assert_code(&try_segment_with(&w, &["--suppress", "dnc.txt"]), 0);
    let o = w.run(&["explain", "run", "d4@example.org"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("dropped: suppressed"), "{out}");
    assert!(out.contains("dnc.txt:3"), "{out}");
    assert!(!out.contains("note: changed"), "{out}");

    assert_code(&send(&w, &server, &[]), 0);
    let o = w.run(&["explain", "run", "D2@example.org"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("goes to segment \"rest\""), "{out}");
    assert!(out.contains("accepted by the relay: 250"), "{out}");
    assert!(out.contains("reserved for sending"), "{out}");

    // An input changed since the run was made is named.
    w.write("dnc.txt", "# emptied\n");
    let out = stdout(&w.run(&["explain", "run", "d4@example.org"]));
    assert!(
        out.contains("note: changed") && out.contains("dnc.txt"),
        "{out}"
    );
    let o = w.run(&["explain", "run", "stranger@example.org"]);
    assert_code(&o, 2);
}

/// A semicolon-separated export (`segment --delimiter ';'`) is previewed, sent and explained
/// with every field as the export has it: a name holding both separators, one holding a
/// comma unquoted, one with doubled quotes.
#[test]
fn a_semicolon_export_is_previewed_sent_and_explained_field_for_field() {
    let server = TestServer::start();
    let w = setup(
        "email;name;total\n\
         ann@example.org;\"Smith; Ann, Dr\";1200\n\
         bo@example.org;Bo, B;10\n\
         cy@example.org;\"Cy \"\"C\"\" Ng\";5000\n",
    );
    assert_code(&try_segment_with(&w, &["--delimiter", ";"]), 0);

    assert_code(&w.run(&["send", "run", "--dry-run"]), 0);
    let preview = std::fs::read(preview(&w, "major", 1)).unwrap();
    let m = mail_parser::MessageParser::default()
        .parse(&preview)
        .unwrap();
    assert_eq!(m.subject(), Some("Thank you, Smith; Ann, Dr"));
    assert_eq!(
        m.to().unwrap().first().unwrap().name(),
        Some("Smith; Ann, Dr")
    );

    assert_code(&send(&w, &server, &[]), 0);
    let counts = server.counts();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("ann@example.org".to_owned(), 1),
            ("bo@example.org".to_owned(), 1),
            ("cy@example.org".to_owned(), 1)
        ]
    );
    let text_to = |to: &str| {
        let r = server
            .received()
            .into_iter()
            .find(|r| r.to == [to])
            .unwrap();
        let m = mail_parser::MessageParser::default()
            .parse(&r.data)
            .unwrap();
        (
            m.to().unwrap().first().unwrap().name().unwrap().to_owned(),
            m.body_text(0).unwrap().replace("\r\n", "\n"),
        )
    };
    let (name, text) = text_to("ann@example.org");
    assert_eq!(name, "Smith; Ann, Dr");
    assert!(
        text.starts_with("Dear Smith; Ann, Dr,\nyou gave £1,200."),
        "{text}"
    );
    let (name, text) = text_to("bo@example.org");
    assert_eq!(name, "Bo, B");
    assert!(text.starts_with("Hello Bo, B\n"), "{text}");
    let (_, text) = text_to("cy@example.org");
    assert!(
        text.starts_with("Dear Cy \"C\" Ng,\nyou gave £5,000."),
        "{text}"
    );

    // explain re-reads the export with the delimiter the manifest records.
    let o = w.run(&["explain", "run", "ann@example.org"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("goes to segment \"major\""), "{out}");
    assert!(out.contains("accepted by the relay: 250"), "{out}");
    assert!(!out.contains("note: changed"), "{out}");
    let out = stdout(&w.run(&["explain", "run", "bo@example.org"]));
    assert!(out.contains("goes to segment \"rest\""), "{out}");
}
