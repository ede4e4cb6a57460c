//! Tests of the ledger: format, fold rules, damage handling, the writer and the locks.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::date;

use super::record::{self, Event, Record};
use super::*;
use crate::email::RecipientKey;

const CHUNK: &str = "segments/major/00001.csv";
const BOOT: &str = "11111111-1111-1111-1111-111111111111";
const OTHER_BOOT: &str = "22222222-2222-2222-2222-222222222222";

fn key(n: u128) -> RecipientKey {
    RecipientKey::from_hex(&format!("{n:032x}")).unwrap()
}

fn hex(n: u128) -> String {
    format!("{n:032x}")
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn session(id: &str, boot: Option<&str>) -> Session {
    Session {
        id: id.to_owned(),
        boot_id: boot.map(str::to_owned),
        pid: 4242,
        started: ts("2026-11-29T23:40:00Z"),
    }
}

/// A temporary run directory (only what the ledger needs: the directory itself).
fn run_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Folds `text` as if read on a machine whose current boot is `boot`.
fn fold(text: &str, boot: Option<&str>) -> Result<ChunkStates, LedgerError> {
    ChunkStates::fold(text.as_bytes(), Path::new("x.log"), boot.map(str::to_owned)).map(|(s, _)| s)
}

/// `H` line for session `s` on `boot` (`-` for none).
fn h(s: &str, boot: &str) -> String {
    format!("H\t{s}\t{boot}\t2026-11-29T23:40:00.000Z\t4242\n")
}

/// A key record without extra fields (`A`, `T`, `R`).
fn rec(kind: char, s: &str, k: u128) -> String {
    format!("{kind}\t{s}\t{}\t2026-11-29T23:40:01.000Z\n", hex(k))
}

fn sorted(states: &ChunkStates) -> Vec<(RecipientKey, Entry)> {
    let mut v: Vec<_> = states.iter().map(|(k, e)| (k, e.clone())).collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

#[test]
fn ledger_path_mirrors_chunk_path() {
    let run = Path::new("/runs/gala");
    assert_eq!(
        ledger_path(run, "segments/major/00001.csv"),
        PathBuf::from("/runs/gala/ledger/major/00001.log")
    );
    assert_eq!(
        ledger_path(run, "segments/lapsed-2019/00042.csv"),
        PathBuf::from("/runs/gala/ledger/lapsed-2019/00042.log")
    );
    // Other shapes keep their components.
    assert_eq!(
        ledger_path(run, "other/x.txt"),
        PathBuf::from("/runs/gala/ledger/other/x.txt.log")
    );
}

#[test]
fn chunk_paths_leaving_the_run_are_refused() {
    let run = run_dir();
    for bad in [
        "",
        "../x.csv",
        "segments/../../x.csv",
        "/etc/x.csv",
        "segments//a.csv",
    ] {
        let err = ChunkStates::read(run.path(), bad).unwrap_err();
        assert!(matches!(err, LedgerError::Invalid { .. }), "{bad}: {err}");
        let err = ChunkLedger::open(run.path(), bad, &session("s1", Some(BOOT))).unwrap_err();
        assert!(matches!(err, LedgerError::Invalid { .. }), "{bad}: {err}");
    }
}

/// Every record of format 3 as written, in a section that abbreviates against itself: times
/// as offsets from the last `A` line (or the `H`), keys by their place in the last `A` line,
/// and each reply against the one before.
#[test]
fn format_is_pinned() {
    let t0 = ts("2026-11-29T23:40:00.5Z");
    let ms = |n: i64| Timestamp::from_millisecond(t0.as_millisecond() + n).unwrap();
    let (k1, k2, k3) = (key(1), key(2), key(0xabc));
    let (b1, b2, b3) = (
        "AAAAAAAAAAAAAAAAAAAAAQ",
        "AAAAAAAAAAAAAAAAAAAAAg",
        "AAAAAAAAAAAAAAAAAAAKvA",
    );
    let cases: Vec<(Timestamp, Event<'_>, String)> = vec![
        (
            t0,
            Event::Start {
                boot_id: Some(BOOT),
                pid: 7,
                format: 3,
            },
            format!("H\ts1\t{BOOT}\t2026-11-29T23:40:00.500Z\t7\t3\n"),
        ),
        (ms(5), Event::Reserve(k1), format!("A\t5\t{b1}\n")),
        (ms(6), Event::Transmit(k1), "T\t#0\t1\n".to_owned()),
        (
            ms(46),
            Event::Sent {
                key: k1,
                code: 250,
                reply: "2.0.0 Ok: queued as 4XyZ",
            },
            "S\t#0\t41\t250\t0:2.0.0 Ok: queued as 4XyZ\n".to_owned(),
        ),
        (ms(46), Event::Transmit(k2), format!("T\t{b2}\t41\n")),
        (
            ms(76),
            Event::Sent {
                key: k2,
                code: 250,
                reply: "2.0.0 Ok: queued as 4XzA",
            },
            format!("S\t{b2}\t71\t250\t22:zA\n"),
        ),
        (
            // The wall clock stepped back: offsets may be negative.
            ms(1),
            Event::Failed {
                key: k3,
                code: 550,
                text: "5.1.1 no such user",
                suppress: true,
            },
            format!("F\t{b3}\t-4\t550\t5.1.1 no such user\t1\n"),
        ),
        (
            ms(66),
            Event::Deferred {
                key: k1,
                code: None,
                text: "timeout",
            },
            "D\t#0\t61\t-\ttimeout\n".to_owned(),
        ),
        (
            ms(67),
            Event::Deferred {
                key: k1,
                code: Some(451),
                text: "",
            },
            "D\t#0\t62\t451\t\n".to_owned(),
        ),
        (
            ms(67),
            Event::Unknown {
                key: k2,
                text: "connection reset",
            },
            format!("U\t{b2}\t62\tconnection reset\n"),
        ),
        (ms(67), Event::Release(k1), "R\t#0\t62\n".to_owned()),
        (
            ms(67),
            Event::Suppressed {
                key: k3,
                text: "suppressed: address is on a suppression list",
            },
            format!("X\t{b3}\t62\tsuppressed: address is on a suppression list\n"),
        ),
        (
            ms(67),
            Event::Feedback {
                key: k3,
                kind: FeedbackKind::Bounce,
                status: Some("5.1.1"),
                text: "smtp; 550 5.1.1 no such user",
            },
            format!("B\t{b3}\t62\tbounce\t5.1.1\tsmtp; 550 5.1.1 no such user\n"),
        ),
        (
            ms(67),
            Event::Feedback {
                key: k3,
                kind: FeedbackKind::Complaint,
                status: None,
                text: "abuse",
            },
            format!("B\t{b3}\t62\tcomplaint\t-\tabuse\n"),
        ),
        // A new batch: offsets and references count from its line.
        (ms(100), Event::Reserve(k2), format!("A\t95\t{b2}\n")),
        (ms(101), Event::Transmit(k2), "T\t#0\t1\n".to_owned()),
        (
            ms(101),
            Event::Unknown { key: k1, text: "x" },
            format!("U\t{b1}\t1\tx\n"),
        ),
    ];
    let mut encoder = record::Encoder::default();
    let mut text = String::new();
    for (at, event, want) in &cases {
        let r = Record {
            session: "s1",
            at: *at,
            event: event.clone(),
        };
        let mut buf = String::new();
        encoder.encode(&r, &mut buf);
        assert_eq!(&buf, want);
        text.push_str(&buf);
    }
    // And the file reads back as the same records.
    let mut decoder = record::Decoder::new();
    let mut read = Vec::new();
    for line in text.lines() {
        decoder
            .line(line, &mut |r| {
                read.push((r.session.to_owned(), r.at, format!("{:?}", r.event)));
                Ok(())
            })
            .unwrap();
    }
    let want: Vec<_> = cases
        .iter()
        .map(|(at, e, _)| ("s1".to_owned(), *at, format!("{e:?}")))
        .collect();
    assert_eq!(read, want);
}

/// One `A` line reserves a batch; a `T` names a key by its place in it.
#[test]
fn a_batch_is_one_a_line() {
    let t0 = ts("2026-11-29T23:40:00Z");
    let mut encoder = record::Encoder::default();
    let mut buf = String::new();
    encoder.encode(
        &Record {
            session: "s1",
            at: t0,
            event: Event::Start {
                boot_id: None,
                pid: 7,
                format: 3,
            },
        },
        &mut buf,
    );
    encoder.encode_reserve(&[key(1), key(2), key(3)], t0, &mut buf);
    encoder.encode(
        &Record {
            session: "s1",
            at: t0,
            event: Event::Transmit(key(3)),
        },
        &mut buf,
    );
    assert!(buf.ends_with(
        "A\t0\tAAAAAAAAAAAAAAAAAAAAAQ AAAAAAAAAAAAAAAAAAAAAg AAAAAAAAAAAAAAAAAAAAAw\nT\t#2\t0\n"
    ));
    let st = fold(&buf, None).unwrap();
    assert_eq!(st.len(), 3);
    assert_eq!(st.state(key(3)), State::Unknown);
    assert_eq!(
        st.state(key(1)),
        State::Unknown,
        "reserved on an unknown boot"
    );
}

/// Lines a power cut turned into NUL bytes lose only themselves: the next reply, written
/// against a lost one, keeps its own part and says the rest was lost; every state stands.
#[test]
fn lines_lost_to_a_power_cut_lose_only_themselves() {
    let text = format!(
        "H\ts1\t{BOOT}\t2026-11-29T23:40:00.000Z\t7\t3\n\
         A\t5\tAAAAAAAAAAAAAAAAAAAAAQ AAAAAAAAAAAAAAAAAAAAAg AAAAAAAAAAAAAAAAAAAAAw\n\
         T\t#0\t1\n\
         {nul}\n\
         {nul}\n\
         T\t#1\t3\n\
         S\t#1\t4\t250\t20:4XzA\n",
        nul = "\0".repeat(17)
    );
    let st = fold(&text, Some(BOOT)).unwrap();
    assert_eq!(st.ignored_lines(), 2);
    assert_eq!(st.state(key(1)), State::Unknown, "its outcome was lost");
    assert_eq!(st.state(key(2)), State::Sent);
    assert_eq!(
        st.get(key(2)).unwrap().text,
        "(start lost in a power cut)…4XzA"
    );
    assert_eq!(
        st.get(key(2)).unwrap().at,
        Some(ts("2026-11-29T23:40:00.009Z"))
    );
    assert_eq!(st.state(key(3)), State::Pending);
}

/// Format 2 files (and sections of a file a newer send appended to) read as before.
#[test]
fn format_2_lines_still_read() {
    let text = format!(
        "H\ts1\t{BOOT}\t2026-11-29T23:40:00.000Z\t7\t2\n\
         A\ts1\t{k}\t2026-11-29T23:40:00.100Z\n\
         T\ts1\t{k}\t2026-11-29T23:40:00.101Z\n\
         S\ts1\t{k}\t2026-11-29T23:40:00.190Z\t250\t2.0.0 Ok: queued as 4XyZ\n\
         F\ts1\t{k2}\t2026-11-29T23:40:00.200Z\t550\tno such user\t1\n\
         H\ts2\t{BOOT}\t2026-11-30T08:00:00.000Z\t8\t3\n\
         A\t5\tAAAAAAAAAAAAAAAAAAAAAw\n\
         T\t#0\t1\n\
         S\t#0\t8\t250\t0:2.0.0 Ok\n",
        k = hex(1),
        k2 = hex(2)
    );
    let st = fold(&text, Some(BOOT)).unwrap();
    assert_eq!(st.state(key(1)), State::Sent);
    assert_eq!(st.get(key(1)).unwrap().text, "2.0.0 Ok: queued as 4XyZ");
    assert_eq!(st.state(key(2)), State::Failed);
    assert_eq!(st.state(key(3)), State::Sent);
    assert_eq!(st.get(key(3)).unwrap().text, "2.0.0 Ok");
    assert_eq!(
        st.get(key(3)).unwrap().at,
        Some(ts("2026-11-30T08:00:00.013Z"))
    );
}

/// A format 3 line that refers to what is not there is malformed, never guessed at.
#[test]
fn format_3_references_that_point_nowhere_are_errors() {
    let h = format!("H\ts1\t{BOOT}\t2026-11-29T23:40:00.000Z\t7\t3\n");
    for (body, reason) in [
        (
            "A\t0\tAAAAAAAAAAAAAAAAAAAAAQ\nT\t#1\t0\n",
            "past the 1 keys",
        ),
        (
            "A\t0\tAAAAAAAAAAAAAAAAAAAAAQ\nS\t#0\t0\t250\t3:ok\n",
            "keeps 3 bytes",
        ),
        ("T\tAAAAAAAAAAAAAAAAAAAAA\t0\n", "bad recipient key"),
        ("T\tAAAAAAAAAAAAAAAAAAAAAQ\tsoon\n", "bad time offset"),
        (
            "S\tAAAAAAAAAAAAAAAAAAAAAQ\t0\t250\tok\n",
            "expected <length>:<text>",
        ),
        ("T\t\t0\n", "bad recipient key"),
        (
            "A\ts1\tAAAAAAAAAAAAAAAAAAAAAQ\t0\n",
            "A record has 4 tab-separated fields, expected 3",
        ),
    ] {
        let err = fold(&format!("{h}{body}"), Some(BOOT))
            .unwrap_err()
            .to_string();
        assert!(err.contains(reason), "{body:?}: {err}");
        assert!(err.contains("line "), "{err}");
    }
}

#[test]
fn outcomes_fold_to_states() {
    let mut text = h("s1", BOOT);
    text += &format!(
        "S\ts1\t{}\t2026-11-29T23:40:01Z\t250\tqueued as 1\n",
        hex(1)
    );
    text += &format!(
        "F\ts1\t{}\t2026-11-29T23:40:02Z\t550\tno such user\t1\n",
        hex(2)
    );
    text += &format!(
        "U\ts1\t{}\t2026-11-29T23:40:03Z\tconnection reset\n",
        hex(3)
    );
    text += &format!("D\ts1\t{}\t2026-11-29T23:40:04Z\t451\ttry later\n", hex(4));
    let st = fold(&text, Some(BOOT)).unwrap();
    assert_eq!(st.state(key(1)), State::Sent);
    assert_eq!(
        st.get(key(1)),
        Some(&Entry {
            state: State::Sent,
            code: Some(250),
            text: "queued as 1".to_owned(),
            at: Some(ts("2026-11-29T23:40:01Z")),
            suppress: false,
            feedback: None,
        })
    );
    assert_eq!(st.state(key(2)), State::Failed);
    assert!(st.get(key(2)).unwrap().suppress);
    assert_eq!(st.state(key(3)), State::Unknown);
    assert_eq!(st.state(key(4)), State::Deferred { attempts: 1 });
    assert_eq!(st.state(key(5)), State::Pending);
    assert_eq!(st.get(key(5)), None);
    assert_eq!(st.len(), 4);
}

#[test]
fn deferrals_count_across_sessions_and_a_later_send_wins() {
    let mut text = h("s1", BOOT);
    text += &rec('A', "s1", 1);
    text += &rec('T', "s1", 1);
    text += &format!("D\ts1\t{}\t2026-11-29T23:40:02Z\t421\tbusy\n", hex(1));
    text += &h("s2", OTHER_BOOT);
    text += &rec('A', "s2", 1);
    text += &rec('T', "s2", 1);
    text += &format!("D\ts2\t{}\t2026-11-30T23:40:02Z\t-\ttimeout\n", hex(1));
    let st = fold(&text, Some(BOOT)).unwrap();
    let e = st.get(key(1)).unwrap();
    assert_eq!(e.state, State::Deferred { attempts: 2 });
    assert_eq!((e.code, e.text.as_str()), (None, "timeout"));

    text += &h("s3", BOOT);
    text += &rec('A', "s3", 1);
    text += &rec('T', "s3", 1);
    text += &format!("S\ts3\t{}\t2026-12-01T10:00:00Z\t250\tok\n", hex(1));
    assert_eq!(fold(&text, Some(BOOT)).unwrap().state(key(1)), State::Sent);
}

#[test]
fn reservation_without_transmit_on_same_boot_was_never_sent() {
    let mut text = h("s1", BOOT);
    text += &rec('A', "s1", 1);
    let st = fold(&text, Some(BOOT)).unwrap();
    assert_eq!(st.state(key(1)), State::Pending);

    // Back to Deferred, with the deferral's details, when it was deferred before.
    let mut text = h("s1", BOOT);
    text += &format!("D\ts1\t{}\t2026-11-29T23:40:00Z\t451\tgreylisted\n", hex(1));
    text += &h("s2", BOOT);
    text += &rec('A', "s2", 1);
    let st = fold(&text, Some(BOOT)).unwrap();
    let e = st.get(key(1)).unwrap();
    assert_eq!(e.state, State::Deferred { attempts: 1 });
    assert_eq!(e.text, "greylisted");
}

#[test]
fn reservation_without_transmit_after_a_reboot_is_unknown() {
    let mut text = h("s1", BOOT);
    text += &rec('A', "s1", 1);
    for current in [Some(OTHER_BOOT), None] {
        let st = fold(&text, current).unwrap();
        let e = st.get(key(1)).unwrap();
        assert_eq!(e.state, State::Unknown, "{current:?}");
        assert!(e.text.contains("session s1"), "{}", e.text);
        assert_eq!(e.at, Some(ts("2026-11-29T23:40:01Z")));
    }
    // A session without a boot id, or without an H line, cannot prove anything either.
    let no_boot = h("s1", "-") + &rec('A', "s1", 1);
    assert_eq!(fold(&no_boot, None).unwrap().state(key(1)), State::Unknown);
    let no_h = rec('A', "s9", 1);
    assert_eq!(
        fold(&no_h, Some(BOOT)).unwrap().state(key(1)),
        State::Unknown
    );
}

#[test]
fn transmitted_reservation_is_unknown_even_on_same_boot() {
    let text = h("s1", BOOT) + &rec('A', "s1", 1) + &rec('T', "s1", 1);
    assert_eq!(
        fold(&text, Some(BOOT)).unwrap().state(key(1)),
        State::Unknown
    );
    // A T with no A counts as both.
    let text = h("s1", BOOT) + &rec('T', "s1", 2);
    assert_eq!(
        fold(&text, Some(BOOT)).unwrap().state(key(2)),
        State::Unknown
    );
}

#[test]
fn release_returns_to_previous_state_but_not_after_transmit() {
    let mut text = h("s1", OTHER_BOOT);
    text += &rec('A', "s1", 1);
    text += &rec('R', "s1", 1);
    text += &format!("D\ts1\t{}\t2026-11-29T23:40:00Z\t451\tlater\n", hex(2));
    text += &rec('A', "s1", 2);
    text += &rec('R', "s1", 2);
    text += &rec('A', "s1", 3);
    text += &rec('T', "s1", 3);
    text += &rec('R', "s1", 3);
    // Judged on another boot, where an open reservation would be Unknown.
    let st = fold(&text, Some(BOOT)).unwrap();
    assert_eq!(st.state(key(1)), State::Pending);
    assert_eq!(st.state(key(2)), State::Deferred { attempts: 1 });
    assert_eq!(st.state(key(3)), State::Unknown);
}

#[test]
fn second_reservation_settles_the_first() {
    // s1 (other boot) left key 1 open: Unknown. s2 reserving it again cannot erase that.
    let mut text = h("s1", OTHER_BOOT) + &rec('A', "s1", 1);
    text += &h("s2", BOOT);
    text += &rec('A', "s2", 1);
    text += &rec('R', "s2", 1);
    assert_eq!(
        fold(&text, Some(BOOT)).unwrap().state(key(1)),
        State::Unknown
    );
}

#[test]
fn torn_last_line_and_nul_lines_are_ignored() {
    let mut text = h("s1", BOOT);
    text += &format!("S\ts1\t{}\t2026-11-29T23:40:01Z\t250\tok\n", hex(1));
    text += "\0\0\0\0\0\0\n";
    text += &format!("S\ts1\t{}\t2026-11-29T23:40:01Z\t250\tok\n", hex(2));
    text += &format!("S\ts1\t{}\t2026-11-29T23:4", hex(3));
    let st = fold(&text, Some(BOOT)).unwrap();
    assert_eq!(st.state(key(1)), State::Sent);
    assert_eq!(st.state(key(2)), State::Sent);
    assert_eq!(st.state(key(3)), State::Pending);
    assert_eq!(st.ignored_lines(), 2);
}

#[test]
fn malformed_lines_are_errors_with_line_numbers() {
    let good = h("s1", BOOT) + &rec('A', "s1", 1);
    let bad_lines = [
        ("Q\ts1\n", "unknown record kind"),
        ("garbage\0more\n", "NUL bytes among other bytes"),
        ("\n", "empty line"),
        (
            &format!("S\ts1\t{}\t2026-11-29T23:40:01Z\t250\n", hex(1)),
            "S record has 5 tab-separated fields, expected 6",
        ),
        (
            &format!("A\ts1\t{}\t2026-11-29T23:40:01Z\textra\n", hex(1)),
            "A record has 5",
        ),
        (
            "A\ts1\tABC\t2026-11-29T23:40:01Z\n",
            "bad recipient key \"ABC\"",
        ),
        (
            &format!(
                "A\ts1\t{}\t2026-11-29T23:40:01Z\n",
                hex(0xabc).to_uppercase()
            ),
            "bad recipient key",
        ),
        (&format!("A\ts1\t{}\tyesterday\n", hex(1)), "bad timestamp"),
        (
            &format!("F\ts1\t{}\t2026-11-29T23:40:01Z\t550\tx\tyes\n", hex(1)),
            "bad suppress flag",
        ),
        (
            &format!("D\ts1\t{}\t2026-11-29T23:40:01Z\t+45\tx\n", hex(1)),
            "bad SMTP code",
        ),
        ("H\ts1\tboot\t2026-11-29T23:40:01Z\t-1\n", "bad process id"),
        (
            &format!("H\ts1\t{OTHER_BOOT}\t2026-11-29T23:40:01Z\t1\n"),
            "started again with another boot id",
        ),
        ("A\t\t\t\n", "empty session id"),
    ];
    for (line, want) in bad_lines {
        let text = good.clone() + line + &rec('R', "s1", 1);
        match fold(&text, Some(BOOT)) {
            Err(LedgerError::Malformed { line, reason, path }) => {
                assert_eq!(line, 3, "{reason}");
                assert!(reason.contains(want), "{reason:?} lacks {want:?}");
                let msg = LedgerError::Malformed { path, line, reason }.to_string();
                assert!(msg.starts_with("delivery ledger x.log line 3: "), "{msg}");
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }
    // Invalid UTF-8.
    let mut bytes = good.into_bytes();
    bytes.extend_from_slice(b"U\ts1\t\xff\n");
    let err = ChunkStates::fold(&bytes, Path::new("x.log"), None).unwrap_err();
    assert!(
        matches!(err, LedgerError::Malformed { line: 3, .. }),
        "{err}"
    );
}

#[test]
fn writer_records_are_what_a_reader_folds() {
    let run = run_dir();
    let s1 = session("s1", Some(BOOT));
    let now = ts("2026-11-29T23:40:00.123456Z");
    let mut l = ChunkLedger::open(run.path(), CHUNK, &s1).unwrap();
    assert_eq!(l.path(), run.path().join("ledger/major/00001.log"));
    l.reserve(&[key(1), key(2), key(3), key(4), key(5)], now)
        .unwrap();
    for k in 1..=5 {
        assert_eq!(l.states().state(key(k)), State::Pending);
    }
    l.transmitting(key(1), now).unwrap();
    assert_eq!(l.states().state(key(1)), State::Unknown);
    l.sent(key(1), now, 250, "2.0.0 Ok:\tqueued\r\nas ABC")
        .unwrap();
    l.transmitting(key(2), now).unwrap();
    l.failed(key(2), now, 550, "no such user", true).unwrap();
    l.deferred(key(3), now, None, "timeout").unwrap();
    l.transmitting(key(4), now).unwrap();
    l.unknown(key(4), now, "connection lost after DATA")
        .unwrap();
    l.release(&[key(5)], now).unwrap();
    l.sync().unwrap();

    let st = l.states();
    assert_eq!(st.state(key(1)), State::Sent);
    assert_eq!(st.get(key(1)).unwrap().text, "2.0.0 Ok: queued  as ABC");
    assert_eq!(
        st.get(key(1)).unwrap().at,
        Some(ts("2026-11-29T23:40:00.123Z"))
    );
    assert_eq!(st.state(key(2)), State::Failed);
    assert_eq!(st.state(key(3)), State::Deferred { attempts: 1 });
    assert_eq!(st.state(key(4)), State::Unknown);
    assert_eq!(st.state(key(5)), State::Pending);

    let path = ledger_path(run.path(), CHUNK);
    let bytes = fs::read(&path).unwrap();
    let (read, complete) = ChunkStates::fold(&bytes, &path, Some(BOOT.to_owned())).unwrap();
    assert_eq!(complete, bytes.len());
    assert_eq!(sorted(&read), sorted(l.states()));
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(&format!(
            "H\ts1\t{BOOT}\t2026-11-29T23:40:00.000Z\t4242\t3\nA\t123\tAAAAAAAAAAAAAAAAAAAAAQ AAAAAAAAAAAAAAAAAAAAAg "
        )),
        "{text}"
    );
    // H, one A for the batch, then T S, T F, D, T U, R.
    assert_eq!(text.lines().count(), 1 + 1 + 8, "{text}");
    l.close().unwrap();
}

#[test]
fn reopening_appends_and_keeps_states() {
    let run = run_dir();
    let now = ts("2026-11-29T23:40:00Z");
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    l.reserve(&[key(1), key(2)], now).unwrap();
    l.transmitting(key(1), now).unwrap();
    l.sent(key(1), now, 250, "ok").unwrap();
    l.transmitting(key(2), now).unwrap();
    l.deferred(key(2), now, Some(421), "busy").unwrap();
    let before = sorted(l.states());
    l.close().unwrap();

    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(BOOT))).unwrap();
    assert_eq!(sorted(l.states()), before);
    l.reserve(&[key(2)], now).unwrap();
    l.transmitting(key(2), now).unwrap();
    l.deferred(key(2), now, Some(421), "busy").unwrap();
    assert_eq!(l.states().state(key(2)), State::Deferred { attempts: 2 });
    drop(l);

    let text = fs::read_to_string(ledger_path(run.path(), CHUNK)).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("H\t")).count(), 2);
    let read = ChunkStates::read(run.path(), CHUNK).unwrap();
    assert_eq!(read.state(key(1)), State::Sent);
    assert_eq!(read.state(key(2)), State::Deferred { attempts: 2 });
}

