//! Static checks of a [`TemplateSet`] against a donor file's header, before any donor is
//! rendered.
//!
//! Owns finding missing template files, variables that will not exist, and references to
//! shared pieces that name no file, and pointing at the line. Never renders a template.

use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use crate::campaign::SegmentDef;

use super::context::BUILTINS;
use super::{FEEDBACK_ID, LIST_ID, Problem, TO_NAME, TemplateSet, UNSUBSCRIBE_URL};

/// `extends`, `include`, `import` or `from` with a literal template name.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\{%[-+]?\s*(extends|include|import|from)\s+(?:"([^"]*)"|'([^']*)')([^%]*)"#)
        .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
});

/// Names a block tag (the inside of `{% %}`) defines for the template or the pieces it
/// includes: `set x`, `for a, b in`, `macro m`, `with x =`, `import "f" as m`, `from "f" import a`.
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[-+]?\s*(?:set|for|macro|with)\s+([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)|\b(?:import|as)\s+([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)",
    )
    .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
});

/// One `{% extends "..." %}`-like reference in a template's source.
pub(super) struct Reference {
    pub(super) keyword: String,
    pub(super) target: String,
    pub(super) line: usize,
}

/// The literal references of `source` to other templates (`include ... ignore missing` and
/// computed names are left out: they cannot be checked).
pub(super) fn references(source: &str) -> Vec<Reference> {
    REFERENCE
        .captures_iter(source)
        .filter(|c| {
            !c.get(4)
                .is_some_and(|rest| rest.as_str().contains("ignore missing"))
        })
        .filter_map(|c| {
            let whole = c.get(0)?;
            let target = c.get(2).or_else(|| c.get(3))?.as_str().to_owned();
            Some(Reference {
                keyword: c.get(1)?.as_str().to_owned(),
                target,
                line: line_of(source, whole.start()),
            })
        })
        .collect()
}

fn line_of(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Up to 3 of `candidates` close to `wanted`, best first (case-only differences first).
pub(super) fn close_matches<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let wanted_lc = wanted.to_lowercase();
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .filter_map(|c| {
            let have = c.to_lowercase();
            let score = if have == wanted_lc {
                2.0
            } else {
                strsim::jaro_winkler(&wanted_lc, &have)
            };
            (score >= 0.8).then_some((score, c))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_owned())
        .collect()
}

/// ` (did you mean "a" or "b"?)`, or nothing.
pub(super) fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = suggestions.iter().map(|s| format!("\"{s}\"")).collect();
    format!(" (did you mean {}?)", quoted.join(" or "))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The inside of every `{{ }}` and `{% %}` of `source`, with its byte offset.
fn tags(source: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = source.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        loop {
            let open = source[pos..].find('{').map(|i| i + pos)?;
            let close = match bytes.get(open + 1) {
                Some(b'{') => "}}",
                Some(b'%') => "%}",
                _ => {
                    pos = open + 1;
                    continue;
                }
            };
            let start = open + 2;
            let end = source[start..]
                .find(close)
                .map_or(source.len(), |i| i + start);
            pos = end;
            return Some((start, &source[start..end]));
        }
    })
}

/// Filters applied in `source` (`| name`), with their 1-based line; names inside string
/// literals may be picked up too, which only matters if they are also unknown filters.
fn filters_used(source: &str) -> Vec<(String, usize)> {
    static FILTER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\|\s*([A-Za-z_][A-Za-z0-9_]*)")
            .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    });
    let mut found = Vec::new();
    for (start, tag) in tags(source) {
        for c in FILTER.captures_iter(tag) {
            if let Some(m) = c.get(1) {
                found.push((m.as_str().to_owned(), line_of(source, start + m.start())));
            }
        }
    }
    found
}

