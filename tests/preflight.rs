//! `campaign check`, `send --dry-run` and `send` refuse the same settings: what the real send
//! would refuse at 2 a.m., check says first, naming the key and the fix.

mod common;

use common::*;

const DONORS: &str = "email,name,total\n\
    zoe@example.org,Zoë,2500\n\
    bo@example.org,Bo,10\n";

/// The common campaign with `extra` TOML appended.
fn with(extra: &str) -> String {
    format!("{CAMPAIGN}{extra}")
}

/// A real send with the secret set and no relay given but the campaign file's.
fn real_send(w: &Workdir) -> std::process::Output {
    w.command()
        .args(["send", "run"])
        .env(
            "CAMPAIGN_UNSUBSCRIBE_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .output()
        .unwrap()
}

fn check(w: &Workdir) -> std::process::Output {
    w.run(&["check", "campaign.toml", "--donors", "donors.csv"])
}

/// Asserts `check` fails with exit 2 and every `needle` in its report.
fn assert_check_refuses(w: &Workdir, needles: &[&str]) {
    let o = check(w);
    assert_code(&o, 2);
    let out = stdout(&o);
    for n in needles {
        assert!(out.contains(n), "{n:?} not in:\n{out}");
    }
}

#[test]
fn a_misspelt_tls_mode_is_refused_with_the_likely_one() {
    let w = setup(DONORS);
    w.write(
        "campaign.toml",
        with("[smtp]\nhost = \"relay.example\"\ntls = \"startls\"\n"),
    );
    assert_check_refuses(
        &w,
        &["[smtp] tls = \"startls\"", "did you mean \"starttls\"?"],
    );
}

#[test]
fn a_rate_that_is_not_a_rate_is_refused() {
    let w = setup(DONORS);
    w.write("campaign.toml", with("[send]\nrate = \"fast\"\n"));
    // The campaign file itself is refused when read, by every command alike.
    let o = check(&w);
    assert_code(&o, 2);
    for n in ["campaign.toml", "[send] rate", "\"fast\"", "50/s"] {
        assert!(stderr(&o).contains(n), "{n:?} not in {}", stderr(&o));
    }
    let o = try_segment(&w);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("[send] rate"), "{}", stderr(&o));
}

#[test]
fn a_password_file_that_does_not_exist_is_refused() {
    let w = setup(DONORS);
    w.write(
        "campaign.toml",
        with("[smtp]\nhost = \"relay.example\"\nusername = \"appeal\"\npassword_file = \"smtp-password.txt\"\n"),
    );
    assert_check_refuses(&w, &["SMTP password file", "smtp-password.txt"]);
    w.write("smtp-password.txt", "s3cret\n");
    let o = check(&w);
    assert_code(&o, 0);
    assert!(!stdout(&o).contains("s3cret") && !stderr(&o).contains("s3cret"));
}

#[test]
fn a_subject_that_renders_to_two_lines_is_caught_before_a_run() {
    let w = setup(DONORS);
    w.write(
        "templates/general/subject.txt",
        "Spring news\nfor {{ name }}\n",
    );
    assert_check_refuses(&w, &["segment \"rest\"", "donors.csv:2", "several lines"]);
}

#[test]
fn an_unsubscribe_url_that_is_not_https_is_caught() {
    let w = setup(DONORS);
    w.write(
        "campaign.toml",
        CAMPAIGN.replace("https://riverside-park", "http://riverside-park"),
    );
    assert_check_refuses(&w, &["segment \"major\"", "https"]);
    // Without an export the same mistake is found with a donor made from [columns], once
    // [columns] declares every column the templates use.
    let o = w.run(&["check", "campaign.toml"]);
    assert_code(&o, 0);
    assert!(stderr(&o).contains("pass --donors"), "{}", stderr(&o));
    w.write(
        "campaign.toml",
        CAMPAIGN
            .replace("https://riverside-park", "http://riverside-park")
            .replace("total = \"number\"", "total = \"number\"\nname = \"text\""),
    );
    let o = w.run(&["check", "campaign.toml"]);
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(
        out.contains("a sample donor made from [columns]") && out.contains("https://"),
        "{out}"
    );
}

