use std::path::{Path, PathBuf};

use jiff::civil::Date;

use super::*;
use crate::campaign::{Campaign, SegmentDef, SegmentName};
use crate::csvio::Fields;
use crate::schema::{ColumnType, Schema, TypedRow};

fn fixture_campaign() -> Campaign {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/campaign.toml");
    Campaign::load(&path).expect("fixtures/campaign.toml loads")
}

fn run_info(campaign: &Campaign) -> RunInfo {
    RunInfo::new(campaign, Date::constant(2026, 3, 1))
}

/// A campaign whose templates live in `dir`, with the given `[message]` extras.
fn campaign_in(dir: &Path, message: &str) -> Campaign {
    let toml = format!(
        "[campaign]\nid = \"gala\"\nname = \"Spring Gala 2026\"\n[columns]\ntotal_given = \"number\"\nlast_gift_date = \"date\"\n[[segment]]\nname = \"all\"\ntemplate = \"t\"\n[message]\nfrom = \"a@b.example\"\ncurrency = \"£\"\n{message}\n[templates]\ndir = \"tpl\"\n"
    );
    let path = dir.join("campaign.toml");
    std::fs::write(&path, &toml).unwrap();
    Campaign::parse(&path, &toml).unwrap()
}

/// Writes `files` under `dir/tpl/`.
fn write_templates(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join("tpl").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn load_temp(
    files: &[(&str, &str)],
    message: &str,
) -> (tempfile::TempDir, Result<TemplateSet, Vec<Problem>>) {
    let dir = tempfile::tempdir().unwrap();
    write_templates(dir.path(), files);
    let campaign = campaign_in(dir.path(), message);
    let set = TemplateSet::load(&campaign, run_info(&campaign));
    (dir, set)
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// One donor row for the temp campaigns: email, first_name, last_name, total_given, last_gift_date, Last Gift.
struct TestRow {
    schema: Schema,
    data: String,
    ends: Vec<usize>,
    typed: TypedRow,
}

impl TestRow {
    fn new(cells: &[&str]) -> TestRow {
        let h = header(&[
            "email",
            "first_name",
            "last_name",
            "total_given",
            "last_gift_date",
            "Last Gift",
        ]);
        let schema = Schema::new(
            &h,
            &[
                ("total_given".into(), ColumnType::Number),
                ("last_gift_date".into(), ColumnType::Date),
            ],
        )
        .unwrap();
        let mut data = String::new();
        let mut ends = Vec::new();
        for c in cells {
            data.push_str(c);
            ends.push(data.len());
        }
        let mut typed = TypedRow::default();
        schema
            .parse_row(&Fields::new(&data, &ends), &mut typed)
            .unwrap();
        TestRow {
            schema,
            data,
            ends,
            typed,
        }
    }

    fn render(&self, set: &TemplateSet, template: &str) -> Result<Rendered, RenderError> {
        let fields = Fields::new(&self.data, &self.ends);
        let donor = Donor {
            schema: &self.schema,
            fields: &fields,
            typed: &self.typed,
            email: "ann@example.org",
            segment: "all",
            unsubscribe_token: "tok123",
        };
        set.render(template, &donor)
    }
}

fn ann() -> TestRow {
    TestRow::new(&[
        "Ann@Example.org",
        " Ann ",
        "Lee",
        "1250.5",
        "2026-11-06",
        "2025-01-01",
    ])
}

fn render_one(
    files: &[(&str, &str)],
    message: &str,
    row: &TestRow,
) -> Result<Rendered, RenderError> {
    let (_dir, set) = load_temp(files, message);
    row.render(&set.unwrap_or_else(|p| panic!("{p:?}")), "t")
}

fn body(text: &str) -> Rendered {
    render_one(&[("t/subject.txt", "Hi"), ("t/body.txt", text)], "", &ann()).unwrap()
}

fn segments(template: &str) -> Vec<SegmentDef> {
    vec![SegmentDef {
        name: SegmentName::new("all").unwrap(),
        when: None,
        template: template.into(),
    }]
}

#[test]
fn unknown_variable_names_file_line_variable_and_suggestion() {
    let (dir, set) = load_temp(
        &[
            ("t/subject.txt", "Hello"),
            (
                "t/body.txt",
                "Dear {{ first_name }},\n\nYou gave {{ totl_given | money }}.\n",
            ),
        ],
        "",
    );
    let set = set.unwrap();
    let h = header(&["email", "first_name", "total_given"]);
    let problems = set.check(&segments("t"), &h);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert_eq!(p.file, dir.path().join("tpl/t/body.txt"));
    assert_eq!(p.line, Some(3));
    let shown = p.to_string();
    assert!(
        shown.contains("body.txt:3: unknown variable \"totl_given\""),
        "{shown}"
    );
    assert!(shown.contains("did you mean \"total_given\""), "{shown}");
}

#[test]
fn check_suggests_donor_lookup_for_non_identifier_columns_and_accepts_attributes() {
    let (_dir, set) = load_temp(
        &[
            ("t/subject.txt", "{{ campaign.name }} {{ today }}"),
            (
                "t/body.txt",
                "{{ last_gift }} {{ donor['Last Gift'] }} {{ segment }}",
            ),
        ],
        "",
    );
    let problems = set
        .unwrap()
        .check(&segments("t"), &header(&["email", "Last Gift"]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .contains("did you mean \"donor['Last Gift']\""),
        "{}",
        problems[0]
    );
}

#[test]
fn syntax_error_has_line() {
    let (dir, set) = load_temp(
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "one\ntwo\n{% if x %}three\n"),
        ],
        "",
    );
    let problems = set.unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, dir.path().join("tpl/t/body.txt"));
    assert!(
        problems[0].line.is_some_and(|l| l >= 3),
        "{:?}",
        problems[0]
    );
    assert!(
        problems[0].message.contains("syntax error"),
        "{}",
        problems[0]
    );
}

