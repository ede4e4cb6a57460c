//! Behaviour of the rule language end to end: compile against a schema, evaluate on rows.

use jiff::civil::Date;

use super::*;
use crate::csvio::Fields;
use crate::schema::{ColumnType, Schema, TypedRow};

const HEADER: [&str; 7] = [
    "email",
    "first_name",
    "total_given",
    "last_gift_date",
    "country",
    "gift_aid",
    "Last Gift",
];
const TODAY: Date = Date::constant(2026, 3, 31);

fn schema() -> Schema {
    let header: Vec<String> = HEADER.iter().map(|s| s.to_string()).collect();
    Schema::new(
        &header,
        &[
            ("total_given".into(), ColumnType::Number),
            ("last_gift_date".into(), ColumnType::Date),
            ("gift_aid".into(), ColumnType::Bool),
        ],
    )
    .unwrap()
}

/// A default row: every cell can be overridden by column name.
fn cells(overrides: &[(&str, &str)]) -> Vec<String> {
    let defaults = [
        "ann@example.org",
        "Ann",
        "250",
        "2026-03-01",
        "UK",
        "yes",
        "last",
    ];
    HEADER
        .iter()
        .zip(defaults)
        .map(|(h, d)| {
            overrides
                .iter()
                .find(|(k, _)| k == h)
                .map_or(d, |(_, v)| v)
                .to_string()
        })
        .collect()
}

fn eval_on(rule: &str, overrides: &[(&str, &str)]) -> bool {
    let schema = schema();
    let rule = Rule::compile(rule, &schema, TODAY).unwrap_or_else(|e| panic!("{}", e.render(rule)));
    let cells = cells(overrides);
    let mut data = String::new();
    let mut ends = Vec::new();
    for c in &cells {
        data.push_str(c);
        ends.push(data.len());
    }
    let fields = Fields::new(&data, &ends);
    let mut typed = TypedRow::default();
    schema.parse_row(&fields, &mut typed).unwrap();
    let fast = rule.matches(&fields, &typed, &mut Scratch::default());
    let explained = rule.explain(&fields, &typed);
    assert_eq!(
        fast,
        explained.matched,
        "matches and explain disagree on {}",
        rule.source()
    );
    fast
}

fn yes(rule: &str, row: &[(&str, &str)]) {
    assert!(eval_on(rule, row), "expected `{rule}` to match {row:?}");
}

fn no(rule: &str, row: &[(&str, &str)]) {
    assert!(
        !eval_on(rule, row),
        "expected `{rule}` not to match {row:?}"
    );
}

fn compile_err(rule: &str) -> RuleError {
    match Rule::compile(rule, &schema(), TODAY) {
        Ok(r) => panic!("`{rule}` compiled: {r:?}"),
        Err(e) => e,
    }
}

fn explain(rule: &str, row: &[(&str, &str)]) -> String {
    let schema = schema();
    let rule = Rule::compile(rule, &schema, TODAY).unwrap();
    let cells = cells(row);
    let ends: Vec<usize> = cells
        .iter()
        .scan(0, |n, c| {
            *n += c.len();
            Some(*n)
        })
        .collect();
    let data = cells.concat();
    let fields = Fields::new(&data, &ends);
    let mut typed = TypedRow::default();
    schema.parse_row(&fields, &mut typed).unwrap();
    rule.explain(&fields, &typed).to_string()
}

#[test]
fn rule_is_send_sync_and_keeps_source() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Rule>();
    let r = Rule::compile("gift_aid", &schema(), TODAY).unwrap();
    assert_eq!(r.source(), "gift_aid");
}

#[test]
fn number_comparisons() {
    yes("total_given = 250", &[]);
    yes("total_given == 250.0", &[]);
    no("total_given = 251", &[]);
    yes("total_given != 251", &[]);
    yes("total_given <> 251", &[]);
    no("total_given != 250", &[]);
    yes("total_given < 251", &[]);
    no("total_given < 250", &[]);
    yes("total_given <= 250", &[]);
    no("total_given <= 249.99", &[]);
    yes("total_given > 249.5", &[]);
    no("total_given > 250", &[]);
    yes("total_given >= 250", &[]);
    no("total_given >= 1000", &[]);
    yes("total_given > -5", &[("total_given", "-3")]);
    no("total_given > -2", &[("total_given", "-3")]);
}

