//! A campaign's rules compiled together, one per segment, with every broken rule reported in
//! the marketer's terms: the campaign file, the segment, and the rule with a caret.
//!
//! Owns turning `[[segment]] when` texts into [`Rule`]s in segment order and wording their
//! errors. It never evaluates a rule and never decides which segment a row goes to.

use jiff::civil::Date;

use super::{Rule, RuleError};
use crate::campaign::Campaign;
use crate::schema::Schema;

/// Compiles every segment's rule against the export's columns, reporting every broken rule
/// (with a caret under the problem), not just the first.
pub fn compile_rules(
    campaign: &Campaign,
    schema: &Schema,
    as_of: Date,
) -> Result<Vec<Option<Rule>>, Vec<String>> {
    let mut rules = Vec::with_capacity(campaign.segments.len());
    let mut problems = Vec::new();
    for (i, seg) in campaign.segments.iter().enumerate() {
        match &seg.when {
            None => rules.push(None),
            Some(src) => match Rule::compile(src, schema, as_of) {
                Ok(r) => rules.push(Some(r)),
                Err(e) => problems.push(rule_problem(campaign, i, src, &e)),
            },
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

/// A broken rule, for the marketer: file, segment, column, the rule with a caret.
pub fn rule_problem(campaign: &Campaign, index: usize, source: &str, e: &RuleError) -> String {
    format!(
        "{}: segment {} {:?}, rule column {}:\n{}",
        campaign.path.display(),
        index + 1,
        campaign.segments[index].name.as_str(),
        e.column(source),
        indent(&e.render(source))
    )
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