#[test]
fn several_problems_reported_at_once() {
    let (_dir, set) = load_temp(
        &[
            ("t/subject.txt", "{{ oops"),
            ("t/body.html", "{% extends \"_layouts/bsae.html\" %}"),
            ("_layouts/base.html", "{% block content %}{% endblock %}"),
            ("u/body.txt", "{% for %}"),
        ],
        "to_name = \"{{ first_name \"",
    );
    let problems = set.unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 4, "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains("t/subject.txt:1")),
        "{text:#?}"
    );
    assert!(text.iter().any(|t| t.contains("u/body.txt:1")), "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains("\"_layouts/bsae.html\"")
            && t.contains("did you mean \"_layouts/base.html\"")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("campaign.toml:") && t.contains("to_name")),
        "{text:#?}"
    );
}

#[test]
fn load_with_problems_lets_check_report_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(
        dir.path(),
        &[
            ("t/subject.txt", "Hi {{ name }"),
            ("u/subject.txt", "Hi"),
            (
                "u/body.txt",
                "Hello {{ name }}\n\nYou live in {{ city }}.\n",
            ),
        ],
    );
    let campaign = campaign_in(dir.path(), "");
    let (set, mut problems) = TemplateSet::load_with_problems(&campaign, run_info(&campaign));
    assert_eq!(problems.len(), 1, "{problems:?}");
    let mut segs = segments("t");
    segs.push(SegmentDef {
        name: SegmentName::new("u").unwrap(),
        when: None,
        template: "u".into(),
    });
    problems.extend(set.check(&segs, &header(&["email", "name"])));
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{text:#?}");
    assert!(
        text[0].contains("t/subject.txt:1: template syntax error"),
        "{text:#?}"
    );
    assert!(text[1].contains("t/body.txt: missing"), "{text:#?}");
    assert!(
        text[2].contains("u/body.txt:3: unknown variable \"city\""),
        "{text:#?}"
    );
    let err = ann().render(&set, "t").unwrap_err();
    assert!(
        err.message.contains("has errors and was not loaded"),
        "{err}"
    );
}

