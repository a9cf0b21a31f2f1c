//! JSON output for what every put writes: its answer and its change. Byte for byte what
//! `serde_json` writes, without its byte-at-a-time scan of each string.
//!
//! A put of a 256-byte value writes that value, or the one it replaced, three times: the
//! change's `value` and `prev` and the answer's `prev`. serde_json looks up every byte of a
//! string in its escape table; compiled to wasm and metered for fuel, that loop was the single
//! hottest function of a follower under put load (perf with wasmtime's perf map: 14% of the
//! node's samples). Here a string is scanned eight bytes at a time and copied whole when
//! nothing in it needs escaping, which is almost always.

/// Appends `s` as a JSON string, escaped as serde_json escapes it: `"` and `\`, the short forms
/// `\b \t \n \f \r`, and `\u00xx` (lower-case hex) for the other control characters.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(at) = next_special(bytes, start) {
        out.extend_from_slice(&bytes[start..at]);
        escape(out, bytes[at]);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `s` as a JSON string, or `null`.
pub(crate) fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `word` is below `n` (n ≤ 128): the classic bit trick, exact for "any".
fn any_below(word: u64, n: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0
}

/// Whether any byte of `word` equals `b`.
fn any_equal(word: u64, b: u8) -> bool {
    any_below(word ^ (ONES * u64::from(b)), 1)
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The first byte at or after `from` that needs escaping.
fn next_special(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        if any_below(word, 0x20) || any_equal(word, b'"') || any_equal(word, b'\\') {
            break;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|p| i + p)
}

fn escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_str(&mut out, s);
        out
    }

    #[test]
    fn every_byte_escapes_as_serde_json_escapes_it_at_every_offset() {
        // Each ASCII byte, and a few multi-byte characters, alone and at each place in and
        // around an eight-byte word.
        let mut specials: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        specials.extend(["é", "€", "😀", "\u{7f}", "\u{2028}"].map(String::from));
        for special in &specials {
            for before in 0..20 {
                for after in [0, 1, 7, 8, 9] {
                    let s = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                    assert_eq!(
                        ours(&s),
                        serde_json::to_vec(&s).unwrap(),
                        "{s:?} encodes differently"
                    );
                }
            }
        }
    }

    #[test]
    fn strings_of_only_escapes_and_empty_strings_match() {
        for s in ["", "\"", "\\\\", "\n\n\n\n\n\n\n\n\n", "\"\u{1}\u{1f}\\x\t"] {
            assert_eq!(ours(s), serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        let mut out = Vec::new();
        write_opt_str(&mut out, None);
        assert_eq!(out, b"null");
    }

    #[test]
    fn a_change_and_a_put_answer_encode_as_serde_encodes_them() {
        use crate::schema::{Change, ChangeOp, PutResponse};
        use std::borrow::Cow;
        let texts = [
            None,
            Some(""),
            Some("v"),
            Some("a \"quoted\" line\n"),
            Some("€ 😀"),
        ];
        for op in [
            ChangeOp::Put,
            ChangeOp::Delete,
            ChangeOp::Cas,
            ChangeOp::Append,
            ChangeOp::Incr,
        ] {
            for value in texts {
                for prev in texts {
                    let change = Change {
                        op,
                        value: value.map(Cow::Borrowed),
                        prev: prev.map(Cow::Borrowed),
                    };
                    assert_eq!(change.encode(), serde_json::to_vec(&change).unwrap());
                }
            }
        }
        for prev in texts {
            let answer = PutResponse {
                prev: prev.map(String::from),
            };
            assert_eq!(answer.encode(), serde_json::to_vec(&answer).unwrap());
        }
    }
}