#[test]
fn missing_ledger_reads_as_all_pending() {
    let run = run_dir();
    let st = ChunkStates::read(run.path(), CHUNK).unwrap();
    assert!(st.is_empty());
    assert_eq!(st.state(key(1)), State::Pending);
    assert!(!run.path().join("ledger").exists());
}

/// Simulates a crash mid-batch: reservations written, one transmitting, no outcomes.
fn crashed_run() -> tempfile::TempDir {
    let run = run_dir();
    let now = ts("2026-11-29T23:40:00Z");
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    l.reserve(&[key(1), key(2), key(3)], now).unwrap();
    l.transmitting(key(1), now).unwrap();
    // Dropped without outcomes or release, as kill -9 would leave it.
    drop(l);
    run
}

#[test]
fn rerun_after_process_crash_settles_reservations_for_good() {
    let run = crashed_run();
    let l = ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(BOOT))).unwrap();
    assert_eq!(l.states().state(key(1)), State::Unknown);
    assert_eq!(l.states().state(key(2)), State::Pending);
    assert_eq!(l.states().state(key(3)), State::Pending);
    drop(l);
    let text = fs::read_to_string(ledger_path(run.path(), CHUNK)).unwrap();
    // After H, the batch's A line and the T.
    let tail: Vec<&str> = text.lines().skip(3).map(|l| &l[..1]).collect();
    assert_eq!(tail, ["H", "U", "R", "R"], "{text}");
    // The conclusion was written down, so a later reboot does not change it.
    let (st, _) =
        ChunkStates::fold(text.as_bytes(), Path::new("x"), Some(OTHER_BOOT.to_owned())).unwrap();
    assert_eq!(st.state(key(1)), State::Unknown);
    assert_eq!(st.state(key(2)), State::Pending);
    assert_eq!(st.state(key(3)), State::Pending);
}