#[test]
fn missing_body_and_folder_are_check_problems() {
    let (dir, set) = load_temp(&[("t/subject.txt", "Hi")], "");
    let set = set.unwrap();
    let mut segs = segments("t");
    segs.push(SegmentDef {
        name: SegmentName::new("other").unwrap(),
        when: None,
        template: "tt".into(),
    });
    let problems = set.check(&segs, &header(&["email"]));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].file, dir.path().join("tpl/t/body.txt"));
    assert!(problems[0].message.contains("missing"), "{}", problems[0]);
    assert!(
        problems[1].message.contains("no folder \"tt\"")
            && problems[1].message.contains("did you mean \"t\""),
        "{}",
        problems[1]
    );
    let err = ann().render(&set, "t").unwrap_err();
    assert!(
        err.to_string().contains("body.txt") && err.to_string().contains("does not exist"),
        "{err}"
    );
}

#[test]
fn unsubscribe_url_rules_are_checked() {
    let (_dir, set) = load_temp(
        &[
            ("t/subject.txt", "Hi"),
            (
                "t/body.txt",
                "{{ unsubscribe_url }} {{ unsubscribe_token }}",
            ),
        ],
        "",
    );
    let problems = set.unwrap().check(&segments("t"), &header(&["email"]));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("sets no `unsubscribe_url`"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("unsubscribe_token is only available"))
    );

    let (_dir, set) = load_temp(
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "{{ unsubscribe_url }}"),
        ],
        "to_name = \"{{ unsubscribe_url }}\"\nunsubscribe_url = \"https://x.example/u?t={{ unsubscribe_token }}&e={{ emial }}\"",
    );
    let problems = set.unwrap().check(&segments("t"), &header(&["email"]));
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 2, "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains("campaign.toml:")
            && t.contains("to_name")
            && t.contains("cannot use unsubscribe_url")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("\"emial\"") && t.contains("did you mean \"email\"")),
        "{text:#?}"
    );
}

#[test]
fn html_autoescapes_and_text_does_not() {
    let row = TestRow::new(&[
        "x@y",
        "<script>alert(1)</script>",
        "O'Neil & Co",
        "5",
        "",
        "",
    ]);
    let r = render_one(
        &[
            ("t/subject.txt", "For {{ first_name }}"),
            ("t/body.txt", "Dear {{ first_name }} {{ last_name }}"),
            (
                "t/body.html",
                "<p>Dear {{ first_name }} {{ last_name }}</p>",
            ),
        ],
        "",
        &row,
    )
    .unwrap();
    assert_eq!(r.subject, "For <script>alert(1)</script>");
    assert_eq!(r.text, "Dear <script>alert(1)</script> O'Neil & Co");
    let html = r.html.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;") && html.contains("&amp; Co"),
        "{html}"
    );
}

#[test]
fn variables_have_their_documented_values() {
    let r = body(
        "{{ first_name }}|{{ total_given }}|{{ last_gift_date }}|{{ email }}|{{ segment }}|{{ campaign.id }}|{{ campaign.name }}|{{ today }}|{{ donor['Last Gift'] }}",
    );
    // `email` is the column here, because the file has one.
    assert_eq!(
        r.text,
        "Ann|1250.5|2026-11-06|Ann@Example.org|all|gala|Spring Gala 2026|2026-03-01|2025-01-01"
    );
    let row = TestRow::new(&["x@y", "", "", "25", "", ""]);
    let r = render_one(
        &[
            ("t/subject.txt", "Hi"),
            (
                "t/body.txt",
                "[{{ total_given }}][{{ last_gift_date }}][{{ first_name }}]",
            ),
        ],
        "",
        &row,
    )
    .unwrap();
    assert_eq!(r.text, "[25][][]");
}

#[test]
fn email_builtin_only_without_an_email_column() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(
        dir.path(),
        &[("t/subject.txt", "Hi"), ("t/body.txt", "{{ email }}")],
    );
    let campaign = campaign_in(dir.path(), "");
    let set = TemplateSet::load(&campaign, run_info(&campaign)).unwrap();
    let schema = Schema::new(&header(&["Email Address", "first_name"]), &[]).unwrap();
    let (data, ends) = ("A@B.example Ann".to_string(), vec![12, 15]);
    let typed = {
        let mut t = TypedRow::default();
        schema
            .parse_row(&Fields::new(&data, &ends), &mut t)
            .unwrap();
        t
    };
    let fields = Fields::new(&data, &ends);
    let donor = Donor {
        schema: &schema,
        fields: &fields,
        typed: &typed,
        email: "a@b.example",
        segment: "s",
        unsubscribe_token: "t",
    };
    assert_eq!(set.render("t", &donor).unwrap().text, "a@b.example");
}

