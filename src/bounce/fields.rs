//! The header-like field blocks of RFC 3464 delivery-status and RFC 5965 feedback-report
//! parts: `Name: value` lines, folded lines joined, blocks separated by blank lines.
//!
//! Owns only that syntax; it never decides what a field means (see [`super::report`]).

/// One block of fields, in order; names keep their case, lookups ignore it.
#[derive(Debug, Default, Clone)]
pub(super) struct Block {
    fields: Vec<(String, String)>,
}

impl Block {
    /// The first value of `name`, trimmed.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `text` into blocks. Lines that are neither fields nor continuations are skipped:
/// real reports carry stray text, and a field that is missing is caught by the caller.
pub(super) fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur = Block::default();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':')
            && !name.is_empty()
            && !name.contains(' ')
        {
            cur.fields.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    out
}

/// The address of an `rfc822; addr` field (Final-Recipient, Original-Recipient,
/// Original-Rcpt-To), without angle brackets; `None` for another address type.
pub(super) fn rfc822_address(value: &str) -> Option<&str> {
    let addr = match value.split_once(';') {
        Some((kind, addr)) => {
            let kind = kind.trim();
            if !kind.eq_ignore_ascii_case("rfc822") && !kind.eq_ignore_ascii_case("utf-8") {
                return None;
            }
            addr
        }
        None => value,
    };
    let addr = addr
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (addr.contains('@')).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_join_folded_lines_and_split_on_blank_lines() {
        let b = blocks(
            "Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\nDiagnostic-Code: smtp; 550 5.1.1\r\n  no such user\r\n\r\n\r\nFinal-Recipient: rfc822;<b@example.org>\r\nAction: delayed\r\n",
        );
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].get("reporting-mta"), Some("dns; mx.example.net"));
        assert_eq!(
            b[1].get("Diagnostic-Code"),
            Some("smtp; 550 5.1.1 no such user")
        );
        assert_eq!(
            rfc822_address(b[2].get("final-recipient").unwrap()),
            Some("b@example.org")
        );
        assert_eq!(rfc822_address("x400; /c=us/"), None);
    }
}
