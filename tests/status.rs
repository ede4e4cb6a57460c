//! `campaign status` against runs sent to a real SMTP server (mailin on loopback):
//! the run's state, the top reasons, the deferred donors, the next command and the exit code,
//! which mirrors `send`'s.

mod common;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::smtp::{Step, TestServer};
use common::*;

const SECRET: &str = "test-secret-for-unsubscribe-tokens";

fn donors(n: usize) -> String {
    let mut csv = String::from("email,name,total\n");
    for i in 0..n {
        csv.push_str(&format!("d{i}@example.org,Donor {i},{}\n", i * 10));
    }
    csv
}

fn sent_run(n: usize) -> Workdir {
    let w = setup(&donors(n));
    segment(&w);
    w
}

fn send_cmd(w: &Workdir, server: &TestServer, extra: &[&str]) -> std::process::Command {
    let mut c = w.command();
    c.args(["send", "run", "--retry-delay", "0.05", "--max-wait", "0"])
        .args(extra)
        .env("CAMPAIGN_SMTP_URL", server.url())
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET", SECRET);
    c
}

/// `status run --json`, with its exit code.
fn status(w: &Workdir) -> (i32, serde_json::Value) {
    let o = w.run(&["status", "run", "--json"]);
    let v = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
    (o.status.code().unwrap(), v)
}

#[test]
fn a_run_not_sent_yet_says_so_and_exits_5_with_the_dry_run_next() {
    let w = sent_run(3);
    let (code, v) = status(&w);
    assert_eq!(code, 5);
    assert_eq!(v["state"], "not_started");
    assert_eq!(v["exit"], 5);
    assert_eq!(v["next"][0], "campaign send run --dry-run");
    let pending: u64 = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pending"].as_u64().unwrap())
        .sum();
    assert_eq!(pending, 3);
    let text = w.run(&["status", "run"]);
    assert_code(&text, 5);
    assert!(
        stdout(&text).contains("state:    not started"),
        "{}",
        stdout(&text)
    );
}

/// Two donors refused for one cause and one deferred: the reasons group the refusals (their
/// addresses masked), the deferred donor is due at the next send, and that is the next
/// command.
#[test]
fn a_stopped_run_names_why_the_top_reasons_and_the_next_send() {
    let server = TestServer::with_policy(Arc::new(|step, rcpt: &str, _| match (step, rcpt) {
        (Step::Rcpt, "d1@example.org" | "d2@example.org") => Some((
            550,
            format!("5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
        )),
        (Step::Rcpt, "d3@example.org") => Some((451, "4.7.1 Try again later".to_owned())),
        _ => None,
    }));
    let w = sent_run(6);
    let o = send_cmd(&w, &server, &[]).output().unwrap();
    assert_code(&o, 5);
    let (code, v) = status(&w);
    assert_eq!(code, 5, "{v:#}");
    assert_eq!(v["state"], "stopped");
    assert!(
        v["why"].as_str().unwrap().contains("finished its pass"),
        "{v:#}"
    );
    assert!(v["at"].is_string());
    assert_eq!(v["last_report"]["stop"]["kind"], "finished");
    let top = &v["reasons"][0];
    assert_eq!(top["state"], "failed");
    assert_eq!(top["code"], 550);
    assert_eq!(top["donors"], 2);
    assert_eq!(
        top["text"],
        "5.1.1 <address> Recipient address rejected: User unknown"
    );
    assert_eq!(v["reasons"][1]["state"], "deferred");
    assert_eq!(v["reasons"][1]["code"], 451);
    assert_eq!(v["deferred"]["donors"], 1);
    assert!(v["deferred"]["last_deferred_at"].is_string());
    assert!(v["deferred"]["due"].as_str().unwrap().contains("next"));
    assert_eq!(v["next"], serde_json::json!(["campaign send run"]));

    let text = stdout(&w.run(&["status", "run"]));
    assert!(text.contains("reasons:"), "{text}");
    assert!(text.contains("failed    550  5.1.1 <address>"), "{text}");
    assert!(text.contains("deferred: 1 donors"), "{text}");
    assert!(text.contains("next:     campaign send run"), "{text}");
}

#[test]
fn a_complete_run_exits_0_with_nothing_next() {
    let server = TestServer::start();
    let w = sent_run(4);
    assert_code(&send_cmd(&w, &server, &[]).output().unwrap(), 0);
    let (code, v) = status(&w);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["state"], "complete");
    assert_eq!(v["next"], serde_json::json!([]));
    assert!(v["reasons"].as_array().unwrap().is_empty());
    let text = stdout(&w.run(&["status", "run"]));
    assert!(text.contains("next:     nothing"), "{text}");
}

/// A complete run with refused donors says to carry their addresses into the next segment.
#[test]
fn a_complete_run_with_failures_names_the_suppression_file() {
    let server = TestServer::with_policy(Arc::new(|step, rcpt: &str, _| {
        (step == Step::Rcpt && rcpt == "d0@example.org")
            .then(|| (550, "5.1.1 user unknown".to_owned()))
    }));
    let w = sent_run(3);
    assert_code(&send_cmd(&w, &server, &[]).output().unwrap(), 0);
    let (code, v) = status(&w);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["state"], "complete");
    assert!(
        v["next"][0]
            .as_str()
            .unwrap()
            .contains("suppress-bounced.txt"),
        "{v:#}"
    );
}

/// The relay halts the run: status exits 6, as `send` would, shows the halt and says to
/// clear it after fixing the cause.
#[test]
fn a_halted_run_exits_6_and_says_clear_halt() {
    let server = TestServer::with_policy(Arc::new(|step, _rcpt: &str, _| {
        (step == Step::Rcpt).then(|| (550, "5.7.1 sender blocked by policy".to_owned()))
    }));
    let w = sent_run(3);
    assert_code(&send_cmd(&w, &server, &[]).output().unwrap(), 6);
    let (code, v) = status(&w);
    assert_eq!(code, 6, "{v:#}");
    assert_eq!(v["state"], "stopped");
    assert!(v["halt"].as_str().unwrap().contains("5.7.1"), "{v:#}");
    let next = v["next"].as_array().unwrap();
    assert_eq!(next.last().unwrap(), "campaign send run --clear-halt");
}

fn spawn_slow_send(w: &Workdir, server: &TestServer) -> Child {
    send_cmd(w, server, &["--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// While a send runs, status names its pid and exits 7; after it is killed mid-run, status
/// says it ended without a report.
#[test]
fn a_running_send_is_named_with_its_pid_and_a_killed_one_as_unreported() {
    let server = TestServer::with_policy(Arc::new(|step, _rcpt: &str, _| {
        if step == Step::DataEnd {
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }));
    let w = sent_run(200);
    let mut child = spawn_slow_send(&w, &server);
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (code, v) = status(&w);
        if code == 7 {
            break v;
        }
        assert!(Instant::now() < deadline, "no send seen running: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["state"], "sending");
    let holder = v["processes"][0]["holder"].as_str().unwrap();
    assert!(
        holder.starts_with(&format!("pid {},", child.id())),
        "{holder}"
    );
    // Let some records reach the ledger, then kill it as a crash would.
    while server.received().len() < 3 {
        assert!(Instant::now() < deadline, "nothing delivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, v) = status(&w);
    assert_eq!(code, 5, "{v:#}");
    assert_eq!(v["state"], "stopped");
    assert!(
        v["why"].as_str().unwrap().contains("without a report"),
        "{v:#}"
    );
    assert_eq!(v["next"], serde_json::json!(["campaign send run"]));
}