#[test]
fn money_filter() {
    let r = body(
        "{{ total_given | money }}|{{ 25 | money }}|{{ 1234567.891 | money }}|{{ '1000.5' | money('€') }}|{{ -3.1 | money }}|{{ 0.999 | money }}|{{ 0 | money('') }}|{{ '' | money }}|{{ none | money }}",
    );
    assert_eq!(
        r.text,
        "£1,250.50|£25|£1,234,567.89|€1,000.50|-£3.10|£1|0||"
    );
    let err = render_one(
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "a\n{{ first_name | money }}"),
        ],
        "",
        &ann(),
    )
    .unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("\"Ann\" is not a number"), "{err}");
    assert_eq!(filters::format_money(1e20, "£"), None);
    assert_eq!(filters::format_money(100.0, "").as_deref(), Some("100"));
    assert_eq!(filters::format_money(0.05, "£").as_deref(), Some("£0.05"));
    assert_eq!(
        filters::format_money(-999_999.1, "£").as_deref(),
        Some("-£999,999.10")
    );
}

#[test]
fn money_without_currency_has_no_symbol() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(
        dir.path(),
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "{{ 1500 | money }}"),
        ],
    );
    let campaign = campaign_in(dir.path(), "");
    let mut run = run_info(&campaign);
    run.currency = None;
    let set = TemplateSet::load(&campaign, run).unwrap();
    assert_eq!(ann().render(&set, "t").unwrap().text, "1,500");
}

#[test]
fn date_filter() {
    let r = body(
        "{{ last_gift_date | date('%-d %B %Y') }}|{{ today | date('%d/%m/%Y') }}|{{ '' | date('%Y') }}|{{ none | date('%Y') }}|{{ last_gift_date | date('%A %-d %b') }}",
    );
    assert_eq!(r.text, "6 November 2026|01/03/2026|||Friday 6 Nov");
    let err = render_one(
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "{{ first_name | date('%Y') }}"),
        ],
        "",
        &ann(),
    )
    .unwrap_err();
    assert!(err.message.contains("\"Ann\" is not a date"), "{err}");
    let err = render_one(
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "{{ today | date('%Q') }}"),
        ],
        "",
        &ann(),
    )
    .unwrap_err();
    assert!(err.message.contains("cannot be used for a date"), "{err}");
}

#[test]
fn fallback_filter() {
    let row = TestRow::new(&["x@y", "  ", "Lee", "", "", ""]);
    let r = render_one(
        &[("t/subject.txt", "Hi"), ("t/body.txt", "{{ first_name | fallback('friend') }}|{{ last_name | fallback('x') }}|{{ total_given | money | fallback('your gifts') }}|{{ none | fallback(0) }}|{{ 0 | fallback(1) }}")],
        "",
        &row,
    )
    .unwrap();
    assert_eq!(r.text, "friend|Lee|your gifts|0|0");
}

#[test]
fn strict_undefined_fails_at_render_with_file_and_line() {
    let err = render_one(
        &[("t/subject.txt", "Hi"), ("t/body.txt", "a\nb {{ nope }}")],
        "",
        &ann(),
    )
    .unwrap_err();
    assert!(err.file.ends_with("tpl/t/body.txt"), "{err}");
    assert_eq!(err.line, Some(2));
    assert!(
        err.to_string().contains("body.txt:2: `nope` is undefined"),
        "{err}"
    );
}

#[test]
fn extends_and_include() {
    let r = render_one(
        &[
            ("_layouts/base.html", "<h1>{% block title %}T{% endblock %}</h1>{% block content %}{% endblock %}{% include \"_partials/footer.html\" %}"),
            ("_partials/footer.html", "<a href=\"{{ unsubscribe_url }}\">stop</a>"),
            ("_partials/footer.txt", "-- stop: {{ unsubscribe_url }}"),
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "Hello\n{% include \"_partials/footer.txt\" %}"),
            ("t/body.html", "{% extends \"_layouts/base.html\" %}{% block content %}<p>{{ first_name }}</p>{% endblock %}"),
        ],
        "unsubscribe_url = \"https://x.example/u?e={{ email | urlencode }}&t={{ unsubscribe_token }}\"",
        &ann(),
    )
    .unwrap();
    let url = "https://x.example/u?e=Ann%40Example.org&t=tok123";
    assert_eq!(r.unsubscribe_url.as_deref(), Some(url));
    assert_eq!(r.text, format!("Hello\n-- stop: {url}"));
    assert_eq!(
        r.html.as_deref(),
        Some(
            "<h1>T</h1><p>Ann</p><a href=\"https://x.example/u?e=Ann%40Example.org&amp;t=tok123\">stop</a>"
        )
    );
}

