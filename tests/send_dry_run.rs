//! `campaign send --dry-run` and `campaign check`, end to end on real files.

mod common;

use common::*;
use mail_parser::MessageParser;

const DONORS: &str = "email,name,total\n\
    zoe@example.org,Zoë Łukasz,2500\n\
    bo@example.org,<b>Bo</b>,10\n\
    cy@example.org,Cy,20\n\
    di@example.org,Di,30\n\
    ed@example.org,Ed,5000\n";

fn parse(bytes: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default()
        .parse(bytes)
        .expect("message parses")
}

#[test]
fn dry_run_renders_every_donor_and_writes_previews() {
    let w = setup(DONORS);
    segment(&w);
    let o = w.run(&["send", "run", "--dry-run", "--preview", "2"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("nothing was sent"), "{out}");
    assert!(
        stderr(&o).contains("CAMPAIGN_UNSUBSCRIBE_SECRET is not set"),
        "{}",
        stderr(&o)
    );
    let mut previews = std::fs::read_dir(w.path("run/previews/rest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    previews.sort();
    // Named after position and donor; the longest row again as an edge case; no HTML for
    // a text-only template.
    assert_eq!(
        previews,
        [
            "001-bo_example.org.eml",
            "002-cy_example.org.eml",
            "edge-longest-bo_example.org.eml"
        ]
    );
    let major_files = w.entries_of("run/previews/major");
    assert!(
        major_files.contains(&"001-zoe_example.org.html".to_owned()),
        "{major_files:?}"
    );
    assert!(
        major_files.contains(&"edge-non-ascii-zoe_example.org.eml".to_owned()),
        "{major_files:?}"
    );
    let index = w.read("run/previews/index.html");
    assert!(
        index.contains("href=\"major/001-zoe_example.org.html\""),
        "{index}"
    );
    assert!(
        index.contains("href=\"rest/001-bo_example.org.eml\""),
        "{index}"
    );
    let major = std::fs::read(preview(&w, "major", 1)).unwrap();
    let m = parse(&major);
    assert_eq!(m.subject(), Some("Thank you, Zoë Łukasz"));
    let to = m.to().unwrap().first().unwrap();
    assert_eq!(to.name(), Some("Zoë Łukasz"));
    assert_eq!(to.address(), Some("zoe@example.org"));
    assert_eq!(
        m.from().unwrap().first().unwrap().name(),
        Some("Friends of Riverside Park")
    );
    assert!(m.body_text(0).unwrap().contains("you gave £2,500."));
    assert!(m.body_html(0).unwrap().contains("<p>you gave £2,500.</p>"));
    let unsub = m
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe header");
    assert!(
        unsub.contains("t=DRY-RUN-PLACEHOLDER-NOT-A-REAL-TOKEN"),
        "{unsub}"
    );
    assert_eq!(
        m.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    // The text body of a plain-text-only template has no HTML part.
    let rest = std::fs::read(preview(&w, "rest", 1)).unwrap();
    let r = parse(&rest);
    // mail-parser synthesises an HTML view of a text-only message, so check the raw MIME.
    let raw = String::from_utf8_lossy(&rest);
    assert!(!raw.contains("text/html"), "{raw}");
    assert!(!raw.contains("multipart/alternative"), "{raw}");
    assert!(
        r.body_text(0).unwrap().contains("Hello <b>Bo</b>"),
        "text bodies are not HTML-escaped"
    );
    let failures = w.read("run/previews/failures.csv");
    assert_eq!(failures.trim(), "segment,chunk,line,email,reason");
}

#[test]
fn message_ids_are_deterministic_and_tokens_verifiable() {
    use campaign::unsubscribe::UnsubscribeSecret;
    let w = setup(DONORS);
    segment(&w);
    let secret = "correct horse battery staple 2026";
    let run = |w: &Workdir| {
        let o = w
            .command()
            .args(["send", "run", "--dry-run", "--preview", "1"])
            .env("CAMPAIGN_UNSUBSCRIBE_SECRET", secret)
            .output()
            .unwrap();
        assert_code(&o, 0);
        std::fs::read(preview(w, "major", 1)).unwrap()
    };
    let first = run(&w);
    let second = run(&w);
    let (a, b) = (parse(&first), parse(&second));
    assert_eq!(a.message_id(), b.message_id());
    assert!(a.message_id().unwrap().contains("dry-2026"));
    let other = std::fs::read(preview(&w, "rest", 1)).unwrap();
    assert_ne!(parse(&other).message_id(), a.message_id());
    let expected = UnsubscribeSecret::new(secret.as_bytes().to_vec())
        .unwrap()
        .token("dry-2026", "zoe@example.org");
    let unsub = a.header_raw("List-Unsubscribe").unwrap();
    assert!(unsub.contains(&format!("t={expected}")), "{unsub}");
}

#[test]
fn a_donor_that_cannot_be_rendered_is_listed_and_the_rest_go_on() {
    let csv = "email,name,total\n\
        ok@example.org,Ok,1500\n\
        evil@example.org,\"Eve\r\nBcc: victim@example.org\",2000\n\
        fine@example.org,Fine,1\n";
    let w = setup(csv);
    segment(&w);
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 4);
    assert!(
        stdout(&o).contains("1 donors cannot be rendered"),
        "{}",
        stdout(&o)
    );
    let mut rdr = csv::Reader::from_path(w.path("run/previews/failures.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], "major");
    assert_eq!(&rows[0][1], "segments/major/00001.csv");
    assert_eq!(&rows[0][2], "3");
    assert_eq!(&rows[0][3], "evil@example.org");
    assert!(
        rows[0][4].contains("line break") || rows[0][4].contains("U+000D"),
        "{}",
        &rows[0][4]
    );
    // Nothing of the injected header reaches any preview.
    for seg in ["major", "rest"] {
        for e in std::fs::read_dir(w.path(&format!("run/previews/{seg}"))).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains("Bcc:"));
        }
    }
}

#[test]
fn limit_segment_and_print_narrow_the_run() {
    let w = setup(DONORS);
    segment(&w);
    let o = w.run(&[
        "send",
        "run",
        "--dry-run",
        "--segment",
        "rest",
        "--limit",
        "2",
        "--json",
    ]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["segments"].as_array().unwrap().len(), 1);
    assert_eq!(v["segments"][0]["segment"], "rest");
    assert_eq!(v["segments"][0]["rendered"], 2);
    let bad = w.run(&["send", "run", "--dry-run", "--segment", "nope"]);
    assert_code(&bad, 2);
    assert!(stderr(&bad).contains("\"major\""), "{}", stderr(&bad));

    let p = w.run(&[
        "send",
        "run",
        "--dry-run",
        "--print",
        "ED@example.org",
        "--raw",
    ]);
    assert_code(&p, 0);
    let m = parse(&p.stdout);
    assert_eq!(m.subject(), Some("Thank you, Ed"));
    let missing = w.run(&["send", "run", "--dry-run", "--print", "nobody@example.org"]);
    assert_code(&missing, 1);
}

#[test]
fn a_tampered_chunk_or_changed_templates_are_caught() {
    let w = setup(DONORS);
    segment(&w);
    std::fs::create_dir(w.path("run/ledger")).unwrap();
    w.write("run/ledger/templates.sha256", "0000\n");
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("changed after this run started sending"),
        "{}",
        stderr(&o)
    );
    let chunk = w.path("run/segments/rest/00001.csv");
    let mut text = std::fs::read_to_string(&chunk).unwrap();
    text.push_str("new@example.org,New,1\n");
    std::fs::write(&chunk, text).unwrap();
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("has changed since"), "{}", stderr(&o));
}

/// An edited manifest is refused before anything is read or sent by it: counts that do not
/// add up, a chunk path leaving the run, and chunk row counts that disagree with the chunk.
#[test]
fn an_edited_manifest_is_refused_before_it_is_used() {
    let w = setup(DONORS);
    segment(&w);
    let original = w.read("run/manifest.json");
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        f(&mut m);
        w.write(
            "run/manifest.json",
            serde_json::to_string_pretty(&m).unwrap(),
        );
    };
    let refused = |needle: &str| {
        for args in [&["send", "run", "--dry-run"][..], &["status", "run"]] {
            let o = w.run(args);
            assert_ne!(o.status.code(), Some(0), "{args:?}");
            assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("segment the export again"),
                "{}",
                stderr(&o)
            );
        }
    };
    edit(&|m| m["segments"][1]["rows"] = serde_json::json!(99));
    refused("its chunks add up to");
    edit(&|m| m["input"]["data_rows"] = serde_json::json!(1000));
    refused("1000 donor rows were read");
    edit(&|m| {
        m["segments"][0]["chunks"][0]["file"] =
            serde_json::json!("segments/major/../../../etc/passwd")
    });
    refused("is not a file of segments/major/");
    // Counts that add up but disagree with the chunk itself are caught when it is read.
    edit(&|m| {
        let rows = m["segments"][1]["chunks"][0]["rows"].as_u64().unwrap();
        m["segments"][1]["chunks"][0]["rows"] = serde_json::json!(rows + 1);
        m["segments"][1]["rows"] = serde_json::json!(rows + 1);
        let read = m["input"]["data_rows"].as_u64().unwrap();
        m["input"]["data_rows"] = serde_json::json!(read + 1);
    });
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("donor rows but"), "{}", stderr(&o));
}

