//! The body's transfer encoding: 7bit, quoted-printable or base64, CRLF line breaks, lines of
//! at most 76 characters.
//!
//! This owns the bytes of each body part as they go on the wire, chosen as lettre would choose
//! them (the module doc says why it is done here). It never touches headers or the MIME
//! structure, and never changes the text: decoding gives back what was rendered, with every line
//! break as CRLF (and, for a lone text part, a final one).

use std::borrow::Cow;

use lettre::message::Body;
use lettre::message::header::ContentTransferEncoding;

/// The longest body line sent unencoded (7bit), as lettre does: RFC 5322 asks for at most 78.
const MAX_7BIT_LINE: usize = 76;

/// Encodes a body for the wire, choosing like lettre does: 7bit for short-lined printable
/// ASCII, quoted-printable for mostly-ASCII text, base64 when more than a third of the bytes
/// would need escaping (CJK text, say). Line breaks (CRLF, LF or a lone CR) become CRLF; with
/// `final_newline` the text ends with one.
///
/// Why not lettre's `Body::new`: it converts line endings by inserting one CR at a time
/// (a memmove of the rest of the body per line), scans the text twice more, and its
/// quoted-printable encoder goes byte by byte through a `String`; together that was ~45 of
/// the ~55 µs a 13 KB message cost. Encoding choice and output format are the same.
pub(super) fn encode_body(s: &str, final_newline: bool) -> Body {
    let bytes = s.as_bytes();
    let add_newline = final_newline && !matches!(bytes.last(), Some(b'\n' | b'\r'));
    let escaped = count_escaped(bytes);
    if escaped == 0 && max_line(bytes) <= MAX_7BIT_LINE {
        let mut out = crlf(bytes).into_owned();
        if add_newline {
            out.extend_from_slice(b"\r\n");
        }
        return Body::dangerous_pre_encoded(out, ContentTransferEncoding::SevenBit);
    }
    if escaped > bytes.len() / 3 {
        let mut text = crlf(bytes).into_owned();
        if add_newline {
            text.extend_from_slice(b"\r\n");
        }
        let mut out = base64_lines(&text);
        // A lone text part is the whole message body: end it with a line break.
        if final_newline {
            out.extend_from_slice(b"\r\n");
        }
        return Body::dangerous_pre_encoded(out, ContentTransferEncoding::Base64);
    }
    let mut out = Vec::with_capacity(bytes.len() + escaped * 2 + bytes.len() / 38 + 8);
    quoted_printable(bytes, &mut out);
    if add_newline {
        out.extend_from_slice(b"\r\n");
    }
    Body::dangerous_pre_encoded(out, ContentTransferEncoding::QuotedPrintable)
}

/// How many bytes quoted-printable must escape wherever they are: non-ASCII bytes, DEL and
/// control characters other than TAB, CR and LF.
fn count_escaped(bytes: &[u8]) -> usize {
    // Branch-free with byte-wide counters (at most 255 per chunk) so the compiler vectorises
    // it: this reads every body byte, and a `usize` per byte ran at under 2 bytes per ns.
    bytes
        .chunks(255)
        .map(|chunk| {
            let n: u8 = chunk
                .iter()
                .map(|&b| {
                    let ctrl = (b < 0x20) & (b != b'\t') & (b != b'\r') & (b != b'\n');
                    u8::from((b >= 0x7f) | ctrl)
                })
                .fold(0u8, u8::wrapping_add);
            usize::from(n)
        })
        .sum()
}

/// Length of the longest line, not counting line-break characters.
fn max_line(bytes: &[u8]) -> usize {
    let mut max = 0;
    let mut start = 0;
    for i in memchr::memchr2_iter(b'\n', b'\r', bytes) {
        max = max.max(i - start);
        start = i + 1;
    }
    max.max(bytes.len() - start)
}

/// The text with every line break as CRLF; borrowed when it already is.
fn crlf(bytes: &[u8]) -> Cow<'_, [u8]> {
    let already = memchr::memchr2_iter(b'\n', b'\r', bytes).all(|i| match bytes[i] {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && bytes[i - 1] == b'\r',
    });
    if already {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Base64 in lines of 76 characters separated by CRLF (RFC 2045 §6.8), no final CRLF.
fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    const IN_PER_LINE: usize = 57; // 57 bytes -> 76 characters
    let lines = data.len().div_ceil(IN_PER_LINE);
    let mut out = vec![0u8; lines * 78];
    let mut len = 0;
    for (n, chunk) in data.chunks(IN_PER_LINE).enumerate() {
        if n > 0 {
            out[len..len + 2].copy_from_slice(b"\r\n");
            len += 2;
        }
        len += base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut out[len..])
            .expect("76 characters fit in the 78 reserved per line");
    }
    out.truncate(len);
    out
}

