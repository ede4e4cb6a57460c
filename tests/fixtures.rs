//! The shipped fixtures, segmented by the real binary, against what `fixtures/make_fixtures.py`
//! computed independently when it wrote them (`fixtures/donors.expected.json`).

mod common;

use std::collections::BTreeSet;

use common::*;

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("donors.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The `line` column of a dropped-rows file.
fn dropped_lines(w: &Workdir, kind: &str) -> Vec<u64> {
    let mut rdr = csv::Reader::from_path(w.path(&format!("run/dropped/{kind}.csv"))).unwrap();
    rdr.records()
        .map(|r| r.unwrap()[0].parse::<u64>().unwrap())
        .collect()
}

fn lines_of(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect()
}

#[test]
fn fixtures_segment_as_computed_independently() {
    let w = Workdir::new();
    let o = w.run(&[
        "segment",
        fixture("donors.csv").to_str().unwrap(),
        "--campaign",
        fixture("campaign.toml").to_str().unwrap(),
        "--suppress",
        fixture("suppress.txt").to_str().unwrap(),
        "--suppress",
        fixture("suppress.csv").to_str().unwrap(),
        "--as-of",
        "2026-11-29",
        "--out",
        "run",
    ]);
    assert_code(&o, 0);
    let e = expected();
    let m = manifest(&w.path("run"));
    assert_eq!(m["input"]["data_rows"], e["data_rows"]);
    assert_eq!(m["dropped"]["rejected"], e["rejected"]);
    assert_eq!(m["dropped"]["duplicate"], e["duplicate"]["count"]);
    assert_eq!(m["dropped"]["suppressed"], e["suppressed"]["total"]);
    assert_eq!(m["dropped"]["unmatched"], e["unmatched"]["count"]);
    for seg in m["segments"].as_array().unwrap() {
        let name = seg["name"].as_str().unwrap();
        assert_eq!(seg["rows"], e["segments"][name], "segment {name}");
    }

    let mut rejected = lines_of(&e["invalid_email"]["lines"]);
    rejected.extend(lines_of(&e["bad_value"]["lines"]));
    rejected.sort();
    assert_eq!(dropped_lines(&w, "rejected"), rejected);
    assert_eq!(
        dropped_lines(&w, "duplicate"),
        lines_of(&e["duplicate"]["lines"])
    );
    assert_eq!(
        dropped_lines(&w, "suppressed"),
        lines_of(&e["suppressed"]["lines"])
    );
    assert_eq!(
        dropped_lines(&w, "unmatched"),
        lines_of(&e["unmatched"]["lines"])
    );

    // Each segment holds exactly the donors the generator put there, each once.
    let input_header = {
        let mut rdr = csv::Reader::from_path(fixture("donors.csv")).unwrap();
        rdr.headers().unwrap().clone()
    };
    for seg in m["segments"].as_array().unwrap() {
        let name = seg["name"].as_str().unwrap();
        let mut ids = Vec::new();
        for c in seg["chunks"].as_array().unwrap() {
            let mut rdr =
                csv::Reader::from_path(w.path("run").join(c["file"].as_str().unwrap())).unwrap();
            assert_eq!(rdr.headers().unwrap(), &input_header);
            for r in rdr.records() {
                ids.push(r.unwrap()[0].to_owned());
            }
        }
        let got: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(got.len(), ids.len(), "a donor twice in {name}");
        let want: BTreeSet<String> = e["segment_donor_ids"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, want, "segment {name}");
    }
    let table = stdout(&o);
    assert!(table.contains("major"), "{table}");
    assert!(
        table.contains("10 rejected, 6 duplicate, 10 suppressed, 4 unmatched"),
        "{table}"
    );
}

#[test]
fn bad_rules_fixture_reports_every_rule_problem() {
    let w = Workdir::new();
    let o = w.run(&[
        "segment",
        fixture("donors.csv").to_str().unwrap(),
        "--campaign",
        fixture("bad_rules.toml").to_str().unwrap(),
        "--out",
        "run",
    ]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("segment 1 \"major\""), "{err}");
    assert!(err.contains("segment 2 \"lapsed\""), "{err}");
    assert!(err.contains("unknown column \"last_gift_dat\""), "{err}");
    assert!(err.contains("did you mean \"last_gift_date\""), "{err}");
    assert!(!w.path("run").exists());
}