#[test]
fn check_reports_every_problem_at_once() {
    let w = setup(DONORS);
    let ok = w.run(&["check", "campaign.toml", "--donors", "donors.csv"]);
    assert_code(&ok, 0);
    assert!(stdout(&ok).contains("OK"), "{}", stdout(&ok));

    w.write(
        "campaign.toml",
        CAMPAIGN.replace("total >= 1000", "totl >= 1000"),
    );
    w.write(
        "templates/general/body.txt",
        "Hello {{ name }}\n\nYou live in {{ city }}.\n",
    );
    std::fs::remove_file(w.path("templates/major/body.txt")).unwrap();
    w.write("templates/major/subject.txt", "Thanks {{ name }");
    let o = w.run(&["check", "campaign.toml", "--donors", "donors.csv"]);
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(out.contains("unknown column \"totl\""), "{out}");
    assert!(
        out.contains("general/body.txt:3"),
        "line of the unknown variable: {out}"
    );
    assert!(out.contains("city"), "{out}");
    assert!(out.contains("major/body.txt"), "missing file: {out}");
    assert!(out.contains("major/subject.txt"), "syntax error: {out}");
    assert!(out.contains("problems found"), "{out}");
}

#[test]
fn fixtures_dry_run_renders_every_segmented_donor() {
    let w = Workdir::new();
    assert_code(&segment_fixtures(&w, &[]), 0);
    let check = w.run(&[
        "check",
        fixture("campaign.toml").to_str().unwrap(),
        "--donors",
        fixture("donors.csv").to_str().unwrap(),
    ]);
    assert_code(&check, 0);
    let o = w.run(&["send", "run", "--dry-run", "--json"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let m = manifest(&w.path("run"));
    for (t, s) in v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .zip(m["segments"].as_array().unwrap())
    {
        assert_eq!(t["rendered"], s["rows"]);
        assert_eq!(t["failed"], 0);
    }
    for seg in ["major", "lapsed", "first_time", "regular"] {
        let bytes = std::fs::read(preview(&w, seg, 1)).unwrap();
        let m = parse(&bytes);
        assert!(!m.subject().unwrap_or("").is_empty());
        assert!(m.body_text(0).is_some());
        for line in bytes.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line over 998 octets in {seg}");
        }
    }
}

/// `[message] list_id` and `feedback_id` are templates like the others: rendered per donor
/// into List-Id and Feedback-ID, checked by `check`, and a value that cannot be a header
/// fails that donor with the setting named.
#[test]
fn list_id_and_feedback_id_are_templated_headers() {
    let w = setup(DONORS);
    w.write(
        "campaign.toml",
        CAMPAIGN.replace(
            "currency = \"£\"\n",
            "currency = \"£\"\nlist_id = \"Spring appeal <spring.riverside-park.example>\"\nfeedback_id = \"{{ campaign.id }}:{{ segment }}:{{ name }}:rp\"\n",
        ),
    );
    segment(&w);
    let o = w.run(&[
        "send",
        "run",
        "--dry-run",
        "--print",
        "ed@example.org",
        "--raw",
    ]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("\r\nList-Id: Spring appeal <spring.riverside-park.example>\r\n"),
        "{out}"
    );
    assert!(
        out.contains("\r\nFeedback-ID: dry-2026:major:Ed:rp\r\n"),
        "{out}"
    );
    // Zoë's name is not ASCII: her Feedback-ID cannot be written, so her message fails.
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 4);
    let failures = w.read("run/previews/failures.csv");
    assert!(
        failures.contains("zoe@example.org") && failures.contains("feedback_id"),
        "{failures}"
    );
    // check finds a misspelt variable in them, at the setting's line.
    w.write(
        "campaign.toml",
        CAMPAIGN.replace(
            "currency = \"£\"\n",
            "currency = \"£\"\nlist_id = \"{{ nmae }}\"\n",
        ),
    );
    let o = w.run(&["check", "campaign.toml", "--donors", "donors.csv"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("list_id") && stdout(&o).contains("nmae"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_dry_run_counts_the_donors_a_send_suppress_list_stops() {
    let w = setup(DONORS);
    segment(&w);
    w.write("unsubscribed.txt", "Cy@Example.org\n@nowhere.example\n");
    let o = w.run(&[
        "send",
        "run",
        "--dry-run",
        "--suppress",
        "unsubscribed.txt",
        "--json",
    ]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let sum = |k: &str| -> u64 {
        v["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum("rendered"), sum("suppressed")), (4, 1), "{v}");
    let o = w.run(&["send", "run", "--dry-run", "--suppress", "unsubscribed.txt"]);
    assert!(
        stdout(&o).contains("1 donors are on a --suppress list"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_unsubscribe_secret_can_come_from_a_file() {
    let w = setup(DONORS);
    segment(&w);
    let secret = w.write("secret.txt", "from-a-file-0123456789abcdef\n");
    let mut perms = std::fs::metadata(&secret).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&secret, perms).unwrap();
    let o = w
        .command()
        .args(["send", "run", "--dry-run"])
        .env("CAMPAIGN_UNSUBSCRIBE_SECRET_FILE", &secret)
        .output()
        .unwrap();
    assert_code(&o, 0);
    assert!(!stderr(&o).contains("not set"), "{}", stderr(&o));
    let preview = std::fs::read_to_string(preview(&w, "major", 1)).unwrap();
    let s = campaign::unsubscribe::UnsubscribeSecret::new("from-a-file-0123456789abcdef").unwrap();
    assert!(
        preview.contains(&s.token("dry-2026", "zoe@example.org")),
        "{preview}"
    );
    assert!(!preview.contains("PLACEHOLDER"));
}

/// `--print` is for reading: headers decoded, the text part, the HTML part as text; never
/// the quoted-printable or encoded words that are sent (`--raw` shows those).
#[test]
fn print_shows_the_message_decoded_for_reading() {
    let w = setup(DONORS);
    segment(&w);
    let raw = stdout(&w.run(&[
        "send",
        "run",
        "--dry-run",
        "--print",
        "zoe@example.org",
        "--raw",
    ]));
    assert!(raw.contains("=?utf-8?"), "{raw}");
    let o = w.run(&["send", "run", "--dry-run", "--print", "zoe@example.org"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("Subject: Thank you, Zoë Łukasz\n"), "{out}");
    assert!(out.contains("To: Zoë Łukasz <zoe@example.org>\n"), "{out}");
    assert!(out.contains("--- text part ---\nDear Zoë Łukasz,"), "{out}");
    assert!(out.contains("you gave £2,500."), "{out}");
    assert!(out.contains("--- HTML part, as text ---"), "{out}");
    assert!(
        !out.contains("=?utf-8?") && !out.contains("=C2") && !out.contains("<p>"),
        "{out}"
    );
}

#[test]
fn the_unsubscribe_secret_can_come_from_the_campaign_file() {
    let w = setup(DONORS);
    segment(&w);
    let secret = w.write("secret.txt", "from-the-campaign-0123456789\n");
    let mut perms = std::fs::metadata(&secret).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&secret, perms.clone()).unwrap();
    w.write(
        "campaign.toml",
        CAMPAIGN.replace(
            "currency = \"£\"\n",
            "currency = \"£\"\nunsubscribe_secret_file = \"secret.txt\"\n",
        ),
    );
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 0);
    assert!(!stderr(&o).contains("not set"), "{}", stderr(&o));
    let preview = std::fs::read_to_string(preview(&w, "major", 1)).unwrap();
    let s = campaign::unsubscribe::UnsubscribeSecret::new("from-the-campaign-0123456789").unwrap();
    assert!(preview.contains(&s.token("dry-2026", "zoe@example.org")));
    // A secret others can read is refused, naming the setting.
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&secret, perms).unwrap();
    let o = w.run(&["check", "campaign.toml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("[message] unsubscribe_secret_file")
            && stdout(&o).contains("chmod 600"),
        "{}",
        stdout(&o)
    );
}

/// A run made before `segment --delimiter` existed has no `input.delimiter` in its manifest:
/// the dry run and `explain` (which re-reads the export) read it as comma-separated.
#[test]
fn a_manifest_without_a_delimiter_is_read_as_comma_separated() {
    let w = setup(DONORS);
    segment(&w);
    let mut m = manifest(&w.path("run"));
    assert_eq!(m["input"]["delimiter"], ",");
    m["input"].as_object_mut().unwrap().remove("delimiter");
    w.write(
        "run/manifest.json",
        serde_json::to_string_pretty(&m).unwrap(),
    );
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("nothing was sent"), "{}", stdout(&o));
    let o = w.run(&["explain", "run", "zoe@example.org"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("goes to segment \"major\""),
        "{}",
        stdout(&o)
    );
}