/// The 1-based line where `var` is first used as a variable inside `{{ }}` or `{% %}`.
pub(super) fn find_line(source: &str, var: &str) -> Option<usize> {
    for (start, tag) in tags(source) {
        let mut from = 0;
        while let Some(i) = tag[from..].find(var).map(|i| i + from) {
            let before = tag[..i].chars().next_back();
            let after = tag[i + var.len()..].chars().next();
            let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            // `x.first_name` is an attribute, not the variable; a quote means a string.
            if !ident(before)
                && !ident(after)
                && !matches!(before, Some('.' | '"' | '\''))
                && !matches!(after, Some('"' | '\''))
            {
                return Some(line_of(source, start + i));
            }
            from = i + var.len();
        }
    }
    None
}

/// Which extra names a template sees.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Body,
    ToName,
    Unsubscribe,
}

pub(super) fn check(set: &TemplateSet, segments: &[SegmentDef], header: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut reported: HashSet<(String, String)> = HashSet::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for segment in segments {
        let t = segment.template.as_str();
        if !seen.insert(t) {
            continue;
        }
        let folder_prefix = format!("{t}/");
        if !set.files.keys().any(|n| n.starts_with(&folder_prefix)) {
            let names = set.template_names();
            let close = close_matches(t, names.iter().copied());
            problems.push(Problem {
                file: set.dir.join(t),
                line: None,
                message: format!(
                    "segment \"{}\" uses template \"{t}\", but there is no folder \"{t}\" in the templates folder{} (found: {}); create it with subject.txt and body.txt, or fix `template` in the campaign file",
                    segment.name,
                    did_you_mean(&close),
                    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                ),
            });
            continue;
        }
        for (part, what) in [
            ("subject.txt", "the subject line (one line)"),
            ("body.txt", "the plain-text body"),
        ] {
            let name = format!("{t}/{part}");
            if !set.files.contains_key(&name) {
                problems.push(Problem {
                    file: set.dir.join(&name),
                    line: None,
                    message: format!(
                        "missing: template \"{t}\" (segment \"{}\") needs {part}, {what}; create it",
                        segment.name
                    ),
                });
            }
        }
        for part in ["subject.txt", "body.txt", "body.html"] {
            let name = format!("{t}/{part}");
            if set.files.contains_key(&name) {
                check_closure(set, &name, Part::Body, header, &mut reported, &mut problems);
            }
        }
    }
    if set.to_name.is_some() {
        check_closure(
            set,
            TO_NAME,
            Part::ToName,
            header,
            &mut reported,
            &mut problems,
        );
    }
    for (inline, name) in [(&set.list_id, LIST_ID), (&set.feedback_id, FEEDBACK_ID)] {
        if inline.is_some() {
            check_closure(
                set,
                name,
                Part::ToName,
                header,
                &mut reported,
                &mut problems,
            );
        }
    }
    if set.unsubscribe_url.is_some() {
        check_closure(
            set,
            UNSUBSCRIBE_URL,
            Part::Unsubscribe,
            header,
            &mut reported,
            &mut problems,
        );
    }
    problems
}

