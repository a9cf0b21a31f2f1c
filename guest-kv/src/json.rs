//! JSON on every put's path, without serde's per-byte work: the put's command read in, its
//! answer and its change written out. What it reads and writes is exactly what `serde_json`
//! reads and writes; anything else goes to serde.
//!
//! A put of a 256-byte value writes that value, or the one it replaced, three times: the
//! change's `value` and `prev` and the answer's `prev`. serde_json looks up every byte of a
//! string in its escape table; compiled to wasm and metered for fuel, that loop was the single
//! hottest function of a follower under put load (perf with wasmtime's perf map: 14% of the
//! node's samples). Here a string is scanned sixteen bytes at a time and copied whole when
//! nothing in it needs escaping, which is almost always. Reading, serde buffers a tagged enum's
//! fields before it picks the variant; a put in the form the host writes is read directly.

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

/// A put in the exact form [`crate::Command::encode`] writes it, `{"op":"put","key":K,"value":V}`
/// with nothing escaped in `K` or `V`, read without serde: the key and value. `None` for any
/// other input, which serde then reads (or rejects) as it always has. serde reads tagged
/// enums through an intermediate copy of every field; every put's command comes this way.
pub(crate) fn plain_put(bytes: &[u8]) -> Option<(String, String)> {
    let rest = bytes.strip_prefix(br#"{"op":"put","key":""#)?;
    let (key, rest) = plain_str(rest)?;
    let rest = rest.strip_prefix(br#","value":""#)?;
    let (value, rest) = plain_str(rest)?;
    if rest != b"}" {
        return None;
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    Some((text(key)?, text(value)?))
}

/// A put's answer as guest-kv writes it, `{"prev":null}` or `{"prev":V}` with nothing escaped
/// in `V`, read without serde: the previous value. `None` for anything else (serde's to read).
pub(crate) fn plain_put_answer(bytes: &[u8]) -> Option<Option<String>> {
    let rest = bytes.strip_prefix(br#"{"prev":"#)?;
    if rest == b"null}" {
        return Some(None);
    }
    let (prev, rest) = plain_str(rest.strip_prefix(b"\"")?)?;
    if rest != b"}" {
        return None;
    }
    String::from_utf8(prev.to_vec()).ok().map(Some)
}

/// The bytes of a JSON string's body up to its closing quote, and what follows the quote;
/// `None` if an escape or a control character comes first.
fn plain_str(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = next_special(bytes, 0)?;
    (bytes[end] == b'"').then(|| (&bytes[..end], &bytes[end + 1..]))
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Bits set in the high bit of each byte of `word` that is below `n` (n ≤ 128), and perhaps
/// of bytes above one that is: the classic bit trick, exact for "is there any".
fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// Whether any byte of `word` needs escaping: a control character, `"` or `\`.
fn any_special(word: u64) -> bool {
    below(word, 0x20) | below(word ^ (ONES * 0x22), 1) | below(word ^ (ONES * 0x5c), 1) != 0
}

fn word(bytes: &[u8]) -> u64 {
    u64::from_ne_bytes(bytes.try_into().unwrap_or([0; 8]))
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The first byte at or after `from` that needs escaping: sixteen bytes a step (fewer steps
/// means less fuel metering), then byte by byte within the step that has one.
fn next_special(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 16) {
        if any_special(word(&chunk[..8])) || any_special(word(&chunk[8..])) {
            break;
        }
        i += 16;
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

    /// Asserts that `ours`, read from `input`, is what serde reads: the same value, or an error.
    fn agrees_with_serde<T>(input: &[u8], ours: Result<T, serde_json::Error>)
    where
        T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let serde = serde_json::from_slice::<T>(input);
        match (&ours, &serde) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(input)),
            (Err(_), Err(_)) => {}
            _ => panic!("{}: {ours:?} vs {serde:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn every_byte_escapes_as_serde_json_escapes_it_at_every_offset() {
        // Each ASCII byte, and a few multi-byte characters, alone and at each place in and
        // around the first sixteen-byte step, and in the bytes after the last whole step.
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

    #[test]
    fn a_command_decodes_as_serde_decodes_it_with_or_without_the_plain_put_path() {
        use crate::schema::Command;
        let put = |k: &str, v: &str| {
            Command::Put {
                key: k.into(),
                value: v.into(),
            }
            .encode()
        };
        let mut inputs: Vec<Vec<u8>> = vec![
            put("k", ""),
            put("key1", &"v".repeat(300)),
            put("€ 😀", "a \"quoted\" \\ line\n"),
            put("k", "\u{1}"),
            br#"{"op":"put","key":"k","value":"v"} "#.to_vec(),
            br#"{"op":"put", "key":"k","value":"v"}"#.to_vec(),
            br#"{"op":"put","value":"v","key":"k"}"#.to_vec(),
            br#"{"op":"put","key":"k","value":"v","x":1}"#.to_vec(),
            br#"{"op":"put","key":"k\u0041","value":"v"}"#.to_vec(),
            br#"{"op":"put","key":"k","value":"v"#.to_vec(),
            br#"{"op":"put","key":"k","value":5}"#.to_vec(),
            br#"{"op":"delete","key":"k"}"#.to_vec(),
            b"{\"op\":\"put\",\"key\":\"k\",\"value\":\"\x01\"}".to_vec(),
            b"{\"op\":\"put\",\"key\":\"k\",\"value\":\"\xff\"}".to_vec(),
            b"".to_vec(),
        ];
        inputs.push(put("k", "v")[..20].to_vec());
        for input in &inputs {
            agrees_with_serde(input, Command::decode(input));
        }
        for (key, value) in [("k", ""), ("€ 😀", "a \"quoted\" \\ line\n\u{1}")] {
            let command = Command::Put {
                key: key.into(),
                value: value.into(),
            };
            assert_eq!(command.encode(), serde_json::to_vec(&command).unwrap());
        }
        assert!(
            plain_put(&put("key1", "value1")).is_some(),
            "the common case takes the plain path"
        );
        assert!(plain_put(&put("k", "a\"b")).is_none());
    }

    #[test]
    fn a_put_answer_decodes_as_serde_decodes_it() {
        use crate::schema::PutResponse;
        let inputs: [&[u8]; 9] = [
            br#"{"prev":null}"#,
            br#"{"prev":""}"#,
            br#"{"prev":"value1"}"#,
            br#"{"prev":"a\"b"}"#,
            br#"{"prev": "v"}"#,
            br#"{"prev":"v","x":1}"#,
            br#"{"prev":5}"#,
            b"{\"prev\":\"\xff\"}",
            br#"{"prev":"v""#,
        ];
        for input in inputs {
            agrees_with_serde(input, PutResponse::decode(input));
        }
        assert_eq!(plain_put_answer(br#"{"prev":"v"}"#), Some(Some("v".into())));
    }
}
