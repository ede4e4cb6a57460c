//! Percent-encoding (RFC 3986 2.1): each UTF-8 byte of a character outside the caller's set
//! written as `%XY`, in the caller's case of hex digits.
//!
//! Owns the encoding loop shared by the `mailto:` URI of List-Unsubscribe and the templates'
//! `urlencode` filter. It never decides which characters a URI keeps (each caller has its
//! own RFC's set) and never decodes.

/// Hex digits for [`encode`]: upper case as RFC 3986 recommends.
pub const UPPER: &[u8; 16] = b"0123456789ABCDEF";
/// Hex digits for [`encode`]: lower case.
pub const LOWER: &[u8; 16] = b"0123456789abcdef";

/// Appends `text` to `out`, every character for which `keep` is false percent-encoded with
/// `hex`'s digits.
pub fn encode(text: &str, keep: impl Fn(char) -> bool, hex: &[u8; 16], out: &mut String) {
    let mut last = 0;
    for (i, c) in text.char_indices() {
        if keep(c) {
            continue;
        }
        out.push_str(&text[last..i]);
        for &b in c.encode_utf8(&mut [0; 4]).as_bytes() {
            out.push('%');
            out.push(char::from(hex[usize::from(b >> 4)]));
            out.push(char::from(hex[usize::from(b & 15)]));
        }
        last = i + c.len_utf8();
    }
    out.push_str(&text[last..]);
}
