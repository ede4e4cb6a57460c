//! `campaign send --shard I/N`: several processes on one run directory against a real SMTP
//! server (in-process), fenced by the ledger's locks: every donor once, the locks refusing a
//! duplicate shard, another shard count and a plain send, the halt marker stopping every
//! shard, the daily cap held across concurrent shards, and random SIGKILLs with restarts.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use campaign::ledger::{LockMode, RunLock, ShardLock};
use common::smtp::{Step, TestServer};
use common::*;

const SECRET: &str = "test-secret-for-unsubscribe-tokens";

/// `n` donors segmented into chunks of `chunk` rows.
fn run_of(n: usize, chunk: usize) -> Workdir {
    let mut csv = String::from("email,name,total\n");
    for i in 0..n {
        csv.push_str(&format!("d{i}@example.org,Donor {i},{}\n", i % 2000));
    }
    let w = setup(&csv);
    assert_code(
        &try_segment_with(&w, &["--chunk-size", &chunk.to_string()]),
        0,
    );
    w
}

fn send_cmd(w: &Workdir, server: &TestServer, args: &[&str]) -> std::process::Command {
    let mut c = w.command();
    c.args(["send", "run", "--retry-delay", "0.05", "--max-wait", "5"])
        .args(args)
        .env("CAMPAIGN_SMTP_URL", server.url())
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET", SECRET);
    c
}

fn send(w: &Workdir, server: &TestServer, args: &[&str]) -> Output {
    send_cmd(w, server, args).output().unwrap()
}

