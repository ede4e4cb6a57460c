//! `campaign segment` end to end: the real binary on real files.

mod common;

use common::*;

const CAMPAIGN: &str = r#"
[campaign]
id = "test-2026"
[columns]
total = "number"
last = "date"
[[segment]]
name = "major"
when = "total >= 1000"
[[segment]]
name = "recent"
when = "last >= today - 365d"
template = "general"
"#;

fn setup(csv: &[u8]) -> Workdir {
    let w = Workdir::new();
    w.write("donors.csv", csv);
    w.write("campaign.toml", CAMPAIGN);
    w
}

fn segment(w: &Workdir, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "run",
        "--as-of",
        "2026-11-29",
    ];
    args.extend_from_slice(extra);
    w.run(&args)
}

#[test]
fn rows_land_byte_for_byte_in_chunks_and_dropped_files() {
    let csv = "\u{feff}email,name,total,last\r\n\
        a@example.org,\"Smith, Ann\",1500,2026-01-01\r\n\
        b@example.org,\"Bo \"\"B\"\" Lee\",20,2026-06-01\r\n\
        c@example.org,\"two\r\nlines\",5,2020-01-01\r\n\
        A@Example.org,dup,2000,2026-01-01\r\n\
        not-an-address,bad,1,2026-01-01\r\n\
        d@example.org,bad value,£1000,2026-01-01\r\n\
        e@example.org,short row\r\n\
        f@example.org,Zoë,3000,2026-02-30\r\n\
        g@example.org,Zoë,3000,2026-02-28";
    let w = setup(csv.as_bytes());
    let o = segment(&w, &["--max-reject-rate", "0.6"]);
    assert_code(&o, 0);
    let m = manifest(&w.path("run"));
    assert_eq!(m["input"]["data_rows"], 9);
    assert_eq!(m["dropped"]["rejected"], 4);
    assert_eq!(m["dropped"]["duplicate"], 1);
    assert_eq!(m["dropped"]["unmatched"], 1);
    assert_eq!(m["segments"][0]["rows"], 2);
    assert_eq!(m["segments"][1]["rows"], 1);
    assert_eq!(m["segments"][1]["template"], "general");

    let major = w.read("run/segments/major/00001.csv");
    assert_eq!(
        major,
        "email,name,total,last\n\
         a@example.org,\"Smith, Ann\",1500,2026-01-01\n\
         g@example.org,Zoë,3000,2026-02-28\n"
    );
    assert_eq!(
        w.read("run/segments/recent/00001.csv"),
        "email,name,total,last\nb@example.org,\"Bo \"\"B\"\" Lee\",20,2026-06-01\n"
    );
    // The multi-line row keeps its embedded CRLF and is reported at the line it starts on.
    assert_eq!(
        w.read("run/dropped/unmatched.csv"),
        "line,reason,email,name,total,last\n\
         4,unmatched: no segment rule matched,c@example.org,\"two\r\nlines\",5,2020-01-01\n"
    );
    assert!(
        w.read("run/dropped/duplicate.csv")
            .contains("\n6,duplicate: an earlier row has the same address,A@Example.org,dup,")
    );
    let rejected = w.read("run/dropped/rejected.csv");
    let lines: Vec<&str> = rejected.lines().collect();
    assert_eq!(lines.len(), 5, "{rejected}");
    assert!(
        lines[1].starts_with("7,\"email: \"\"not-an-address\"\""),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("8,") && lines[2].contains("total"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("9,") && lines[3].contains("2 fields"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].starts_with("10,") && lines[4].contains("2026-02-30"),
        "{}",
        lines[4]
    );
}

/// Latin-1 bytes in a UTF-8 export: the row is rejected with the byte to look at, counted in
/// the line as an editor shows it, whether or not csv_core had to unquote the line.
#[test]
fn rows_that_are_not_utf8_are_rejected_with_the_byte() {
    let csv = b"email,name,total,last\n\
        a@example.org,Zo\xeb,1500,2026-01-01\n\
        b@example.org,\"Zo\xeb, B\",1500,2026-01-01\n\
        c@example.org,Zo\xc3\xab,1500,2026-01-01\n";
    let w = setup(csv);
    let o = segment(&w, &["--max-reject-rate", "1"]);
    assert_code(&o, 0);
    let rejected = std::fs::read(w.path("run/dropped/rejected.csv")).unwrap();
    let lines: Vec<&[u8]> = rejected.split(|&b| b == b'\n').collect();
    assert_eq!(
        lines[1],
        &b"2,\"not valid UTF-8 (byte 17 of the line); re-export the file as UTF-8 (in Excel: Save As, \"\"CSV UTF-8 (Comma delimited)\"\")\",a@example.org,Zo\xeb,1500,2026-01-01"[..]
    );
    assert_eq!(
        lines[2],
        &b"3,\"not valid UTF-8 (byte 18 of the line); re-export the file as UTF-8 (in Excel: Save As, \"\"CSV UTF-8 (Comma delimited)\"\")\",b@example.org,\"Zo\xeb, B\",1500,2026-01-01"[..]
    );
    assert_eq!(manifest(&w.path("run"))["segments"][0]["rows"], 1);
}

#[test]
fn manifest_counts_add_up_and_hashes_match() {
    use sha2::{Digest, Sha256};
    let mut csv = String::from("email,total,last\n");
    for i in 0..25 {
        csv.push_str(&format!(
            "d{i}@example.org,{},2026-0{}-01\n",
            i * 100,
            i % 9 + 1
        ));
    }
    let w = setup(csv.as_bytes());
    let o = segment(&w, &["--chunk-size", "4"]);
    assert_code(&o, 0);
    let m = manifest(&w.path("run"));
    let mut total = 0;
    for seg in m["segments"].as_array().unwrap() {
        let mut seg_rows = 0;
        for (i, c) in seg["chunks"].as_array().unwrap().iter().enumerate() {
            let file = c["file"].as_str().unwrap();
            assert_eq!(
                file,
                format!(
                    "segments/{}/{:05}.csv",
                    seg["name"].as_str().unwrap(),
                    i + 1
                )
            );
            let bytes = std::fs::read(w.path("run").join(file)).unwrap();
            let hex: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(c["sha256"], hex);
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with("email,total,last\n"));
            let rows = text.lines().count() as u64 - 1;
            assert_eq!(c["rows"], rows);
            assert!(rows <= 4 && rows > 0);
            seg_rows += rows;
        }
        assert_eq!(seg["rows"], seg_rows);
        total += seg_rows;
    }
    let d = &m["dropped"];
    for k in ["rejected", "duplicate", "suppressed", "unmatched"] {
        total += d[k].as_u64().unwrap();
    }
    assert_eq!(total, 25);
    let input_hex: String = Sha256::digest(csv.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(m["input"]["sha256"], input_hex);
    assert_eq!(m["as_of"], "2026-11-29");
    assert_eq!(m["campaign_id"], "test-2026");
}

#[test]
fn suppression_lists_plain_csv_and_domains() {
    let csv = "email,total,last\n\
        keep@example.org,5000,2026-01-01\n\
        Gone@Example.org,5000,2026-01-01\n\
        x@closed.example,5000,2026-01-01\n\
        y@sub.closed.example,5000,2026-01-01\n\
        bounced@example.net,5000,2026-01-01\n";
    let w = setup(csv.as_bytes());
    w.write(
        "suppress.txt",
        "# unsubscribes\n\ngone@example.ORG\n@closed.example\nnot an address\n",
    );
    w.write(
        "bounces.csv",
        "date,email\n2026-01-01,bounced@example.net\n",
    );
    let o = segment(
        &w,
        &["--suppress", "suppress.txt", "--suppress", "bounces.csv"],
    );
    assert_code(&o, 0);
    let m = manifest(&w.path("run"));
    assert_eq!(m["dropped"]["suppressed"], 3);
    assert_eq!(m["segments"][0]["rows"], 2, "subdomains are not suppressed");
    assert_eq!(m["suppression_entries_ignored"], 1);
    assert!(
        stderr(&o).contains("suppress.txt:5: suppression entry ignored"),
        "{}",
        stderr(&o)
    );
    let s = w.read("run/dropped/suppressed.csv");
    assert!(s.contains("3,suppressed: address is on a suppression list,Gone@Example.org"));
    assert!(s.contains("4,suppressed: domain is on a suppression list,x@closed.example"));
}

/// A list saved by a spreadsheet with semicolons or tabs suppresses its addresses; one of
/// which not a single entry reads is refused, since it would suppress nobody.
#[test]
fn suppression_lists_separated_otherwise_are_read_and_unreadable_ones_refused() {
    let csv = "email,total,last\n\
        keep@example.org,5000,2026-01-01\n\
        ann@example.org,5000,2026-01-01\n\
        bo@example.org,5000,2026-01-01\n";
    let w = setup(csv.as_bytes());
    w.write("semi.csv", "name;Email\nAnn;ann@example.org\n");
    w.write("tabs.tsv", "email\tdate\nbo@example.org\t2026-01-01\n");
    let o = segment(&w, &["--suppress", "semi.csv", "--suppress", "tabs.tsv"]);
    assert_code(&o, 0);
    let m = manifest(&w.path("run"));
    assert_eq!(m["dropped"]["suppressed"], 2, "{}", stderr(&o));
    assert_eq!(m["suppression_entries_ignored"], 0);

    w.write("broken.txt", "ann@example.org;Ann\nbo@example.org;Bo\n");
    let o = segment(&w, &["--suppress", "broken.txt", "--force"]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("broken.txt"), "{err}");
    assert!(err.contains("not one of its 2 entries"), "{err}");
    assert!(err.contains("would suppress nobody"), "{err}");
}

#[test]
fn too_many_rejects_writes_no_run() {
    let csv =
        "email,total,last\nok@example.org,1,2026-01-01\nbad,1,2026-01-01\nworse@,1,2026-01-01\n";
    let w = setup(csv.as_bytes());
    let o = segment(&w, &[]);
    assert_code(&o, 3);
    let err = stderr(&o);
    assert!(err.contains("2 of 3 rows"), "{err}");
    assert!(err.contains("first at line 3"), "{err}");
    assert!(err.contains("--max-reject-rate"), "{err}");
    assert_eq!(w.entries(), ["campaign.toml", "donors.csv"]);
}

#[test]
fn existing_runs_are_replaced_only_when_safe() {
    let csv = "email,total,last\nok@example.org,1,2026-01-01\n";
    let w = setup(csv.as_bytes());
    assert_code(&segment(&w, &[]), 0);
    let again = segment(&w, &[]);
    assert_code(&again, 3);
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_code(&segment(&w, &["--force"]), 0);
    std::fs::create_dir(w.path("run/ledger")).unwrap();
    let sending = segment(&w, &["--force"]);
    assert_code(&sending, 3);
    assert!(stderr(&sending).contains("sending has started"));
    assert!(w.path("run/ledger").exists());
    std::fs::create_dir(w.path("other")).unwrap();
    w.write("other/precious.txt", "x");
    let o = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "other",
        "--force",
    ]);
    assert_code(&o, 3);
    assert!(w.path("other/precious.txt").exists());
}