#[test]
fn subject_must_be_one_nonempty_line() {
    let err = render_one(
        &[
            ("t/subject.txt", "Hi {{ first_name }}\nsecond line\n"),
            ("t/body.txt", "x"),
        ],
        "",
        &ann(),
    )
    .unwrap_err();
    assert!(
        err.file.ends_with("subject.txt") && err.message.contains("several lines"),
        "{err}"
    );
    let row = TestRow::new(&["x@y", "", "", "", "", ""]);
    let err = render_one(
        &[("t/subject.txt", "{{ first_name }}\n"), ("t/body.txt", "x")],
        "",
        &row,
    )
    .unwrap_err();
    assert!(err.message.contains("renders empty"), "{err}");
    // A single trailing newline in the file is not a second line.
    let r = render_one(
        &[
            ("t/subject.txt", "  Hi {{ first_name }}  \n"),
            ("t/body.txt", "x"),
        ],
        "",
        &ann(),
    )
    .unwrap();
    assert_eq!(r.subject, "Hi Ann");
}

#[test]
fn to_name_empty_is_none() {
    let files = [("t/subject.txt", "Hi"), ("t/body.txt", "x")];
    let message = "to_name = \"{{ first_name }} {{ last_name }}\"";
    let r = render_one(
        &files,
        message,
        &TestRow::new(&["x@y", " ", "", "", "", ""]),
    )
    .unwrap();
    assert_eq!(r.to_name, None);
    let r = render_one(
        &files,
        message,
        &TestRow::new(&["x@y", "Ann", "", "", "", ""]),
    )
    .unwrap();
    assert_eq!(r.to_name.as_deref(), Some("Ann"));
    let r = render_one(
        &files,
        message,
        &TestRow::new(&["x@y", "Ann  Marie", "Lee", "", "", ""]),
    )
    .unwrap();
    assert_eq!(r.to_name.as_deref(), Some("Ann Marie Lee"));
    // A line break from a cell fails the donor, as in the subject.
    let e = render_one(
        &files,
        message,
        &TestRow::new(&["x@y", "Ann\nMarie", "Lee", "", "", ""]),
    )
    .unwrap_err();
    assert!(
        e.message.contains("U+000A") && e.message.contains("to_name"),
        "{e}"
    );
    let r = render_one(&files, "", &ann()).unwrap();
    assert_eq!((r.to_name, r.unsubscribe_url, r.html), (None, None, None));
}

#[test]
fn fingerprint_changes_when_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(
        dir.path(),
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "x"),
            ("_partials/f.txt", "a"),
        ],
    );
    let campaign = campaign_in(dir.path(), "");
    let load = || {
        TemplateSet::load(&campaign, run_info(&campaign))
            .unwrap()
            .fingerprint()
    };
    let first = load();
    assert_eq!(first.len(), 64);
    assert_eq!(first, load(), "stable across loads");
    write_templates(dir.path(), &[("_partials/f.txt", "b")]);
    let second = load();
    assert_ne!(first, second);
    write_templates(dir.path(), &[("_partials/g.txt", "")]);
    assert_ne!(second, load(), "a new empty file counts");
    let with_inline = campaign_in(dir.path(), "to_name = \"{{ first_name }}\"");
    let third = TemplateSet::load(&with_inline, run_info(&with_inline))
        .unwrap()
        .fingerprint();
    assert_ne!(third, load(), "inline templates count");
}