#[test]
fn date_comparisons_and_arithmetic() {
    yes("last_gift_date = 2026-03-01", &[]);
    yes("last_gift_date >= today - 365d", &[]);
    no(
        "last_gift_date >= today - 365d",
        &[("last_gift_date", "2025-03-30")],
    );
    yes(
        "last_gift_date >= today - 365d",
        &[("last_gift_date", "2025-03-31")],
    );
    yes("last_gift_date = today - 30 days", &[]);
    yes("last_gift_date = today - 30 d", &[]);
    yes("last_gift_date = today - 2w - 16d", &[]);
    yes("last_gift_date + 1w = 2026-03-08", &[]);
    yes("today - 1y = 2025-03-31", &[]);
    // Month arithmetic clamps to the end of a shorter month.
    yes("today - 1m = 2026-02-28", &[]);
    yes(
        "last_gift_date + 1m = 2024-02-29",
        &[("last_gift_date", "2024-01-31")],
    );
    yes(
        "last_gift_date + 1y = 2025-02-28",
        &[("last_gift_date", "2024-02-29")],
    );
    yes("last_gift_date < 2026-03-02", &[]);
    yes("`Last Gift` = \"LAST\"", &[]);
}

#[test]
fn text_comparison_ignores_case_but_ordering_does_not() {
    yes(r#"country = "uk""#, &[]);
    yes(r#"country != "ie""#, &[]);
    no(r#"country != "Uk""#, &[]);
    yes(r#"first_name = "ÉCOLE""#, &[("first_name", "école")]);
    yes(r#"first_name = 'o\'neil'"#, &[("first_name", "O'Neil")]);
    yes(r#"country = "UK""#, &[("country", "  UK ")]);
    yes(r#"country = """#, &[("country", "")]);
    yes(r#"first_name < "B""#, &[]);
    no(r#"first_name < "B""#, &[("first_name", "b")]); // raw order: "b" > "B"
    yes(r#"first_name > "B""#, &[("first_name", "b")]);
    yes(r#"email = first_name"#, &[("email", "ANN")]);
}

#[test]
fn in_lists() {
    yes(r#"country in ["IE", "uk"]"#, &[]);
    no(r#"country in ["IE", "FR"]"#, &[]);
    yes(r#"country not in ["IE", "FR"]"#, &[]);
    no(r#"country NOT IN ["ie", "UK"]"#, &[]);
    yes("total_given in [100, 250, 500,]", &[]);
    yes("last_gift_date in [2026-03-01, today]", &[]);
    no("total_given in []", &[]);
    yes(r#"first_name in ["Zoë"]"#, &[("first_name", "ZOË")]);
}

#[test]
fn text_tests() {
    yes(r#"email contains "EXAMPLE""#, &[]);
    no(r#"email contains "gmail""#, &[]);
    yes(r#"email not contains "gmail""#, &[]);
    yes(r#"email contains """#, &[]);
    yes(r#"email starts with "ANN@""#, &[]);
    no(r#"email starts with "bob""#, &[]);
    yes(r#"email ends with ".ORG""#, &[]);
    no(r#"email ends with ".com""#, &[]);
    no(r#"email not ends with ".org""#, &[]);
    yes(
        r#"first_name contains "CÔ""#,
        &[("first_name", "Anne-côte")],
    );
    yes(r#"first_name starts with "éc""#, &[("first_name", "ÉCOLE")]);
    yes(r#"first_name ends with "LE""#, &[("first_name", "école")]);
    no(
        r#"first_name starts with "ecole""#,
        &[("first_name", "école")],
    );
}

#[test]
fn regex_matching() {
    yes(r#"email matches "^[a-z]+@example\.org$""#, &[]);
    no(r#"email matches "^[A-Z]""#, &[]); // case-sensitive by default
    yes(r#"email matches "(?i)^[A-Z]""#, &[]);
    yes(r#"email not matches "\d""#, &[]);
    yes(r#"upper(first_name) matches "^ANN$""#, &[]);
}

#[test]
fn emptiness() {
    yes("country is empty", &[("country", "")]);
    yes("country is empty", &[("country", "   ")]);
    no("country is empty", &[]);
    yes("country is not empty", &[]);
    yes("total_given is empty", &[("total_given", "")]);
    no("total_given is empty", &[]);
    yes("last_gift_date IS NOT EMPTY", &[]);
    yes("gift_aid is empty", &[("gift_aid", " ")]);
}

#[test]
fn missing_values() {
    let missing = [
        ("total_given", ""),
        ("last_gift_date", ""),
        ("gift_aid", ""),
    ];
    no("total_given = 0", &missing);
    no("total_given < 1", &missing);
    no("total_given <= 1", &missing);
    no("total_given > -1", &missing);
    no("total_given >= -1", &missing);
    yes("total_given != 0", &missing);
    no("total_given in [0]", &missing);
    yes("total_given not in [0]", &missing);
    no("last_gift_date < today", &missing);
    no("days_since(last_gift_date) >= 0", &missing);
    no("days_since(last_gift_date) < 0", &missing);
    yes("days_since(last_gift_date) is empty", &missing);
    no("last_gift_date + 1d < today", &missing);
    no("gift_aid", &missing);
    yes("not gift_aid", &missing);
    no("gift_aid = false", &missing);
    yes("gift_aid != true", &missing);
}

#[test]
fn bools() {
    yes("gift_aid", &[]);
    no("gift_aid", &[("gift_aid", "N")]);
    yes("gift_aid = true", &[]);
    yes("gift_aid = TRUE", &[("gift_aid", "1")]);
    yes("gift_aid != true", &[("gift_aid", "no")]);
    yes("not gift_aid", &[("gift_aid", "0")]);
    yes("true", &[]);
    no("false", &[]);
}

#[test]
fn functions() {
    yes(r#"lower(first_name) = "ann""#, &[]);
    yes(r#"upper(country) = "uk""#, &[]);
    yes(r#"lower(first_name) < "b""#, &[("first_name", "ANN")]); // "ann" < "b"
    yes(r#"first_name < "b""#, &[("first_name", "Zed")]); // raw order: "Z" < "b"
    no(r#"lower(first_name) < "b""#, &[("first_name", "Zed")]);
    yes(r#"upper(first_name) < "B""#, &[("first_name", "ann")]);
    yes("length(first_name) = 3", &[]);
    yes("length(first_name) = 5", &[("first_name", "Zoë ü")]);
    yes("length(country) = 0", &[("country", "")]);
    yes("days_since(last_gift_date) = 30", &[]);
    yes(
        "days_since(last_gift_date) = -1",
        &[("last_gift_date", "2026-04-01")],
    );
    yes("days_since(today - 1y) = 365", &[]);
    yes("year(last_gift_date) = 2026", &[]);
    yes(
        "YEAR(last_gift_date) < year(today)",
        &[("last_gift_date", "2025-12-31")],
    );
    yes(r#"lower("ABC") = "abc""#, &[]);
}

#[test]
fn precedence_and_parentheses() {
    // `a or b and c` is `a or (b and c)`.
    yes(
        r#"country = "UK" or total_given > 1000 and gift_aid"#,
        &[("gift_aid", "no")],
    );
    no(
        r#"(country = "UK" or total_given > 1000) and gift_aid"#,
        &[("gift_aid", "no")],
    );
    // `not` binds looser than a comparison and tighter than `and`.
    yes(r#"not country = "FR" and gift_aid"#, &[]);
    no(r#"not country = "UK" and gift_aid"#, &[]);
    no(r#"not (country = "FR" and gift_aid)"#, &[("country", "FR")]);
    yes(r#"not (country = "FR" and gift_aid)"#, &[]);
    yes("not not gift_aid", &[]);
    yes("total_given > 1000 OR (gift_aid AnD country = 'uk')", &[]);
    yes("((total_given)) = 250", &[]);
    no("gift_aid and false or false", &[]);
    yes("false or gift_aid and true", &[]);
}

#[test]
fn explain_lists_every_test_with_row_values() {
    let text = explain(
        "total_given >= 1000 and last_gift_date >= today - 365d",
        &[("last_gift_date", "2026-03-01")],
    );
    assert_eq!(
        text,
        "rule did not match\n  all of these must be true -> false\n    `total_given >= 1000`: total_given is 250 -> false\n    `last_gift_date >= today - 365d`: last_gift_date is 2026-03-01, today - 365d is 2025-03-31 -> true"
    );
    let text = explain(
        r#"not country in ["UK", "IE"] or gift_aid"#,
        &[("country", "")],
    );
    assert_eq!(
        text,
        "rule matched\n  at least one of these must be true -> true\n    not (true when the following is false) -> true\n      `country in [\"UK\", \"IE\"]`: country is \"\" -> false\n    `gift_aid`: gift_aid is true -> true"
    );
    let text = explain("total_given > 5", &[("total_given", "")]);
    assert!(
        text.contains("`total_given > 5`: total_given is empty -> false"),
        "{text}"
    );
    let text = explain("lower(first_name) = 'ann'", &[("first_name", "ANN")]);
    assert!(
        text.contains("lower(first_name) is \"ann\" -> true"),
        "{text}"
    );
}

#[test]
fn unknown_column_suggests() {
    let e = compile_err("last_gift_dat >= today - 365d");
    assert_eq!(e.span, 0..13);
    assert_eq!(e.message, "unknown column \"last_gift_dat\"");
    assert_eq!(
        e.help.as_deref(),
        Some(
            "did you mean \"last_gift_date\"? columns in the donor file: email, first_name, total_given, last_gift_date, country, gift_aid, `Last Gift`"
        )
    );
    let e = compile_err("`last gift` = 'x'");
    assert!(
        e.help
            .unwrap()
            .starts_with("did you mean \"Last Gift\"? (write it as `Last Gift`)")
    );
    let e = compile_err("country = UK");
    assert_eq!(e.span, 10..12);
    assert!(
        e.help
            .unwrap()
            .ends_with("if you meant the text UK, put it in double quotes: \"UK\"")
    );
}

#[test]
fn many_columns_are_listed_with_ellipsis() {
    let header: Vec<String> = (0..20).map(|i| format!("col{i}")).collect();
    let schema = Schema::new(&header, &[]).unwrap();
    let e = Rule::compile("zzz = 1", &schema, TODAY).unwrap_err();
    let help = e.help.unwrap();
    assert!(help.contains("col11, …"), "{help}");
    assert!(!help.contains("col12"), "{help}");
}

#[test]
fn type_errors_point_at_the_operator() {
    let e = compile_err(r#"total_given = "abc""#);
    assert_eq!(e.span, 12..13);
    assert_eq!(
        e.message,
        "total_given is a number column but \"abc\" is text"
    );
    assert_eq!(e.help, None);
    let e = compile_err(r#"total_given >= "1000""#);
    assert_eq!(
        e.help.as_deref(),
        Some("write numbers without quotes: 1000")
    );
    let e = compile_err("country > 5");
    assert_eq!(e.message, "country is a text column but 5 is a number");
    assert_eq!(
        e.help.as_deref(),
        Some("declare the column in [columns] as country = \"number\"")
    );
    let e = compile_err("`Last Gift` < today");
    assert_eq!(
        e.help.as_deref(),
        Some("declare the column in [columns] as \"Last Gift\" = \"date\"")
    );
    let e = compile_err("last_gift_date > 365");
    assert!(e.help.unwrap().contains("days_since"));
    let e = compile_err(r#"last_gift_date > "2025-01-01""#);
    assert_eq!(
        e.help.as_deref(),
        Some("write dates without quotes: 2025-01-01")
    );
    let e = compile_err("gift_aid > false");
    assert!(
        e.message.contains("only be compared with = or !="),
        "{}",
        e.message
    );
    let e = compile_err(r#"country in ["UK", 3]"#);
    assert_eq!(e.span, 18..19);
    let e = compile_err("country in [email]");
    assert!(e.message.contains("fixed values"));
    let e = compile_err("total_given contains \"1\"");
    assert_eq!(e.span, 12..20);
    assert_eq!(
        e.message,
        "`contains` works on text, but total_given is a number column"
    );
    let e = compile_err("email starts with 5");
    assert_eq!(e.span, 18..19);
    let e = compile_err("email ends with first_name");
    assert!(e.message.contains("fixed text"));
    let e = compile_err("total_given + 5d > 0");
    assert_eq!(e.span, 12..13);
    let e = compile_err("year(country) = 2020");
    assert_eq!(e.span, 5..12);
    assert_eq!(
        e.help.as_deref(),
        Some("declare the column in [columns] as country = \"date\"")
    );
}

#[test]
fn non_conditions_are_rejected() {
    let e = compile_err("total_given");
    assert_eq!(e.message, "total_given is a number, not a condition");
    assert_eq!(
        e.help.as_deref(),
        Some("compare it with something, like total_given > 0")
    );
    let e = compile_err("country and gift_aid");
    assert_eq!(e.span, 0..7);
    let e = compile_err("lower(gift_aid = true) = 'x'");
    assert_eq!(e.span, 6..21);
}

#[test]
fn unknown_function_lists_known_ones() {
    let e = compile_err("lowercase(country) = 'uk'");
    assert_eq!(e.span, 0..9);
    assert_eq!(e.message, "unknown function `lowercase`");
    assert!(
        e.help
            .unwrap()
            .contains("lower(text), upper(text), length(text), days_since(date) and year(date)")
    );
}

#[test]
fn bad_regex_points_at_the_pattern() {
    let src = r#"email matches "([a-z""#;
    let e = compile_err(src);
    assert_eq!(e.span, 14..21);
    assert_eq!(e.message, "this is not a valid regular expression");
    assert!(e.help.is_some());
    assert_eq!(e.column(src), 15);
}

#[test]
fn syntax_errors_say_what_was_expected() {
    let e = compile_err("total_given >=");
    assert_eq!(
        (e.span.clone(), e.message.as_str()),
        (
            14..14,
            "expected a value after `>=`, found the end of the rule"
        )
    );
    let e = compile_err("total_given > 5 gift_aid");
    assert_eq!(e.span, 16..24);
    assert_eq!(
        e.message,
        "expected `and`, `or` or the end of the rule, found `gift_aid`"
    );
    let e = compile_err("(gift_aid");
    assert_eq!(e.message, "expected `)`, found the end of the rule");
    let e = compile_err("gift_aid)");
    assert_eq!(e.span, 8..9);
    let e = compile_err("total_given > 1,000");
    assert_eq!(
        e.help.as_deref(),
        Some("write numbers without thousands separators, like 1000")
    );
    let e = compile_err("1 < total_given < 5");
    assert!(e.help.unwrap().contains("chained"));
    let e = compile_err("country is 'UK'");
    assert_eq!(
        e.message,
        "expected `empty` or `not empty` after `is`, found the text \"UK\""
    );
    let e = compile_err("email starts 'a'");
    assert_eq!(
        e.message,
        "expected `with` after `starts`, found the text \"a\""
    );
    let e = compile_err("country in 'UK'");
    assert!(e.message.starts_with("expected a list"));
    let e = compile_err("today - 30 > last_gift_date");
    assert_eq!(e.span, 8..10);
    assert!(e.message.contains("needs a unit"));
    let e = compile_err("");
    assert_eq!(e.message, "the rule is empty");
    let e = compile_err("and = 1");
    assert!(e.help.unwrap().contains("backticks"));
    let e = compile_err("gift_aid and");
    assert_eq!(e.span, 12..12);
}

#[test]
fn error_rendering_uses_character_columns() {
    let src = r#"first_name = "é" and totl_given > 5"#;
    let e = compile_err(src);
    assert_eq!(e.column(src), 22);
    assert_eq!(
        e.render(src),
        "first_name = \"é\" and totl_given > 5\n                     ^^^^^^^^^^\nunknown column \"totl_given\"\nhelp: did you mean \"total_given\"? columns in the donor file: email, first_name, total_given, last_gift_date, country, gift_aid, `Last Gift`"
    );
    let src = "gift_aid and";
    let e = compile_err(src);
    assert_eq!(e.column(src), 13);
    assert_eq!(
        e.render(src),
        "gift_aid and\n            ^\nexpected a condition after `and`, found the end of the rule"
    );
    let src = "gift_aid\n  and country = 5";
    let e = compile_err(src);
    assert_eq!(e.column(src), 15);
    assert_eq!(
        e.render(src),
        "  and country = 5\n              ^\ncountry is a text column but 5 is a number\nhelp: declare the column in [columns] as country = \"number\""
    );
    assert_eq!(
        e.to_string(),
        "country is a text column but 5 is a number\nhelp: declare the column in [columns] as country = \"number\""
    );
}

#[test]
fn scratch_is_reused_across_rows() {
    let schema = schema();
    let rule = Rule::compile(
        r#"first_name contains "ÉC" or email ends with ".ORG""#,
        &schema,
        TODAY,
    )
    .unwrap();
    let mut scratch = Scratch::default();
    let mut typed = TypedRow::default();
    for (name, email, want) in [
        ("école", "x", true),
        ("bob", "b@x.org", true),
        ("zoë", "z@x.com", false),
    ] {
        let cells = cells(&[("first_name", name), ("email", email)]);
        let ends: Vec<usize> = cells
            .iter()
            .scan(0, |n, c| {
                *n += c.len();
                Some(*n)
            })
            .collect();
        let data = cells.concat();
        let fields = Fields::new(&data, &ends);
        schema.parse_row(&fields, &mut typed).unwrap();
        assert_eq!(
            rule.matches(&fields, &typed, &mut scratch),
            want,
            "{name} {email}"
        );
    }
}

/// Rough per-row cost; run with `cargo test --release --lib -- --ignored rule_speed --nocapture`.
#[test]
#[ignore = "timing, not correctness"]
fn rule_speed() {
    let schema = schema();
    let rule = Rule::compile(
        r#"total_given >= 1000 and last_gift_date >= today - 365d or country in ["IE", "FR"] or email ends with ".org" and not gift_aid"#,
        &schema,
        TODAY,
    )
    .unwrap();
    let rows: Vec<Vec<String>> = (0..1000)
        .map(|i| {
            let total = (i * 7 % 2000).to_string();
            let country = ["UK", "IE", "FR", "DE"][i % 4];
            let gift_aid = ["yes", "no", ""][i % 3];
            cells(&[
                ("total_given", total.as_str()),
                ("country", country),
                ("gift_aid", gift_aid),
            ])
        })
        .collect();
    let prepared: Vec<(String, Vec<usize>)> = rows
        .iter()
        .map(|cells| {
            let ends = cells.iter().scan(0, |n, c| {
                *n += c.len();
                Some(*n)
            });
            (cells.concat(), ends.collect())
        })
        .collect();
    let mut typed = TypedRow::default();
    let mut scratch = Scratch::default();
    let start = std::time::Instant::now();
    let mut hits = 0;
    let rounds = 2000;
    for _ in 0..rounds {
        for (data, ends) in &prepared {
            let fields = Fields::new(data, ends);
            schema.parse_row(&fields, &mut typed).unwrap();
            hits += usize::from(rule.matches(&fields, &typed, &mut scratch));
        }
    }
    let per_row = start.elapsed().as_nanos() as f64 / (rounds * prepared.len()) as f64;
    println!("{per_row:.1} ns per row (parse_row + matches), {hits} hits");
}
