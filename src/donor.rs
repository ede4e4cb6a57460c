//! Reading one donor row: its fields (UTF-8, as many as the header), its address and its
//! typed cells, with one wording for each problem.
//!
//! `segment`'s classifier and `send`'s preparer both read rows through a [`DonorReader`], so
//! a problem is worded the same in `dropped/rejected.csv` and in a send's failures. It never
//! decides what happens to a row (reject, fail, skip: the caller does) and never keeps one.

use crate::csvio::{Fields, MAX_RECORD_BYTES, RawRecord};
use crate::email::Address;
use crate::schema::{Schema, TypedRow};

/// Where Excel keeps the export that is UTF-8 (its plain "CSV" is in the Windows code page),
/// for every message that asks for one.
pub const EXCEL_UTF8: &str = "in Excel: Save As, \"CSV UTF-8 (Comma delimited)\"";

/// Why a row is not a donor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// A short kind for grouping ("not UTF-8", "bad address in email", ...).
    pub kind: String,
    /// The full reason, for the marketer.
    pub reason: String,
}

/// Reads rows of one export (or of the chunks made from it).
#[derive(Debug, Clone)]
pub struct DonorReader {
    schema: Schema,
    email_idx: usize,
    email_column: String,
}

impl DonorReader {
    /// A reader for rows of `schema`, with addresses in column `email_idx`, named
    /// `email_column`.
    pub fn new(schema: Schema, email_idx: usize, email_column: &str) -> DonorReader {
        DonorReader {
            schema,
            email_idx,
            email_column: email_column.to_owned(),
        }
    }

    /// The export's columns.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The row's fields: at most [`MAX_RECORD_BYTES`], valid UTF-8, as many as the header.
    pub fn fields<'r>(&self, rec: &RawRecord<'r>) -> Result<Fields<'r>, RowProblem> {
        if rec.raw.len() > MAX_RECORD_BYTES {
            return Err(RowProblem {
                kind: "row too long".into(),
                reason: format!(
                    "the row is {} bytes, longer than the limit of {MAX_RECORD_BYTES} bytes (1 MiB); no donor row needs that much: check that column in the export",
                    rec.raw.len()
                ),
            });
        }
        let fields = rec.fields().map_err(|_| {
            // Counted in the line as written, which is what an editor shows.
            let at = std::str::from_utf8(rec.raw)
                .err()
                .map_or(0, |e| e.valid_up_to() + 1);
            RowProblem {
                kind: "not UTF-8".into(),
                reason: format!(
                    "not valid UTF-8 (byte {at} of the line); re-export the file as UTF-8 ({EXCEL_UTF8})"
                ),
            }
        })?;
        if rec.field_count() != self.schema.len() {
            let spans = if rec.lines > 1 {
                format!(
                    "; it spans lines {}-{}, so a quote is probably not closed",
                    rec.line,
                    rec.line + rec.lines - 1
                )
            } else {
                String::new()
            };
            return Err(RowProblem {
                kind: "wrong number of fields".into(),
                reason: format!(
                    "has {} fields but the header has {}{spans}",
                    rec.field_count(),
                    self.schema.len()
                ),
            });
        }
        Ok(fields)
    }

    /// The address cell, as it stands in the row.
    pub fn raw_address<'r>(&self, fields: &Fields<'r>) -> &'r str {
        fields.get(self.email_idx)
    }

    /// The row's address, checked.
    pub fn address<'r>(&self, fields: &Fields<'r>) -> Result<Address<'r>, RowProblem> {
        Address::parse(fields.get(self.email_idx)).map_err(|e| RowProblem {
            kind: format!("bad address in {}", self.email_column),
            reason: format!("{}: {e}", self.email_column),
        })
    }

    /// The row's declared columns, parsed into `out`.
    pub fn typed(&self, fields: &Fields<'_>, out: &mut TypedRow) -> Result<(), RowProblem> {
        self.schema.parse_row(fields, out).map_err(|e| RowProblem {
            kind: format!("bad value in {}", e.column),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csvio::RawReader;
    use crate::schema::ColumnType;

    /// Each data row of `csv` (after a header `email,total`), read through one reader.
    fn problems(csv: &[u8]) -> Vec<Result<(), RowProblem>> {
        let header = vec!["email".to_owned(), "total".to_owned()];
        let schema = Schema::new(&header, &[("total".to_owned(), ColumnType::Number)]).unwrap();
        let reader = DonorReader::new(schema, 0, "email");
        let mut rdr = RawReader::new(csv);
        let mut typed = TypedRow::default();
        let mut out = Vec::new();
        while let Some(rec) = rdr.next_record().unwrap() {
            out.push(reader.fields(&rec).and_then(|f| {
                reader.address(&f)?;
                reader.typed(&f, &mut typed)
            }));
        }
        out
    }

    #[test]
    fn each_problem_has_one_wording() {
        let got = problems(b"a@example.org,10\na@example.org\nnot-an-address,1\nb@example.org,ten\nc@example.org,\xff\n");
        assert_eq!(got[0], Ok(()));
        let kinds: Vec<&str> = got[1..]
            .iter()
            .map(|r| r.as_ref().unwrap_err().kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "wrong number of fields",
                "bad address in email",
                "bad value in total",
                "not UTF-8"
            ]
        );
        let reasons: Vec<String> = got[1..]
            .iter()
            .map(|r| r.as_ref().unwrap_err().reason.clone())
            .collect();
        assert!(
            reasons[0].contains("has 1 fields but the header has 2"),
            "{reasons:?}"
        );
        assert!(reasons[1].starts_with("email: "), "{reasons:?}");
        assert!(reasons[2].contains("total"), "{reasons:?}");
        assert!(reasons[3].contains("byte 15 of the line"), "{reasons:?}");
    }
}