#[test]
fn hidden_files_are_ignored_and_missing_dir_is_a_problem() {
    let (_dir, set) = load_temp(
        &[
            ("t/subject.txt", "Hi"),
            ("t/body.txt", "x"),
            ("t/.body.txt.swp", "{{ broken"),
        ],
        "",
    );
    assert!(set.is_ok());
    let dir = tempfile::tempdir().unwrap();
    let campaign = campaign_in(dir.path(), "");
    let problems = TemplateSet::load(&campaign, run_info(&campaign)).unwrap_err();
    assert!(
        problems[0]
            .message
            .contains("cannot open the templates folder"),
        "{}",
        problems[0]
    );
}

#[test]
fn set_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TemplateSet>();
}

/// Fixture rows that parse, with the schema of fixtures/campaign.toml.
fn fixture_rows(campaign: &Campaign) -> (Schema, Vec<(String, Vec<usize>)>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/donors.csv");
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let schema = Schema::new(&header, &campaign.columns).unwrap();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        let mut data = String::new();
        let mut ends = Vec::new();
        for f in record.iter() {
            data.push_str(f);
            ends.push(data.len());
        }
        rows.push((data, ends));
    }
    (schema, rows)
}

#[test]
fn real_templates_pass_check_against_fixture_header() {
    let campaign = fixture_campaign();
    let set =
        TemplateSet::load(&campaign, run_info(&campaign)).unwrap_or_else(|p| panic!("{p:#?}"));
    let (schema, _) = fixture_rows(&campaign);
    let header: Vec<String> = schema.columns().iter().map(|c| c.name.clone()).collect();
    let problems = set.check(&campaign.segments, &header);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        set.template_names(),
        ["first_time", "lapsed", "major", "regular"]
    );
}

#[test]
fn renders_every_fixture_donor_with_every_segment_template() {
    let campaign = fixture_campaign();
    let set = TemplateSet::load(&campaign, run_info(&campaign)).unwrap();
    let (schema, rows) = fixture_rows(&campaign);
    let mut typed = TypedRow::default();
    let mut rendered = 0;
    for (data, ends) in &rows {
        let fields = Fields::new(data, ends);
        if schema.parse_row(&fields, &mut typed).is_err() {
            continue; // rejected by `segment`, never rendered
        }
        let email = fields.get(1).trim().to_lowercase();
        for segment in &campaign.segments {
            let donor = Donor {
                schema: &schema,
                fields: &fields,
                typed: &typed,
                email: &email,
                segment: segment.name.as_str(),
                unsubscribe_token: "tok",
            };
            let r = set
                .render(&segment.template, &donor)
                .unwrap_or_else(|e| panic!("{} with {}: {e}", fields.get(0), segment.template));
            assert!(!r.subject.contains('\n') && !r.subject.is_empty());
            assert!(
                r.text.contains("Registered charity")
                    && r.text.contains("unsubscribe?c=spring-gala-2026")
            );
            let html = r.html.expect("every real template has HTML");
            assert!(html.contains("&amp;t=tok"), "the URL is escaped in HTML");
            assert!(!html.contains("{{") && !r.text.contains("{{"));
            rendered += 1;
        }
    }
    assert!(rendered > 800, "{rendered}");
}

#[test]
fn real_major_template_reads_well() {
    let campaign = fixture_campaign();
    let set = TemplateSet::load(&campaign, run_info(&campaign)).unwrap();
    let (schema, _) = fixture_rows(&campaign);
    let row = "D1,zoë@example.org,Zoë,Hughes,12500.00,2026-11-06,2020-03-14,12,GB,Norwich,no,";
    let (data, ends) = split(row);
    let fields = Fields::new(&data, &ends);
    let mut typed = TypedRow::default();
    schema.parse_row(&fields, &mut typed).unwrap();
    let donor = Donor {
        schema: &schema,
        fields: &fields,
        typed: &typed,
        email: "zoë@example.org",
        segment: "major",
        unsubscribe_token: "tok",
    };
    let r = set.render("major", &donor).unwrap();
    assert_eq!(
        r.subject,
        "Zoë, a personal invitation to the Spring Gala 2026"
    );
    assert_eq!(r.to_name.as_deref(), Some("Zoë Hughes"));
    assert!(r.text.contains("given £12,500 to\nFriends"), "{}", r.text);
    assert!(r.text.contains("6 November 2026"), "{}", r.text);
    let html = r.html.unwrap();
    assert!(
        (7_000..=11_000).contains(&html.len()),
        "major HTML is {} bytes",
        html.len()
    );
}

