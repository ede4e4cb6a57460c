//! What `segment` prints: the new run's segments and dropped rows, as a table or JSON.

use std::fmt::Write as _;
use std::path::Path;

use campaign::manifest::Manifest;

/// `segment`'s summary table.
pub(super) fn segment(m: &Manifest, out: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: campaign {}, as of {}, {} donor rows read",
        out.display(),
        m.campaign_id,
        m.as_of,
        m.input.data_rows
    );
    let w = super::segment_column(m.segments.iter().map(|g| g.name.as_str()));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<w$}  {:>9}  {:>6}  template",
        "segment", "donors", "chunks"
    );
    for g in &m.segments {
        let _ = writeln!(
            s,
            "{:<w$}  {:>9}  {:>6}  {}",
            g.name,
            g.rows,
            g.chunks.len(),
            g.template
        );
    }
    let _ = writeln!(s, "{:<w$}  {:>9}", "total", m.segmented());
    let d = &m.dropped;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "dropped: {} rejected, {} duplicate, {} suppressed, {} unmatched (each listed with its line and reason in {}/dropped/)",
        d.rejected,
        d.duplicate,
        d.suppressed,
        d.unmatched,
        out.display()
    );
    s
}

/// `segment --json`'s summary.
pub(super) fn segment_json(m: &Manifest, out: &Path, warnings: &[String]) -> String {
    let v = serde_json::json!({
        "run": out.display().to_string(),
        "campaign_id": m.campaign_id,
        "as_of": m.as_of,
        "data_rows": m.input.data_rows,
        "segments": m.segments.iter().map(|g| serde_json::json!({
            "name": g.name,
            "donors": g.rows,
            "chunks": g.chunks.len(),
            "template": g.template,
        })).collect::<Vec<_>>(),
        "dropped": m.dropped,
        "warnings": warnings,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}