fn spawn(w: &Workdir, server: &TestServer, args: &[&str]) -> Child {
    send_cmd(w, server, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn totals(w: &Workdir) -> BTreeMap<String, u64> {
    let o = w.run(&["status", "run", "--json"]);
    assert!(matches!(o.status.code(), Some(0 | 5 | 6)), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mut t = BTreeMap::new();
    for seg in v["segments"].as_array().unwrap() {
        for (k, x) in seg.as_object().unwrap() {
            if let Some(n) = x.as_u64() {
                *t.entry(k.clone()).or_insert(0) += n;
            }
        }
    }
    t
}

#[test]
fn shards_split_the_run_and_each_donor_is_sent_once() {
    let server = TestServer::start();
    let w = run_of(100, 10);
    for i in 0..4 {
        let o = send(
            &w,
            &server,
            &["--shard", &format!("{i}/4"), "--concurrency", "2"],
        );
        // A shard is done when its own chunks are, whatever the others have left.
        assert_code(&o, 0);
        assert!(
            w.path(&format!("run/reports/shard-{i}-of-4.json"))
                .is_file()
        );
    }
    // Shards never write the whole run's files.
    assert!(!w.path("run/report.json").exists());
    assert!(!w.path("run/failed.csv").exists());
    let counts = server.counts();
    assert_eq!(counts.len(), 100);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    // A plain send after them finds nothing left and mails nobody twice.
    let o = send(&w, &server, &[]);
    assert_code(&o, 0);
    assert_eq!(server.received().len(), 100);

    let o = w.run(&["report", "run", "--json"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["shards"].as_object().unwrap().len(), 4, "{v}");
    let report: serde_json::Value = serde_json::from_str(&w.read("run/report.json")).unwrap();
    assert_eq!(report["segments"], v["segments"]);
    assert!(w.path("run/failed.csv").is_file());
    assert_eq!(totals(&w)["sent"], 100);
}

#[test]
fn the_locks_refuse_a_duplicate_shard_another_count_and_a_plain_send() {
    let server = TestServer::start();
    let w = run_of(40, 10);
    // This test process is shard 0 of 4, as a running `send` would be.
    let run = w.path("run");
    let _run_lock = RunLock::acquire_as(&run, LockMode::Shared).unwrap();
    let held = ShardLock::acquire(&run, 0, 4).unwrap();
    for (args, why) in [
        (vec!["--shard", "0/4"], "another process for shard 0/4"),
        (vec!["--shard", "1/3"], "shards of 4"),
        (vec![], "held by another process"),
    ] {
        let o = send(&w, &server, &args);
        assert_code(&o, 7);
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    }
    assert!(server.received().is_empty());
    // Another shard of the same count goes ahead beside it.
    let o = send(&w, &server, &["--shard", "1/4"]);
    assert_code(&o, 0);
    assert_eq!(server.received().len(), 10);
    // --lock-wait waits for the holder to finish.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(held);
    });
    let started = Instant::now();
    let o = send(&w, &server, &["--shard", "0/4", "--lock-wait", "20s"]);
    assert_code(&o, 0);
    assert!(started.elapsed() >= Duration::from_millis(600));
    release.join().unwrap();
    assert_eq!(server.received().len(), 20);
}

#[test]
fn a_halt_in_one_shard_stops_the_others_until_cleared() {
    // The relay refuses the sender: a policy problem, not the donors'.
    let server = TestServer::with_policy(Arc::new(|step, _, _| {
        (step == Step::Rcpt).then(|| (550, "5.7.1 sender blocked by policy".to_owned()))
    }));
    let w = run_of(40, 10);
    let o = send(&w, &server, &["--shard", "0/4"]);
    assert_code(&o, 6);
    let marker = w.read("run/ledger/halt");
    assert!(marker.contains("5.7.1 sender blocked"), "{marker}");
    let o = send(&w, &server, &["--shard", "1/4"]);
    assert_code(&o, 6);
    assert!(
        stderr(&o).contains("5.7.1 sender blocked"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--clear-halt"), "{}", stderr(&o));
    // After the fix: cleared, and the shard sends (here the relay still refuses, so it
    // halts again and writes a new marker).
    let o = send(&w, &server, &["--shard", "1/4", "--clear-halt"]);
    assert!(
        stderr(&o).contains("cleared the halt marker"),
        "{}",
        stderr(&o)
    );
    assert_code(&o, 6);
    assert_eq!(totals(&w)["failed"], 0);
}

#[test]
fn the_daily_cap_holds_across_concurrent_shards() {
    let server = TestServer::with_policy(Arc::new(|_, _, _| {
        std::thread::sleep(Duration::from_millis(2));
        None
    }));
    let w = run_of(200, 10);
    let children: Vec<Child> = (0..4)
        .map(|i| {
            spawn(
                &w,
                &server,
                &["--shard", &format!("{i}/4"), "--daily-cap", "25"],
            )
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_code(&o, 5);
    }
    assert_eq!(server.received().len(), 25);
    // A later shard the same day gets nothing more.
    let o = send(&w, &server, &["--shard", "0/4", "--daily-cap", "25"]);
    assert_code(&o, 5);
    assert_eq!(server.received().len(), 25);
    assert_eq!(totals(&w)["sent"], 25);
}

/// xorshift, seeded: the same kills every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_kills_and_restarts_of_shards_mail_nobody_twice() {
    // Slow enough that the shards are still sending through the whole chaos loop (about 2 s),
    // however fast the rest of a send gets: 2000 donors × 12 ms over 8 connections is 3 s.
    // PIPELINING, so that kills land while the next donor's commands went ahead too.
    let server = TestServer::pipelining(Arc::new(|step, _, _| {
        if step == Step::DataEnd {
            std::thread::sleep(Duration::from_millis(12));
        }
        None
    }));
    let donors = 2000;
    let w = run_of(donors, 50);
    let shard = |i: u64| format!("{i}/4");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut running: Vec<Option<Child>> = (0..4)
        .map(|i| {
            Some(spawn(
                &w,
                &server,
                &["--shard", &shard(i), "--concurrency", "2"],
            ))
        })
        .collect();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    // A duplicate of a running shard, and another count: refused while shards run.
    std::thread::sleep(Duration::from_millis(100));
    let dup = send(&w, &server, &["--shard", "2/4"]);
    assert!(
        matches!(dup.status.code(), Some(7) | Some(0) | Some(5)),
        "{}",
        stderr(&dup)
    );
    let other = send(&w, &server, &["--shard", "0/3"]);
    assert!(matches!(other.status.code(), Some(7) | Some(0) | Some(5)));
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
        let i = rng.below(4) as usize;
        if let Some(mut c) = running[i].take() {
            if c.try_wait().unwrap().is_none() {
                c.kill().unwrap();
                kills += 1;
            }
            let _ = c.wait();
        }
        running[i] = Some(spawn(
            &w,
            &server,
            &["--shard", &shard(i as u64), "--concurrency", "2"],
        ));
        assert!(Instant::now() < deadline, "the chaos loop ran too long");
    }
    for c in running.iter_mut().flatten() {
        let _ = c.wait();
    }
    // Finish every shard (unknown donors stay unknown, never resent).
    for i in 0..4 {
        let o = send(&w, &server, &["--shard", &shard(i), "--concurrency", "2"]);
        assert!(
            matches!(o.status.code(), Some(0) | Some(8)),
            "{}",
            stderr(&o)
        );
    }
    let counts = server.counts();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "mailed twice: {twice:?}");
    let t = totals(&w);
    assert_eq!(t["pending"] + t["deferred"], 0, "{t:?}");
    assert_eq!(
        t["sent"] + t["unknown"] + t["failed"],
        donors as u64,
        "{t:?}"
    );
    eprintln!("chaos: {kills} kills, totals {t:?}");
    assert!(
        kills >= 5,
        "only {kills} kills landed: the shards finished too fast to test"
    );
    // A process killed on this host leaves at most one unknown per connection.
    assert!(
        t["unknown"] <= kills * 2,
        "{} unknown after {kills} kills",
        t["unknown"]
    );
    // Every sent donor is one the server has; an unknown one may or may not have arrived.
    let got = counts.len() as u64;
    assert!(
        t["sent"] <= got && got <= t["sent"] + t["unknown"],
        "{t:?}, {got} received"
    );
    let o = w.run(&["report", "run"]);
    assert_code(&o, 0);
    let unknown = w.read("run/unknown.csv");
    assert_eq!(unknown.lines().count() as u64 - 1, t["unknown"]);
}