#[test]
fn rule_errors_point_at_the_column() {
    let w = setup(b"email,total,last\nok@example.org,1,2026-01-01\n");
    w.write(
        "campaign.toml",
        CAMPAIGN.replace("total >= 1000", "totl >= 1000"),
    );
    let o = segment(&w, &[]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("campaign.toml"), "{err}");
    assert!(err.contains("segment 1 \"major\""), "{err}");
    assert!(err.contains("totl >= 1000\n"), "{err}");
    assert!(err.contains("^^^^"), "{err}");
    assert!(
        err.contains("\"total\""),
        "suggests the close column: {err}"
    );
    assert_eq!(w.entries(), ["campaign.toml", "donors.csv"]);
}

#[test]
fn unknown_email_column_names_close_matches() {
    let w = setup(b"E-mail,total,last\nok@example.org,1,2026-01-01\n");
    let o = segment(&w, &[]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("no column \"email\""), "{err}");
    assert!(err.contains("E-mail"), "{err}");
    let fixed = segment(&w, &["--email-column", "E-mail"]);
    assert_code(&fixed, 0);
}

#[test]
fn explain_shows_each_rule_and_the_values() {
    let csv = "email,total,last\nann@example.org,250,2026-06-01\nANN@example.org,5000,2026-06-01\n";
    let w = setup(csv.as_bytes());
    let o = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--as-of",
        "2026-11-29",
        "--explain",
        "Ann@Example.org",
    ]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("line 2: goes to segment \"recent\""), "{out}");
    assert!(
        out.contains("line 3: dropped as a duplicate of line 2"),
        "{out}"
    );
    assert!(out.contains("250"), "shows the value compared: {out}");
    assert!(out.contains("segment \"major\""), "{out}");
    assert!(!w.path("run").exists());
    let missing = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--explain",
        "zed@example.org",
    ]);
    assert_code(&missing, 1);
    assert!(stderr(&missing).contains("no row"));
}