#[test]
fn rerun_after_reboot_treats_the_batch_as_unknown() {
    let run = crashed_run();
    let l = ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(OTHER_BOOT))).unwrap();
    for k in 1..=3 {
        assert_eq!(l.states().state(key(k)), State::Unknown, "{k}");
    }
}

#[test]
fn torn_tail_is_cut_off_before_appending() {
    let run = run_dir();
    let path = ledger_path(run.path(), CHUNK);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let torn = h("s1", BOOT) + &format!("S\ts1\t{}\t2026-11-2", hex(1));
    fs::write(&path, &torn).unwrap();
    assert_eq!(
        ChunkStates::read(run.path(), CHUNK)
            .unwrap()
            .ignored_lines(),
        1
    );
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(BOOT))).unwrap();
    l.deferred(key(2), ts("2026-11-29T23:40:00Z"), None, "x")
        .unwrap();
    drop(l);
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("2026-11-2\t") && !text.contains("S\t"),
        "{text}"
    );
    let st = ChunkStates::read(run.path(), CHUNK).unwrap();
    assert_eq!(st.ignored_lines(), 0);
    assert_eq!(st.state(key(2)), State::Deferred { attempts: 1 });
}

#[test]
fn malformed_file_is_refused_by_open_too() {
    let run = run_dir();
    let path = ledger_path(run.path(), CHUNK);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, h("s1", BOOT) + "garbage\n").unwrap();
    let err = ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(BOOT))).unwrap_err();
    assert!(
        matches!(err, LedgerError::Malformed { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("00001.log line 2"), "{err}");
}

#[test]
fn sent_on_counts_by_utc_day() {
    let run = run_dir();
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    let days = [
        "2026-11-29T23:59:59.999Z",
        "2026-11-30T00:00:00Z",
        "2026-11-30T12:00:00Z",
        // 23:30 on the 30th in New York is the 1st in UTC.
        "2026-11-30T23:30:00-05:00",
    ];
    for (i, d) in days.iter().enumerate() {
        let k = key(i as u128);
        l.reserve(&[k], ts(d)).unwrap();
        l.transmitting(k, ts(d)).unwrap();
        l.sent(k, ts(d), 250, "ok").unwrap();
    }
    l.deferred(key(9), ts("2026-11-30T01:00:00Z"), None, "x")
        .unwrap();
    drop(l);
    let st = ChunkStates::read(run.path(), CHUNK).unwrap();
    assert_eq!(st.sent_on(date(2026, 11, 29)), 1);
    assert_eq!(st.sent_on(date(2026, 11, 30)), 2);
    assert_eq!(st.sent_on(date(2026, 12, 1)), 1);
    assert_eq!(st.sent_on(date(2026, 12, 2)), 0);
}

#[test]
fn run_lock_is_exclusive_until_dropped() {
    let run = run_dir();
    let lock = RunLock::acquire(run.path()).unwrap();
    assert_eq!(lock.path(), run.path().join("ledger/lock"));
    let info = fs::read_to_string(lock.path()).unwrap();
    assert!(
        info.starts_with(&format!("pid {}, started ", std::process::id())),
        "{info}"
    );

    match RunLock::acquire(run.path()) {
        Err(LedgerError::Locked { holder, path }) => {
            assert_eq!(path, run.path().join("ledger/lock"));
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("{other:?}"),
    }
    // What another process would see.
    let other = File::open(run.path().join("ledger/lock")).unwrap();
    assert!(other.try_lock().is_err());
    drop(other);

    drop(lock);
    let again = RunLock::acquire(run.path()).unwrap();
    drop(again);
}

#[test]
fn run_lock_needs_an_existing_run() {
    let run = run_dir();
    let missing = run.path().join("nope");
    assert!(matches!(
        RunLock::acquire(&missing),
        Err(LedgerError::Io { .. })
    ));
    assert!(!missing.exists());
    assert!(matches!(
        ChunkLedger::open(&missing, CHUNK, &session("s1", Some(BOOT))),
        Err(LedgerError::Io { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn a_chunk_has_one_writer_at_a_time() {
    let run = run_dir();
    let first = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    let err = ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(BOOT))).unwrap_err();
    assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
    // Readers are never locked out.
    ChunkStates::read(run.path(), CHUNK).unwrap();
    drop(first);
    ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(BOOT))).unwrap();
}

#[test]
fn bad_sessions_are_refused() {
    let run = run_dir();
    for s in [
        session("", None),
        session("-", None),
        session("a b", None),
        session("a\tb", None),
        session("ok", Some("bad\nboot")),
    ] {
        let err = ChunkLedger::open(run.path(), CHUNK, &s).unwrap_err();
        assert!(matches!(err, LedgerError::Invalid { .. }), "{s:?}: {err}");
    }
}

#[test]
fn session_ids_name_start_time_and_pid_and_differ_in_the_same_millisecond() {
    let s = Session::new(ts("2026-11-29T23:40:00.123456Z"));
    let prefix = format!("20261129T234000.123Z-{}-", std::process::id());
    let random =
        s.id.strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{}", s.id));
    assert_eq!(random.len(), 8);
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
    // Two hosts whose send is pid 1, started in the same millisecond.
    let ids: std::collections::HashSet<String> = (0..50)
        .map(|_| Session::new(ts("2026-11-29T23:40:00.123Z")).id)
        .collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(s.started, ts("2026-11-29T23:40:00.123Z"));
    assert_eq!(s.pid, std::process::id());
    assert_eq!(s.boot_id, Session::current_boot_id());
    if cfg!(target_os = "linux") && Path::new(BOOT_ID_PATH).exists() {
        assert_eq!(s.boot_id.as_deref().map(str::len), Some(36));
    }
}

#[test]
fn recipient_keys_round_trip_through_hex() {
    let k = key(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    assert_eq!(RecipientKey::from_hex(&k.to_hex()), Some(k));
    assert_eq!(RecipientKey::from_hex("0123"), None);
    assert_eq!(RecipientKey::from_hex(&"A".repeat(32)), None);
    assert_eq!(
        RecipientKey::from_hex(&format!("+{}", "0".repeat(31))),
        None
    );
}

#[test]
fn state_display_reads_well() {
    assert_eq!(
        State::Deferred { attempts: 1 }.to_string(),
        "deferred (1 attempt)"
    );
    assert_eq!(
        State::Deferred { attempts: 3 }.to_string(),
        "deferred (3 attempts)"
    );
    assert!(State::Pending.is_sendable() && State::Deferred { attempts: 9 }.is_sendable());
    assert!(!State::Sent.is_sendable() && !State::Unknown.is_sendable());
}

#[test]
fn reused_session_id_with_another_boot_is_refused() {
    let run = run_dir();
    drop(ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap());
    let err = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(OTHER_BOOT))).unwrap_err();
    assert!(matches!(err, LedgerError::Invalid { .. }), "{err}");
    // Nothing was written, so the file still reads.
    ChunkStates::read(run.path(), CHUNK).unwrap();
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn hot_path_throughput() {
    let run = run_dir();
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    let n: u128 = 100_000;
    let start = std::time::Instant::now();
    let now = Timestamp::now();
    for batch in 0..n / 50 {
        let keys: Vec<RecipientKey> = (batch * 50..batch * 50 + 50).map(key).collect();
        l.reserve(&keys, now).unwrap();
        for &k in &keys {
            l.transmitting(k, now).unwrap();
            l.sent(k, now, 250, "2.0.0 Ok: queued as 4XyZ1234ABCD")
                .unwrap();
        }
    }
    l.close().unwrap();
    let write = start.elapsed();
    let start = std::time::Instant::now();
    let st = ChunkStates::read(run.path(), CHUNK).unwrap();
    assert_eq!(st.len() as u128, n);
    println!(
        "{n} recipients (batches of 50): write {write:?} ({:.0}/s), read {:?}",
        n as f64 / write.as_secs_f64(),
        start.elapsed()
    );
}

/// A full disk is named by every refusal after the first failed write, not only the first.
#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_is_named_by_every_later_refusal() {
    let run = run_dir();
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    l.write_to(
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    );
    let now = ts("2026-11-29T23:40:00Z");
    let first = l.reserve(&[key(1)], now).unwrap_err().to_string();
    assert!(first.contains("No space left on device"), "{first}");
    for later in [
        l.sent(key(1), now, 250, "ok").unwrap_err().to_string(),
        l.sent_with_next(key(1), now, 250, "ok")
            .unwrap_err()
            .to_string(),
        l.flush().unwrap_err().to_string(),
        l.sync().unwrap_err().to_string(),
    ] {
        assert!(
            later.contains("No space left on device") && later.contains("an earlier write"),
            "{later}"
        );
    }
}

#[test]
fn a_newer_format_is_refused_with_what_to_do() {
    let text = format!("H\ts1\t{BOOT}\t2026-11-29T23:40:00.000Z\t4242\t4\n");
    let err = fold(&text, Some(BOOT)).unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(err.contains("newer campaign (ledger format 4"), "{err}");
    let text = format!("H\ts1\t{BOOT}\t2026-11-29T23:40:00.000Z\t4242\tx\n");
    assert!(fold(&text, Some(BOOT)).is_err());
}

#[test]
fn suppressed_donors_are_never_sendable() {
    let run = run_dir();
    let now = ts("2026-11-29T23:40:00Z");
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    l.suppressed(key(1), now, "suppressed: address is on a suppression list")
        .unwrap();
    l.close().unwrap();
    let st = ChunkStates::read(run.path(), CHUNK).unwrap();
    assert_eq!(st.state(key(1)), State::Suppressed);
    assert!(!State::Suppressed.is_sendable());
    assert_eq!(State::Suppressed.to_string(), "suppressed");
}

#[test]
fn feedback_is_folded_over_the_ledger_and_settles_unknowns() {
    let run = run_dir();
    let now = ts("2026-11-29T23:40:00Z");
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    l.reserve(&[key(1), key(2), key(3)], now).unwrap();
    l.transmitting(key(1), now).unwrap();
    l.sent(key(1), now, 250, "queued as 1").unwrap();
    l.transmitting(key(2), now).unwrap();
    l.unknown(key(2), now, "connection lost after DATA")
        .unwrap();
    l.release(&[key(3)], now).unwrap();
    l.close().unwrap();

    let later = ts("2026-11-30T08:00:00Z");
    let reports = [
        Report {
            key: key(1),
            kind: FeedbackKind::Bounce,
            status: Some("5.1.1"),
            text: "550 5.1.1 no such user",
        },
        Report {
            key: key(2),
            kind: FeedbackKind::Complaint,
            status: None,
            text: "abuse report",
        },
    ];
    record_feedback(
        run.path(),
        CHUNK,
        &session("b1", Some(BOOT)),
        &reports,
        later,
    )
    .unwrap();
    let path = feedback_path(run.path(), CHUNK);
    assert_eq!(path, run.path().join("ledger/major/00001.feedback"));
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");

    let st = ChunkStates::read(run.path(), CHUNK).unwrap();
    let one = st.get(key(1)).unwrap();
    assert_eq!(one.state, State::Sent);
    let f = one.feedback.as_ref().unwrap();
    assert_eq!(
        (f.kind, f.status.as_deref(), f.at),
        (FeedbackKind::Bounce, Some("5.1.1"), later)
    );
    // A report about the message proves the relay accepted it.
    let two = st.get(key(2)).unwrap();
    assert_eq!(two.state, State::Sent);
    assert_eq!(two.feedback.as_ref().unwrap().kind, FeedbackKind::Complaint);
    assert_eq!(st.state(key(3)), State::Pending);
    // The writer sees the same, so a resend cannot pick the settled unknown.
    let l = ChunkLedger::open(run.path(), CHUNK, &session("s2", Some(BOOT))).unwrap();
    assert_eq!(l.states().state(key(2)), State::Sent);
}

/// An acceptance held by `sent_with_next` shares the next record's `write(2)`; every other
/// way on (another outcome, a sync, a flush, a drop) writes it too, and until then the
/// file says what a kill would leave: the donor transmitted, outcome unknown.
#[test]
fn a_held_acceptance_goes_out_with_the_next_record() {
    let run = run_dir();
    let now = ts("2026-11-29T23:40:00Z");
    let path = ledger_path(run.path(), CHUNK);
    let on_disk = |k: u128| ChunkStates::read(run.path(), CHUNK).unwrap().state(key(k));
    let mut l = ChunkLedger::open(run.path(), CHUNK, &session("s1", Some(BOOT))).unwrap();
    l.reserve(&[key(1), key(2), key(3), key(4), key(5)], now)
        .unwrap();
    l.transmitting(key(1), now).unwrap();
    let len = fs::metadata(&path).unwrap().len();
    l.sent_with_next(key(1), now, 250, "2.0.0 queued as A")
        .unwrap();
    assert_eq!(l.states().state(key(1)), State::Sent);
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "held, not written");
    assert_eq!(on_disk(1), State::Unknown);
    l.transmitting(key(2), now).unwrap();
    assert_eq!(on_disk(1), State::Sent);
    let text = fs::read_to_string(&path).unwrap();
    let tail: Vec<&str> = text.lines().rev().take(2).collect();
    assert!(
        tail[0].starts_with("T\t") && tail[1].starts_with("S\t"),
        "{text}"
    );

    // Each other way on writes the held record first.
    l.sent_with_next(key(2), now, 250, "2.0.0 queued as B")
        .unwrap();
    l.deferred(key(3), now, Some(451), "later").unwrap();
    assert_eq!(on_disk(2), State::Sent);
    l.transmitting(key(3), now).unwrap();
    l.sent_with_next(key(3), now, 250, "2.0.0 queued as C")
        .unwrap();
    l.flush().unwrap();
    assert_eq!(on_disk(3), State::Sent);
    l.flush().unwrap();
    l.transmitting(key(4), now).unwrap();
    l.sent_with_next(key(4), now, 250, "2.0.0 queued as D")
        .unwrap();
    l.sync().unwrap();
    assert_eq!(on_disk(4), State::Sent);
    l.transmitting(key(5), now).unwrap();
    l.sent_with_next(key(5), now, 250, "2.0.0 queued as E")
        .unwrap();
    let states = sorted(l.states());
    drop(l);
    let read = ChunkStates::read(run.path(), CHUNK).unwrap();
    assert_eq!(sorted(&read), states);
    assert_eq!(read.get(key(5)).unwrap().text, "2.0.0 queued as E");
}