/// Checks `root` and every template it extends, includes or imports, reporting each unknown
/// variable once per file.
fn check_closure(
    set: &TemplateSet,
    root: &str,
    part: Part,
    header: &[String],
    reported: &mut HashSet<(String, String)>,
    problems: &mut Vec<Problem>,
) {
    // Gather the closure first: a name set in the layout may be used by a partial it includes.
    let mut closure: Vec<String> = vec![root.to_owned()];
    let mut i = 0;
    while i < closure.len() {
        if let Some(source) = set.source(&closure[i]) {
            for r in references(source) {
                if set.files.contains_key(&r.target) && !closure.contains(&r.target) {
                    closure.push(r.target);
                }
            }
        }
        i += 1;
    }
    let mut assigned: HashSet<&str> = HashSet::new();
    for name in &closure {
        let Some(source) = set.source(name) else {
            continue;
        };
        for (start, tag) in tags(source) {
            if source.as_bytes()[start - 1] != b'%' {
                continue;
            }
            for c in ASSIGNED.captures_iter(tag) {
                if let Some(list) = c.get(1).or_else(|| c.get(2)) {
                    assigned.extend(list.as_str().split(',').map(str::trim));
                }
            }
        }
    }
    let globals: HashSet<&str> = set.env.globals().map(|(n, _)| n).collect();
    let mut known: HashSet<&str> = header.iter().map(String::as_str).collect();
    known.extend(BUILTINS);
    match part {
        Part::Body if set.unsubscribe_url.is_some() => {
            known.insert("unsubscribe_url");
        }
        Part::Unsubscribe => {
            known.insert("unsubscribe_token");
        }
        _ => {}
    }

    for name in &closure {
        let Ok(template) = set.env.get_template(name) else {
            continue;
        };
        let source = template.source();
        let inline = set.is_inline(name);
        for (filter, line) in filters_used(source) {
            if set.filter_exists(&filter) || !reported.insert((name.clone(), format!("|{filter}")))
            {
                continue;
            }
            let close = close_matches(&filter, set.filter_names().iter().map(String::as_str));
            problems.push(Problem {
                file: if inline { set.campaign_file.clone() } else { set.dir.join(name) },
                line: if inline { set.inline_line(name) } else { Some(line) },
                message: format!(
                    "{}unknown filter \"{filter}\"{}; the filters are money, date, fallback and minijinja's built-ins such as upper, title, trim, default and urlencode",
                    if inline { format!("{name}: ") } else { String::new() },
                    did_you_mean(&close)
                ),
            });
        }
        let mut vars: Vec<String> = template.undeclared_variables(false).into_iter().collect();
        vars.sort();
        for var in vars {
            if known.contains(var.as_str())
                || globals.contains(var.as_str())
                || assigned.contains(var.as_str())
                || matches!(
                    var.as_str(),
                    "loop" | "self" | "super" | "caller" | "varargs" | "kwargs"
                )
            {
                continue;
            }
            // Inline templates are checked once each, so the key only needs the file.
            if !reported.insert((name.clone(), var.clone())) {
                continue;
            }
            let (file, line) = if name == TO_NAME || name == UNSUBSCRIBE_URL {
                (set.campaign_file.clone(), set.inline_line(name))
            } else {
                (set.dir.join(name), find_line(source, &var))
            };
            let prefix = if name == TO_NAME || name == UNSUBSCRIBE_URL {
                format!("{name}: ")
            } else {
                String::new()
            };
            let message = match var.as_str() {
                "unsubscribe_url" if part == Part::Body => format!(
                    "{prefix}uses unsubscribe_url, but the campaign file sets no `unsubscribe_url` under [message]; add one (e.g. \"https://your-site.example/unsubscribe?t={{{{ unsubscribe_token }}}}\")"
                ),
                "unsubscribe_url" => format!(
                    "{prefix}cannot use unsubscribe_url: it is only available in the subject and bodies"
                ),
                "unsubscribe_token" => format!(
                    "{prefix}unsubscribe_token is only available in `unsubscribe_url` under [message]; use {{{{ unsubscribe_url }}}} here"
                ),
                _ => {
                    let candidates = header.iter().map(String::as_str).chain(BUILTINS).chain(
                        known
                            .contains("unsubscribe_url")
                            .then_some("unsubscribe_url"),
                    );
                    let close: Vec<String> = close_matches(&var, candidates)
                        .into_iter()
                        .map(|c| {
                            if is_identifier(&c) {
                                c
                            } else {
                                format!("donor['{c}']")
                            }
                        })
                        .collect();
                    format!(
                        "{prefix}unknown variable \"{var}\": the donor file has no column of that name and it is not a built-in{}; fix the name in the template, or add the column to the export",
                        did_you_mean(&close)
                    )
                }
            };
            problems.push(Problem {
                file,
                line,
                message,
            });
        }
    }
}
