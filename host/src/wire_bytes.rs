//! Byte strings in our serde types (a command's bytes, a module's bytes) encoded as one run of
//! bytes rather than as a sequence of `u8`: `#[serde(with = "crate::wire_bytes")]`.
//!
//! Why: bincode writes a `Vec<u8>` field as its length and then each byte through serde's
//! element-by-element sequence path, and reads it back the same way; at 64 clients that was
//! about 5% of a node's CPU (every entry is encoded for the log and for each follower, and
//! decoded on each follower and for every apply). `serialize_bytes` produces the very same
//! bincode bytes (a `u64` length, then the bytes), so logs, snapshots and peers of earlier
//! versions read and write unchanged, and serde_json still sees an array of numbers.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// Most bytes reserved up front from a sequence's length hint (the rest grows as read), so a
/// forged length cannot make a decoder reserve memory it was never sent.
const PREALLOCATE: usize = 64 * 1024;

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(Bytes)
}

struct Bytes;

impl<'de> Visitor<'de> for Bytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    /// Formats without a byte string (JSON) give a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOCATE));
        while let Some(byte) = seq.next_element()? {
            out.push(byte);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    /// The layout the types had before: plain `Vec<u8>` fields.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        bytes: Vec<u8>,
        tail: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Run {
        #[serde(with = "super")]
        bytes: Vec<u8>,
        tail: u32,
    }

    #[test]
    fn bincode_and_json_encodings_are_those_of_a_plain_vec() {
        for bytes in [
            vec![],
            vec![0u8],
            (0..=255u8).cycle().take(70_000).collect(),
        ] {
            let plain = Plain {
                bytes: bytes.clone(),
                tail: 7,
            };
            let run = Run { bytes, tail: 7 };
            let old = bincode::serialize(&plain).unwrap();
            assert_eq!(bincode::serialize(&run).unwrap(), old);
            assert_eq!(bincode::deserialize::<Run>(&old).unwrap(), run);
            let json = serde_json::to_string(&plain).unwrap();
            assert_eq!(serde_json::to_string(&run).unwrap(), json);
            assert_eq!(serde_json::from_str::<Run>(&json).unwrap(), run);
        }
    }

    #[test]
    fn a_forged_length_is_refused_without_reserving_it() {
        let mut forged = bincode::serialize(&Plain {
            bytes: vec![1, 2, 3],
            tail: 7,
        })
        .unwrap();
        forged[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(bincode::deserialize::<Run>(&forged).is_err());
    }
}