#[test]
fn a_header_that_cannot_be_encoded_is_caught() {
    let w = setup(DONORS);
    w.write("templates/major/subject.txt", "Thank you \u{7}{{ name }}\n");
    assert_check_refuses(&w, &["segment \"major\"", "subject"]);
}

#[test]
fn settings_only_the_environment_decides_are_notes_for_check_and_problems_for_send() {
    let w = setup(DONORS);
    // No relay named anywhere: check and the dry run say so, send refuses.
    let o = check(&w);
    assert_code(&o, 0);
    // Notes go to stderr as warnings, as send's do (issue 14).
    assert!(
        stderr(&o).contains("campaign: warning: ")
            && stderr(&o).contains("no SMTP relay configured")
    );
    segment(&w);
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("no SMTP relay configured"),
        "{}",
        stderr(&o)
    );
    let o = real_send(&w);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("no SMTP relay configured"),
        "{}",
        stderr(&o)
    );
    assert!(
        !w.path("run/ledger").exists(),
        "refused before taking the lock"
    );
}

#[test]
fn a_dry_run_refuses_the_smtp_settings_a_send_would_refuse() {
    let w = setup(DONORS);
    segment(&w);
    w.write(
        "campaign.toml",
        with("[smtp]\nhost = \"relay.example\"\ntls = \"startls\"\n"),
    );
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("[smtp] tls = \"startls\"") && err.contains("\"starttls\""),
        "{err}"
    );
    assert!(!w.path("run/previews").exists(), "nothing rendered");
    // And the send refuses it too, before anything is locked or sent.
    let o = real_send(&w);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("did you mean \"starttls\"?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_wrong_email_column_is_reported_once_and_the_rest_still_checked() {
    let w = setup(DONORS);
    w.write(
        "campaign.toml",
        CAMPAIGN.replace(
            "id = \"dry-2026\"",
            "id = \"dry-2026\"\nemail_column = \"e_mail\"",
        ),
    );
    w.write("templates/general/body.txt", "Hello {{ city }}\n");
    let o = check(&w);
    assert_code(&o, 2);
    let out = stdout(&o);
    assert_eq!(out.matches("email_column \"e_mail\"").count(), 1, "{out}");
    assert!(
        out.contains("general/body.txt:1") && out.contains("city"),
        "{out}"
    );
}