fn split(line: &str) -> (String, Vec<usize>) {
    let mut data = String::new();
    let mut ends = Vec::new();
    for f in line.split(',') {
        data.push_str(f);
        ends.push(data.len());
    }
    (data, ends)
}

/// `cargo test --release -- --ignored render_speed --nocapture`
#[test]
#[ignore]
fn render_speed() {
    let campaign = fixture_campaign();
    let set = TemplateSet::load(&campaign, run_info(&campaign)).unwrap();
    let (schema, rows) = fixture_rows(&campaign);
    let mut prepared: Vec<(String, Vec<usize>, TypedRow)> = Vec::new();
    for (data, ends) in rows {
        let mut typed = TypedRow::default();
        if schema
            .parse_row(&Fields::new(&data, &ends), &mut typed)
            .is_ok()
        {
            prepared.push((data, ends, typed));
        }
    }
    let html_len = {
        let (data, ends, typed) = &prepared[0];
        let fields = Fields::new(data, ends);
        let donor = Donor {
            schema: &schema,
            fields: &fields,
            typed,
            email: "a@b",
            segment: "major",
            unsubscribe_token: "t",
        };
        set.render("major", &donor).unwrap().html.unwrap().len()
    };
    let n = 50_000;
    let start = std::time::Instant::now();
    let mut bytes = 0;
    for i in 0..n {
        let (data, ends, typed) = &prepared[i % prepared.len()];
        let fields = Fields::new(data, ends);
        let donor = Donor {
            schema: &schema,
            fields: &fields,
            typed,
            email: "a@b",
            segment: "major",
            unsubscribe_token: "t",
        };
        let r = set.render("major", &donor).unwrap();
        bytes += r.text.len() + r.html.map_or(0, |h| h.len());
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "render_speed: {per:.2} µs/render (major: subject + text + {html_len}-byte HTML + to_name + unsubscribe_url), {bytes} bytes"
    );
    let _ = PathBuf::new();
}

#[test]
fn unknown_filter_is_a_check_problem_and_a_render_error() {
    let files = [
        ("t/subject.txt", "Hi"),
        (
            "t/body.txt",
            "Dear {{ first_name }}\n{{ total_given | mony }} {{ first_name | title }}",
        ),
    ];
    let (_dir, set) = load_temp(&files, "");
    let set = set.unwrap();
    let problems = set.check(&segments("t"), &header(&["first_name", "total_given"]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    let shown = problems[0].to_string();
    assert!(
        shown.contains("body.txt:2: unknown filter \"mony\" (did you mean \"money\""),
        "{shown}"
    );
    let err = ann().render(&set, "t").unwrap_err();
    assert!(
        err.to_string()
            .contains("body.txt:2: filter mony is unknown"),
        "{err}"
    );
}

#[test]
fn inline_template_errors_point_at_the_campaign_file() {
    let (dir, set) = load_temp(
        &[("t/subject.txt", "Hi"), ("t/body.txt", "x")],
        "to_name = \"{{ first_name.x }}\"",
    );
    let err = ann().render(&set.unwrap(), "t").unwrap_err();
    assert_eq!(
        err.file,
        dir.path().join("campaign.toml").display().to_string()
    );
    assert_eq!(err.line, Some(13));
    assert!(
        err.message
            .starts_with("[message] to_name: `first_name.x` is undefined"),
        "{err}"
    );
}

#[test]
fn names_set_in_a_layout_are_known_in_its_partials_but_prose_is_not_code() {
    let (_dir, set) = load_temp(
        &[
            ("t/subject.txt", "Hi"),
            (
                "t/body.txt",
                "Known as bob.\n{% set greeting = 'Hi' %}{% for k, v in donor | items %}{{ k }}{{ v }}{{ loop.index }}{% endfor %}\n{% include '_p.txt' %}",
            ),
            ("_p.txt", "{{ greeting }} {{ bob }}"),
        ],
        "",
    );
    let problems = set.unwrap().check(&segments("t"), &header(&["email"]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .to_string()
            .contains("_p.txt:1: unknown variable \"bob\""),
        "{}",
        problems[0]
    );
}
