//! The command line's own outputs: completions, the man page, --help and --version.

mod common;

use common::*;

#[test]
fn completions_are_generated_for_every_shell() {
    let w = Workdir::new();
    for (shell, mark) in [
        ("bash", "complete -F _campaign"),
        ("zsh", "#compdef campaign"),
        ("fish", "complete -c campaign"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[campaign]"),
    ] {
        let o = w.run(&["completions", shell]);
        assert_code(&o, 0);
        let out = stdout(&o);
        assert!(
            out.contains(mark),
            "{shell}: {}",
            &out[..out.len().min(300)]
        );
        // Every subcommand can be completed.
        for sub in ["segment", "send", "bounces", "unsubscribe-server", "report"] {
            assert!(out.contains(sub), "{shell} lacks {sub}");
        }
    }
    let o = w.run(&["completions", "tcsh"]);
    assert_code(&o, 2);
}

#[test]
fn the_man_page_has_a_section_per_subcommand() {
    let w = Workdir::new();
    let o = w.run(&["man"]);
    assert_code(&o, 0);
    let man = stdout(&o);
    assert!(
        man.starts_with(".ie") || man.starts_with(".TH"),
        "{}",
        &man[..200]
    );
    for page in [
        "campaign 1",
        "campaign-send 1",
        "campaign-segment 1",
        "campaign-bounces 1",
    ] {
        assert!(man.contains(&format!(".TH {page}")), "no page {page}");
    }
    assert!(man.contains(".SH NAME") && man.contains(".SH OPTIONS"));
    // Every roff request line is one groff knows the shape of: a dot and a name.
    for line in man.lines().filter(|l| l.starts_with('.')) {
        assert!(
            line.len() > 1 && line.as_bytes()[1].is_ascii_alphabetic() || line.starts_with(".\\\""),
            "{line}"
        );
    }
}

#[test]
fn the_version_names_the_commit_and_the_manifest_records_it() {
    let w = setup("email,name,total\na@example.org,A,1\n");
    let o = w.run(&["--version"]);
    assert_code(&o, 0);
    let version = stdout(&o)
        .trim()
        .strip_prefix("campaign ")
        .unwrap()
        .to_owned();
    let commit = version
        .split_once(" (")
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{version}"
    );
    segment(&w);
    assert_eq!(manifest(&w.path("run"))["tool_version"], version);
}

#[test]
fn every_subcommand_s_help_exits_0() {
    let w = Workdir::new();
    for sub in [
        "segment",
        "check",
        "send",
        "status",
        "report",
        "bounces",
        "unsubscribe-server",
        "completions",
        "man",
    ] {
        let o = w.run(&[sub, "--help"]);
        assert_code(&o, 0);
        assert!(stdout(&o).contains("Usage: campaign"), "{sub}");
    }
}

#[test]
fn help_names_every_environment_variable_and_gives_examples() {
    let w = Workdir::new();
    let vars = [
        "CAMPAIGN_SMTP_URL",
        "CAMPAIGN_SMTP_PASSWORD",
        "CAMPAIGN_UNSUBSCRIBE_SECRET",
        "CAMPAIGN_UNSUBSCRIBE_SECRET_FILE",
    ];
    for sub in ["send", "check", "bounces", "unsubscribe-server"] {
        let o = w.run(&[sub, "--help"]);
        let out = stdout(&o);
        assert!(out.contains("Examples:\n  campaign "), "{sub}: {out}");
        for v in vars {
            assert!(out.contains(v), "{sub} --help lacks {v}");
        }
    }
    for sub in ["segment", "status", "report"] {
        assert!(stdout(&w.run(&[sub, "--help"])).contains("Examples:\n  campaign "));
    }
}

/// `init` then the three commands it prints: each succeeds; a second `init` writes nothing.
#[test]
fn init_makes_a_campaign_that_checks_segments_and_dry_runs() {
    let w = Workdir::new();
    let o = w.run(&["init", "spring"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    let next: Vec<String> = out
        .lines()
        .skip_while(|l| *l != "next:")
        .skip(1)
        .map(|l| l.trim().to_owned())
        .collect();
    assert_eq!(next.len(), 3, "{out}");
    for cmd in &next {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(args[0], "campaign");
        let o = w.run(&args[1..]);
        assert_code(&o, 0);
    }
    let previews: Vec<String> = ["thanks", "welcome"]
        .iter()
        .flat_map(|s| w.entries_of(&format!("spring/runs/first/previews/{s}")))
        .collect();
    let eml = previews
        .iter()
        .filter(|p| p.starts_with("00") && p.ends_with(".eml"));
    assert_eq!(eml.count(), 4, "{previews:?}");
    // The export's donor without a first name is previewed on purpose.
    assert!(
        previews.contains(&"edge-empty-name-erin.evans_example.net.eml".to_owned()),
        "{previews:?}"
    );

    let before = w.read("spring/campaign.toml");
    w.write("spring/campaign.toml", "edited\n");
    let o = w.run(&["init", "spring"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("never overwrites"), "{}", stderr(&o));
    assert_eq!(w.read("spring/campaign.toml"), "edited\n");
    assert!(before.contains("# [smtp]"));
}