#[test]
fn numbers_on_the_command_line_are_bounded() {
    let w = setup(DONORS);
    segment(&w);
    for (flag, value, says) in [
        ("--concurrency", "100000", "1 to 1024"),
        ("--concurrency", "0", "1 to 1024"),
        ("--retry-delay", "inf", "a week"),
        ("--retry-delay", "1e300", "a week"),
        ("--max-wait", "NaN", "a week"),
        ("--halt-after", "0", "halt-after"),
    ] {
        let o = w.run(&["send", "run", "--dry-run", flag, value]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains(says), "{flag} {value}: {}", stderr(&o));
    }
    // The most threads allowed, on a run of two donors: only as many as there is work for.
    let o = w.run(&["send", "run", "--dry-run", "--concurrency", "1024"]);
    assert_code(&o, 0);
    w.write("campaign.toml", with("[send]\nconcurrency = 5000\n"));
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("[send] concurrency = 5000"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn skipping_the_certificate_check_is_warned_about_on_every_run() {
    let w = setup(DONORS);
    w.write(
        "campaign.toml",
        with("[smtp]\nhost = \"relay.example\"\ndangerous_skip_certificate_check = true\n"),
    );
    let o = check(&w);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("certificate is NOT checked"),
        "{}",
        stderr(&o)
    );
    segment(&w);
    let o = w.run(&["send", "run", "--dry-run"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("certificate is NOT checked"),
        "{}",
        stderr(&o)
    );
}

/// Writes an Ed25519 private key, made at test time, with `mode`.
fn dkim_key(w: &Workdir, name: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    w.write(name, key.serialize_pem());
    std::fs::set_permissions(w.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
}

fn dkim_table(domain: &str) -> String {
    format!("[[dkim]]\ndomain = \"{domain}\"\nselector = \"s1\"\nprivate_key_file = \"dkim.pem\"\n")
}

#[test]
fn a_dkim_key_others_can_read_is_refused_by_check_and_send() {
    let w = setup(DONORS);
    dkim_key(&w, "dkim.pem", 0o640);
    w.write("campaign.toml", with(&dkim_table("riverside-park.example")));
    assert_check_refuses(&w, &["dkim.pem", "mode 0640", "chmod 600"]);
    segment(&w);
    let o = real_send(&w);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("mode 0640"), "{}", stderr(&o));
}

#[test]
fn a_dkim_domain_not_aligned_with_from_is_a_note_and_an_aligned_one_is_not() {
    let w = setup(DONORS);
    dkim_key(&w, "dkim.pem", 0o600);
    w.write("campaign.toml", with(&dkim_table("esp.example")));
    let o = check(&w);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("DMARC may fail") && stderr(&o).contains("esp.example"),
        "{}",
        stderr(&o)
    );
    w.write("campaign.toml", with(&dkim_table("riverside-park.example")));
    let o = check(&w);
    assert_code(&o, 0);
    assert!(!stderr(&o).contains("DMARC"), "{}", stderr(&o));
}

#[test]
fn check_counts_the_donors_who_need_smtputf8() {
    let w = setup(
        "email,name,total\n\
         zoë@example.org,Zoë,2500\n\
         bob@bücher.example,Bob,10\n\
         ann@example.org,Ann,5\n",
    );
    let o = check(&w);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("1 donor rows have an address whose part before the @ is not ASCII"),
        "{}",
        stderr(&o)
    );
    w.write("donors.csv", DONORS);
    assert!(!stdout(&check(&w)).contains("SMTPUTF8"));
}

/// Issue 14's weak messages: each cause printed once, the same exit code for a missing
/// campaign file and a missing export, a date written another way, and TOML quoting in a rule.
#[test]
fn missing_files_bad_dates_and_rule_quoting_get_clear_messages() {
    let w = setup(DONORS);
    let o = w.run(&["check", "missing.toml"]);
    assert_code(&o, 2);
    assert_eq!(
        stderr(&o).matches("os error 2").count(),
        1,
        "{}",
        stderr(&o)
    );

    let o = w.run(&[
        "segment",
        "missing.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "run",
    ]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("cannot open donor file missing.csv"),
        "{}",
        stderr(&o)
    );

    let o = w.run(&[
        "segment",
        "donors.csv",
        "--campaign",
        "campaign.toml",
        "--out",
        "run",
        "--as-of",
        "29/11/2026",
    ]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("write it as YYYY-MM-DD, for example"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("four digit integer"), "{}", stderr(&o));

    w.write(
        "campaign.toml",
        CAMPAIGN.replace("when = \"total >= 1000\"", "when = \"country = \"UK\"\""),
    );
    let o = w.run(&["check", "campaign.toml"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("when = \"country = 'UK'\""),
        "{}",
        stderr(&o)
    );

    // The password file's cause, once, where send prints it too.
    w.write("campaign.toml", with("[smtp]\nhost = \"127.0.0.1\"\nport = 1\ntls = \"none\"\nusername = \"u\"\npassword_file = \"nope.txt\"\n"));
    segment(&w);
    let o = w
        .command()
        .args(["send", "run"])
        .env(
            "CAMPAIGN_UNSUBSCRIBE_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .output()
        .unwrap();
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("cannot read the SMTP password file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stderr(&o).matches("os error 2").count(),
        1,
        "{}",
        stderr(&o)
    );
}