/// Quoted-printable (RFC 2045 §6.7) of UTF-8 text: every line break becomes a hard CRLF, lines
/// are at most 76 characters (soft breaks are `=` CRLF), and `=`, non-ASCII, control
/// characters and whitespace before a line end are escaped.
fn quoted_printable(input: &[u8], out: &mut Vec<u8>) {
    /// Content characters per line; the 76th is kept for a soft break's `=`.
    const WIDTH: usize = 75;
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    /// Bytes that stand for themselves: printable ASCII but `=`, plus space and TAB.
    const LITERAL: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = matches!(b as u8, b'!'..=b'<' | b'>'..=b'~' | b' ' | b'\t');
            b += 1;
        }
        t
    };
    let literal = |b: u8| LITERAL[usize::from(b)];
    let n = input.len();
    let mut col = 0;
    let mut i = 0;
    while i < n {
        let b = input[i];
        if b == b'\r' || b == b'\n' {
            if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            out.extend_from_slice(b"\r\n");
            col = 0;
            i += 1;
            continue;
        }
        if col >= WIDTH {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        // Copy the run of characters that stand for themselves, up to the end of the line.
        let limit = n.min(i + (WIDTH - col));
        let mut j = i;
        while j < limit && literal(input[j]) {
            j += 1;
        }
        // Whitespace right before a line end must be escaped (transports strip it); escaping
        // the last one is enough, as `=20` then follows the others.
        if (j == n || matches!(input[j], b'\r' | b'\n'))
            && j > i
            && matches!(input[j - 1], b' ' | b'\t')
        {
            j -= 1;
        }
        if j > i {
            out.extend_from_slice(&input[i..j]);
            col += j - i;
            i = j;
            continue;
        }
        if col + 3 > WIDTH {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        col += 3;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use mail_parser::MessageParser;

    use super::*;
    use crate::message::fixtures::{
        assert_wire_format, composer, header_block, long_html, outgoing,
    };

    #[test]
    fn transfer_encodings_suit_the_content() {
        let c = composer();
        let enc = |text: &str| {
            let bytes = c.compose(&outgoing(text, None)).unwrap();
            assert_wire_format(&bytes);
            let head = header_block(&bytes).to_owned();
            let msg = MessageParser::default().parse(&bytes).unwrap();
            // A text-only body always ends with a line break.
            let mut want = text.replace('\n', "\r\n");
            if !want.ends_with("\r\n") {
                want.push_str("\r\n");
            }
            assert_eq!(msg.body_text(0).unwrap(), want);
            head.lines()
                .find_map(|l| l.strip_prefix("Content-Transfer-Encoding: "))
                .unwrap()
                .to_owned()
        };
        assert_eq!(enc("Plain ASCII.\n"), "7bit");
        assert_eq!(enc("Zoë gave £5.\n"), "quoted-printable");
        assert_eq!(enc(&"x".repeat(5000)), "quoted-printable");
        assert_eq!(enc(&"田中さん、ありがとう。".repeat(50)), "base64");
        // A stray CR becomes a line break instead of a bare CR on the wire.
        let bytes = c.compose(&outgoing("a\rb\r\nc\n", None)).unwrap();
        assert_wire_format(&bytes);
        let msg = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(msg.body_text(0).unwrap(), "a\r\nb\r\nc\r\n");
    }

    #[test]
    fn long_lines_are_encoded_not_sent_raw() {
        let long_html = format!("<p>{}</p>", "Zoë £ ".repeat(800) + &"y".repeat(5000));
        let long_ascii_html = format!("<p>{}</p>\n", "z".repeat(5000));
        let long_text = format!("{}\n", "word ".repeat(1200));
        for html in [&long_html, &long_ascii_html] {
            let bytes = composer()
                .compose(&outgoing(&long_text, Some(html)))
                .unwrap();
            assert_wire_format(&bytes);
            let msg = MessageParser::default().parse(&bytes).unwrap();
            assert_eq!(msg.body_html(0).unwrap(), html.replace('\n', "\r\n"));
            assert_eq!(msg.body_text(0).unwrap(), long_text.replace('\n', "\r\n"));
        }
    }

    /// What a body decodes to: line breaks as CRLF, and (text-only) a final one.
    fn wire_text(text: &str, final_newline: bool) -> String {
        let mut want = text
            .replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace('\n', "\r\n");
        if final_newline && !want.ends_with("\r\n") {
            want.push_str("\r\n");
        }
        want
    }

    #[test]
    fn body_encoder_round_trips_awkward_text() {
        // Deterministic pseudo-random texts from pieces that stress quoted-printable: `=`,
        // whitespace before line ends, every kind of line break, multi-byte characters across
        // the 76-column limit, control characters and very long lines.
        let pieces = [
            "a", "word ", "=", "==", " ", "\t", "\n", "\r\n", "\r", "é", "田", "✓", "\0", "\u{7f}",
            ".", "From ", "=3D", "  \n", "\t\r\n", "x", "<p>", "£1,250",
        ];
        let c = composer();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..250 {
            let len = (next() % 300) as usize + if round % 10 == 0 { 2000 } else { 0 };
            let mut text = String::new();
            while text.len() < len {
                let p = pieces[(next() % pieces.len() as u64) as usize];
                // Long runs too, so 7bit-eligible ASCII and over-long lines both occur.
                let times = if next() % 8 == 0 {
                    (next() % 100) as usize
                } else {
                    1
                };
                text.push_str(&p.repeat(times));
            }
            for html in [None, Some(text.as_str())] {
                let m = outgoing(&text, html);
                let bytes = c.compose(&m).unwrap();
                assert_wire_format(&bytes);
                let msg = MessageParser::default().parse(&bytes).unwrap();
                assert_eq!(
                    msg.body_text(0).unwrap(),
                    wire_text(&text, html.is_none()),
                    "round {round}: {text:?}"
                );
                if let Some(h) = html {
                    assert_eq!(msg.body_html(0).unwrap(), wire_text(h, false), "{h:?}");
                }
                // Encoded lines keep to 76 characters, and no quoted-printable line ends in
                // whitespace (7bit may: there it is content).
                let body = &bytes[header_block(&bytes).len()..];
                let qp_only = !String::from_utf8_lossy(&bytes).contains("Encoding: 7bit");
                for line in body.split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    assert!(
                        line.len() <= 76,
                        "round {round}: {:?}",
                        String::from_utf8_lossy(line)
                    );
                    assert!(
                        !qp_only || !(line.ends_with(b" ") || line.ends_with(b"\t")),
                        "round {round}: {:?}",
                        String::from_utf8_lossy(line)
                    );
                }
            }
        }
    }

    #[test]
    fn body_encoder_details() {
        use ContentTransferEncoding::*;
        let enc = |s: &str| {
            let b = encode_body(s, false);
            (b.encoding(), String::from_utf8(b.into_vec()).unwrap())
        };
        let qp = |s: &str| {
            let mut out = Vec::new();
            quoted_printable(s.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        // The choice.
        assert_eq!(enc("a=b \n"), (SevenBit, "a=b \r\n".into()));
        assert_eq!(enc("ok\rnext"), (SevenBit, "ok\r\nnext".into()));
        assert_eq!(
            enc("café = ok\n"),
            (QuotedPrintable, "caf=C3=A9 =3D ok\r\n".into())
        );
        assert_eq!(
            enc("a NUL\0 here"),
            (QuotedPrintable, "a NUL=00 here".into())
        );
        assert_eq!(enc(&"x".repeat(77)).0, QuotedPrintable);
        assert_eq!(enc(&"x".repeat(76)).0, SevenBit);
        assert_eq!(enc("田中"), (Base64, "55Sw5Lit".into()));
        let (e, s) = enc(&"田".repeat(40));
        assert_eq!(e, Base64);
        assert_eq!(s.lines().next().unwrap().len(), 76);
        // Text-only bodies end with a line break.
        assert_eq!(encode_body("hi", true).into_vec(), b"hi\r\n");
        assert_eq!(encode_body("hi\n", true).into_vec(), b"hi\r\n");
        assert_eq!(encode_body("田中", true).into_vec(), b"55Sw5LitDQo=\r\n");
        // Quoted-printable details.
        assert_eq!(qp("end \nnext\t"), "end=20\r\nnext=09");
        assert_eq!(qp("a \t b\r\n"), "a \t b\r\n");
        assert_eq!(qp("two  \r\n"), "two =20\r\n");
        assert_eq!(qp("x=y\u{7f}"), "x=3Dy=7F");
        // A soft break never splits an escape, and lines hold at most 75 characters + `=`.
        assert_eq!(
            qp(&format!("{}é", "x".repeat(73))),
            format!("{}=\r\n=C3=A9", "x".repeat(73))
        );
        assert_eq!(
            qp(&"x".repeat(160)),
            format!("{0}=\r\n{0}=\r\n{1}", "x".repeat(75), "x".repeat(10))
        );
        // Whitespace pushed to the end of an encoded line by a soft break is fine: `=` follows.
        assert_eq!(
            qp(&format!("{} y", "x".repeat(74))),
            format!("{} =\r\ny", "x".repeat(74))
        );
    }

    /// `cargo test --release --lib -- --ignored message_encode_speed --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn message_encode_speed() {
        let html = long_html();
        let n = 20_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(encode_body(std::hint::black_box(&html), false));
        }
        let per = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(count_escaped(std::hint::black_box(html.as_bytes())));
        }
        let per_count = start.elapsed() / n;
        println!(
            "encode_speed: {:.1} µs per 10 KB HTML body, of which counting {:.2} µs",
            per.as_secs_f64() * 1e6,
            per_count.as_secs_f64() * 1e6
        );
    }
}