#[test]
fn json_summary_matches_manifest() {
    let w =
        setup(b"email,total,last\nok@example.org,1,2026-01-01\nbig@example.org,9000,2020-01-01\n");
    let o = segment(&w, &["--json"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    assert_eq!(v["data_rows"], 2);
    assert_eq!(v["segments"][0]["name"], "major");
    assert_eq!(v["segments"][0]["donors"], 1);
    assert_eq!(v["segments"][1]["donors"], 1);
    assert_eq!(v["dropped"]["rejected"], 0);
}

#[test]
fn header_only_and_empty_files_are_refused() {
    let w = setup(b"email,total,last\n");
    let o = segment(&w, &[]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("no donor rows"));
    w.write("donors.csv", "");
    let o = segment(&w, &[]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("is empty"), "{}", stderr(&o));
    assert!(!w.path("run").exists());
}

/// A quote that is never closed swallows the rest of the file into one record; the run
/// stops at the limit, names the file and the line the record starts on, and leaves no run.
#[test]
fn an_unclosed_quote_is_reported_at_its_line_and_no_run_is_left() {
    let mut csv = b"email,name,total,last\n".to_vec();
    for i in 0..5000 {
        csv.extend_from_slice(format!("d{i}@example.org,Name,10,2026-01-01\n").as_bytes());
    }
    csv.extend_from_slice(b"x@example.org,\"O'Brien,10,2026-01-01\n");
    for i in 0..40_000 {
        csv.extend_from_slice(format!("e{i}@example.org,Name,10,2026-01-01\n").as_bytes());
    }
    let w = setup(&csv);
    let o = segment(&w, &[]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("donors.csv") && err.contains("line 5002") && err.contains("quote"),
        "{err}"
    );
    assert!(!w.path("run").exists());
}

/// Kills `segment` mid-run: the target must not exist, so nothing can mistake the partial
/// output for a run.
#[test]
fn a_killed_segment_leaves_no_run() {
    let w = Workdir::new();
    w.write("campaign.toml", CAMPAIGN);
    let mut csv = String::from("email,total,last\n");
    for i in 0..400_000 {
        csv.push_str(&format!("donor{i}@example.org,{},2026-01-01\n", i % 3000));
    }
    w.write("donors.csv", csv);
    let mut child = w
        .command()
        .args([
            "segment",
            "donors.csv",
            "--campaign",
            "campaign.toml",
            "--out",
            "run",
            "--chunk-size",
            "10",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the staging directory holds some chunks, then kill without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let partial = w
            .entries()
            .into_iter()
            .find(|e| e.starts_with(".run.partial"));
        if let Some(p) = partial {
            let major = w.path(&p).join("segments/major");
            if std::fs::read_dir(&major).map(|d| d.count()).unwrap_or(0) > 2 {
                break;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("segment finished ({status}) before it could be killed; make the input bigger");
        }
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!w.path("run").exists());
    assert!(w.entries().iter().any(|e| e.starts_with(".run.partial")));
    // A new run succeeds and clears the dead process's staging directory.
    let o = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "run",
    ]);
    assert_code(&o, 0);
    assert_eq!(manifest(&w.path("run"))["input"]["data_rows"], 400_000);
    assert_eq!(w.entries(), ["campaign.toml", "donors.csv", "run"]);
}

/// A small deterministic generator (splitmix64) so the property test is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Property: for random exports full of awkward rows, every data row lands in exactly one
/// place (a chunk or a dropped file), unchanged, and the manifest's counts agree. Exports
/// separated by semicolons or tabs (`--delimiter`) land in comma-separated files with every
/// field unchanged.
#[test]
fn prop_every_row_lands_in_exactly_one_place() {
    let emails = [
        "a@example.org",
        "A@EXAMPLE.ORG",
        " b@example.org ",
        "c@x.example",
        "bad",
        "@x.org",
        "d@sub.example.com",
        "\"q, r\"@example.org",
        "e@example.org",
        "",
        "f@closed.example",
    ];
    let names = [
        "Ann",
        "\"Smith, J\"",
        "\"a;b, c\"",
        "\"tab\tbed\"",
        "\"two\nlines\"",
        "Zoë",
        "\"\"\"quoted\"\"\"",
        "",
    ];
    let totals = ["0", "1500", "999.99", "", "abc", "-5"];
    let dates = ["2026-01-01", "2019-05-05", "", "2026-02-30", "2025-11-29"];
    // Seeds 7 and 8 are separated by semicolons and tabs.
    for seed in 1..=8u64 {
        let sep = match seed {
            7 => ';',
            8 => '\t',
            _ => ',',
        };
        let mut rng = Rng(seed);
        let w = Workdir::new();
        w.write("campaign.toml", CAMPAIGN);
        w.write("suppress.txt", "e@example.org\n@closed.example\n");
        let crlf = seed.is_multiple_of(2);
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut csv = ["id", "email", "name", "total", "last"].join(&sep.to_string()) + nl;
        // The last seed spans several of segment's internal batches of 4096 rows.
        let n = if seed == 6 {
            9000
        } else {
            200 + (rng.next() % 200) as usize
        };
        let mut rows = Vec::new();
        for i in 0..n {
            let row = if rng.next().is_multiple_of(40) {
                format!("{i}{sep}short")
            } else {
                let email = rng.pick(&emails);
                let email = if email.contains([',', sep]) {
                    format!("\"{}\"", email.replace('"', "\"\""))
                } else {
                    email.to_owned()
                };
                [
                    &i.to_string(),
                    &email,
                    rng.pick(&names),
                    rng.pick(&totals),
                    rng.pick(&dates),
                ]
                .join(&sep.to_string())
            };
            csv.push_str(&row);
            csv.push_str(nl);
            rows.push(row);
        }
        w.write("donors.csv", &csv);
        let delimiter = sep.to_string();
        let mut args = vec![
            "segment",
            "donors.csv",
            "--campaign",
            "campaign.toml",
            "--out",
            "run",
            "--suppress",
            "suppress.txt",
            "--as-of",
            "2026-11-29",
            "--chunk-size",
            "7",
            "--max-reject-rate",
            "1",
        ];
        if sep != ',' {
            args.extend(["--delimiter", &delimiter]);
        }
        let o = w.run(&args);
        assert_code(&o, 0);
        let m = manifest(&w.path("run"));
        assert_eq!(m["input"]["delimiter"], delimiter);
        // The export's rows by id, as a CSV reader reads them.
        let input: Vec<Vec<String>> = csv::ReaderBuilder::new()
            .flexible(true)
            .delimiter(sep as u8)
            .from_reader(csv.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        // Collect every row written anywhere in the run, by its id (first field), checking
        // each has the fields it has in the export.
        let mut seen: Vec<usize> = Vec::new();
        let ids_in = |path: std::path::PathBuf, skip_cols: usize| -> Vec<usize> {
            let mut rdr = csv::ReaderBuilder::new()
                .flexible(true)
                .from_path(&path)
                .unwrap();
            rdr.records()
                .map(|r| {
                    let r = r.unwrap();
                    let id: usize = r[skip_cols].parse().unwrap();
                    let fields: Vec<&str> = r.iter().skip(skip_cols).collect();
                    assert_eq!(fields, input[id], "seed {seed}: row {id} in {path:?}");
                    id
                })
                .collect()
        };
        let mut chunk_rows = 0;
        for seg in m["segments"].as_array().unwrap() {
            let mut ids = Vec::new();
            for c in seg["chunks"].as_array().unwrap() {
                ids.extend(ids_in(w.path("run").join(c["file"].as_str().unwrap()), 0));
            }
            chunk_rows += ids.len() as u64;
            seen.extend(ids.iter().copied());
            assert!(
                ids.windows(2).all(|p| p[0] < p[1]),
                "seed {seed}: a segment's rows are out of input order"
            );
        }
        assert_eq!(
            chunk_rows,
            m["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["rows"].as_u64().unwrap())
                .sum::<u64>()
        );
        for kind in ["rejected", "duplicate", "suppressed", "unmatched"] {
            let ids = ids_in(w.path(&format!("run/dropped/{kind}.csv")), 2);
            assert_eq!(m["dropped"][kind], ids.len() as u64, "seed {seed} {kind}");
            seen.extend(ids.iter().copied());
            assert!(
                ids.windows(2).all(|p| p[0] < p[1]),
                "seed {seed}: {kind} rows are out of input order"
            );
        }
        seen.sort_unstable();
        let want: Vec<usize> = (0..n).collect();
        assert_eq!(seen, want, "seed {seed}: every row exactly once");
        assert_eq!(m["input"]["data_rows"], n as u64);
        if sep != ',' {
            continue;
        }
        // Rows of a comma-separated export are copied byte for byte (apart from the line
        // ending).
        let mut all = String::new();
        for seg in m["segments"].as_array().unwrap() {
            for c in seg["chunks"].as_array().unwrap() {
                all.push_str(
                    &std::fs::read_to_string(w.path("run").join(c["file"].as_str().unwrap()))
                        .unwrap(),
                );
            }
        }
        for kind in ["rejected", "duplicate", "suppressed", "unmatched"] {
            all.push_str(&w.read(&format!("run/dropped/{kind}.csv")));
        }
        // Every row of the small seeds; a sample of the big one, where searching the whole
        // run for each of 9000 rows would take seconds.
        let step = if n > 1000 { 31 } else { 1 };
        for row in rows.iter().step_by(step) {
            assert!(
                all.contains(row.as_str()),
                "seed {seed}: row not found verbatim: {row:?}"
            );
        }
    }
}

/// `segment --force` killed at each step of replacing a run (a crash point of the debug
/// build) leaves the old run or the new one whole at `run`, and the next segment clears what
/// was left.
#[test]
fn a_killed_force_leaves_the_old_run_or_the_new_one_whole() {
    const OLD: &[u8] = b"email,total,last\na@example.org,10,2026-06-01\n";
    const NEW: &[u8] =
        b"email,total,last\na@example.org,10,2026-06-01\nb@example.org,2000,2026-06-01\n";
    for (fault, new_in_place) in [("segment-before-swap", false), ("segment-after-swap", true)] {
        let w = setup(OLD);
        assert_code(&segment(&w, &[]), 0);
        w.write("donors.csv", NEW);
        let mut args = vec!["segment", "donors.csv", "--campaign", "campaign.toml"];
        args.extend(["--out", "run", "--as-of", "2026-11-29", "--force"]);
        let o = w
            .command()
            .args(&args)
            .env("CAMPAIGN_FAULT", fault)
            .output()
            .unwrap();
        assert_ne!(
            o.status.code(),
            Some(0),
            "{fault}: the crash point was not reached"
        );
        let rows = manifest(&w.path("run"))["input"]["data_rows"].as_u64();
        assert_eq!(rows, Some(if new_in_place { 2 } else { 1 }), "{fault}");
        // The run in place is whole: status reads it (and finds it not sent yet).
        assert_code(&w.run(&["status", "run"]), 5);
        assert_code(&segment(&w, &["--force"]), 0);
        assert_eq!(
            w.entries(),
            ["campaign.toml", "donors.csv", "run"],
            "{fault}"
        );
        assert_eq!(manifest(&w.path("run"))["input"]["data_rows"], 2);
    }
}

/// Where the swap is not available the old run is moved aside first; if the process dies
/// before the new one moves in, the next command that reads the run puts the old one back.
#[test]
fn an_old_run_left_aside_by_a_crash_is_restored() {
    let w = setup(b"email,total,last\na@example.org,10,2026-06-01\n");
    assert_code(&segment(&w, &[]), 0);
    // What a process (long gone: no pid this large runs) leaves between the two renames.
    std::fs::rename(w.path("run"), w.path(".run.replaced-4000000000")).unwrap();
    let o = w.run(&["status", "run"]);
    assert_code(&o, 5);
    assert_eq!(w.entries(), ["campaign.toml", "donors.csv", "run"]);
    // segment restores it too, and then refuses to overwrite it without --force.
    std::fs::rename(w.path("run"), w.path(".run.replaced-4000000000")).unwrap();
    assert_code(&segment(&w, &[]), 3);
    assert_eq!(w.entries(), ["campaign.toml", "donors.csv", "run"]);
}

/// A well-formed row over the 1 MiB limit is rejected with its line and the limit; the
/// rows after it are read as usual.
#[test]
fn a_row_over_the_size_limit_is_rejected_not_the_export() {
    let mut csv = b"email,total,last\n".to_vec();
    for i in 0..40 {
        csv.extend_from_slice(format!("d{i}@example.org,{i},2026-06-01\n").as_bytes());
    }
    csv.extend_from_slice(b"big@example.org,1,\"");
    csv.extend(std::iter::repeat_n(b'z', 2 * 1024 * 1024));
    csv.extend_from_slice(b"\"\n");
    for i in 40..60 {
        csv.extend_from_slice(format!("d{i}@example.org,{i},2026-06-01\n").as_bytes());
    }
    let w = setup(&csv);
    let o = segment(&w, &[]);
    assert_code(&o, 0);
    let m = manifest(&w.path("run"));
    assert_eq!(m["dropped"]["rejected"], 1);
    assert_eq!(m["input"]["data_rows"], 61);
    let rejected = w.read("run/dropped/rejected.csv");
    let row = rejected.lines().nth(1).unwrap();
    assert!(row.starts_with("42,"), "{}", &row[..80]);
    assert!(row.contains("1 MiB"), "{}", &row[..200]);
}

/// An export saved by Excel in a locale that writes semicolons is refused with what to do,
/// not with a complaint about a declared column; with `--delimiter ';'` it is segmented, and
/// `check` reads it the same way.
#[test]
fn a_semicolon_separated_export_is_refused_with_a_hint() {
    let w = setup(
        b"email;name;total;last\nann@example.org;\"Smith; Ann, Dr\";1200;2026-01-01\nbo@example.org;Bo;10;2026-06-01\n",
    );
    let o = segment(&w, &[]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("looks semicolon-separated, as Excel writes in some locales; re-export with commas (in Excel: Save As, \"CSV UTF-8 (Comma delimited)\") or pass --delimiter ';'"),
        "{err}"
    );
    assert!(!w.path("run").exists());
    let o = w.run(&["check", "campaign.toml", "--donors", "donors.csv"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("pass --delimiter ';'"),
        "{}",
        stdout(&o)
    );

    let o = segment(&w, &["--delimiter", ";"]);
    assert_code(&o, 0);
    let m = manifest(&w.path("run"));
    assert_eq!(m["input"]["delimiter"], ";");
    assert_eq!(
        m["header"],
        serde_json::json!(["email", "name", "total", "last"])
    );
    // Chunks are comma-separated: the field holding both separators is quoted.
    assert_eq!(
        w.read("run/segments/major/00001.csv"),
        "email,name,total,last\nann@example.org,\"Smith; Ann, Dr\",1200,2026-01-01\n"
    );
    assert_eq!(
        w.read("run/segments/recent/00001.csv"),
        "email,name,total,last\nbo@example.org,Bo,10,2026-06-01\n"
    );
    // `check` reads the columns with the delimiter given: the right one finds them all.
    let check = |d: &str| {
        let args = ["check", "campaign.toml", "--donors", "donors.csv"];
        stdout(&w.run(&[&args[..], &["--delimiter", d]].concat()))
    };
    let out = check(";");
    assert!(!out.contains("separated"), "{out}");
    assert!(!out.contains("has no such column"), "{out}");
    assert!(
        check("|")
            .contains("column \"last\" under [columns], but the donor file has no such column")
    );
}

/// A tab-separated export is refused the same way, and read with `--delimiter tab` (or
/// `'\t'`, as a shell passes it); a pipe-separated one names its own flag.
#[test]
fn a_tab_separated_export_is_read_with_delimiter_tab() {
    let w = setup(
        b"email\tname\ttotal\tlast\r\nann@example.org\t\"Ann \"\"A\"\"\tLee\"\t1200\t2026-01-01\r\nbo@example.org\tBo, B\t10\t2026-06-01\r\n",
    );
    let err = stderr(&segment(&w, &[]));
    assert!(
        err.contains("looks tab-separated; re-export with commas")
            && err.ends_with("or pass --delimiter tab\n"),
        "{err}"
    );
    for flag in ["tab", "\\t", "\t"] {
        let o = segment(&w, &["--delimiter", flag, "--force"]);
        assert_code(&o, 0);
        assert_eq!(manifest(&w.path("run"))["input"]["delimiter"], "\t");
        assert_eq!(
            w.read("run/segments/major/00001.csv"),
            "email,name,total,last\nann@example.org,\"Ann \"\"A\"\"\tLee\",1200,2026-01-01\n",
            "--delimiter {flag:?}"
        );
        assert_eq!(
            w.read("run/segments/recent/00001.csv"),
            "email,name,total,last\nbo@example.org,\"Bo, B\",10,2026-06-01\n"
        );
    }
    w.write(
        "donors.csv",
        "email|name|total|last\nann@example.org|Ann|1|2026-01-01\n",
    );
    let err = stderr(&segment(&w, &["--force"]));
    assert!(
        err.contains("looks pipe-separated; re-export with commas"),
        "{err}"
    );
    assert!(err.contains("or pass --delimiter '|'"), "{err}");
    assert_code(&segment(&w, &["--delimiter", "|", "--force"]), 0);
}

/// A `--delimiter` that cannot separate fields is a usage error (exit 2) saying why and what
/// to use, before any file is read.
#[test]
fn a_bad_delimiter_is_refused_with_what_to_use() {
    let w = setup(b"email,name,total\nann@example.org,Ann,1\n");
    for (value, why) in [
        ("x", "not a separator exports use"),
        (";;", "a separator is one character"),
        ("\"", "a quote encloses fields"),
        ("';'", "the shell did not remove them"),
        ("\u{ff1b}", "not an ASCII character"),
        ("\n", "a line break ends rows"),
        ("", "the value is empty"),
    ] {
        let o = segment(&w, &["--delimiter", value]);
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(err.contains("--delimiter"), "{value:?}: {err}");
        assert!(err.contains(why), "{value:?}: {err}");
        assert!(
            err.contains("use ';', '|', ',' or tab (also written '\\t')"),
            "{value:?}: {err}"
        );
        assert!(!w.path("run").exists());
    }
}
