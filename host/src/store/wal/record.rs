//! The record format of the write-ahead log: `len: u32 LE | crc32(segment id: u64 LE, body): u32
//! LE | body`, body = `kind: u8 | fields` (see the parent module for the kinds). Encoding,
//! sealing (checksums) and decoding; nothing here touches a file.

/// Bytes before a record's body: its length and checksum.
pub(super) const HEADER: usize = 8;
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_META: u8 = 3;
const KIND_PURGE: u8 = 4;

/// One record to append.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// The encoded entry at `index`; replaces any entry at or after `index`.
    Entry { index: u64, bytes: &'a [u8] },
    /// Removes entries with index >= `from`.
    Truncate { from: u64 },
    /// Sets metadata `key` to `value`.
    Meta { key: u8, value: &'a [u8] },
    /// Removes entries with index <= `upto`.
    Purge { upto: u64 },
}

/// Appends `record` to `out` with its checksum left zero (see [`seal`]); returns where its
/// body starts, relative to `out`.
pub(super) fn encode(out: &mut Vec<u8>, record: &Record<'_>) -> u64 {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    match *record {
        Record::Entry { index, bytes } => {
            out.push(KIND_ENTRY);
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(bytes);
        }
        Record::Truncate { from } => {
            out.push(KIND_TRUNCATE);
            out.extend_from_slice(&from.to_le_bytes());
        }
        Record::Meta { key, value } => {
            out.push(KIND_META);
            out.push(key);
            out.extend_from_slice(value);
        }
        Record::Purge { upto } => {
            out.push(KIND_PURGE);
            out.extend_from_slice(&upto.to_le_bytes());
        }
    }
    let body_len = (out.len() - start - HEADER) as u32;
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    (start + HEADER) as u64
}

fn checksum(segment: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&segment.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Fills in the checksums of the records encoded in `buf`, for segment `segment`.
pub(super) fn seal(buf: &mut [u8], segment: u64) {
    let mut pos = 0;
    while pos < buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = checksum(segment, &buf[pos + HEADER..pos + HEADER + len]);
        buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos += HEADER + len;
    }
}

/// Decodes the valid records of segment `segment` at the start of `data`, calling
/// `f(record, body_offset)` for each.
pub(super) fn decode_all(data: &[u8], segment: u64, mut f: impl FnMut(Record<'_>, u64)) {
    let mut pos = 0usize;
    while data.len() - pos >= HEADER {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        if len == 0 || len > data.len() - pos - HEADER {
            return;
        }
        let body = &data[pos + HEADER..pos + HEADER + len];
        if checksum(segment, body) != crc {
            return;
        }
        let u64_at = |b: &[u8]| {
            b.get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        };
        let record = match body[0] {
            KIND_ENTRY => u64_at(&body[1..]).map(|index| Record::Entry {
                index,
                bytes: &body[9..],
            }),
            KIND_TRUNCATE => u64_at(&body[1..]).map(|from| Record::Truncate { from }),
            KIND_META if body.len() >= 2 => Some(Record::Meta {
                key: body[1],
                value: &body[2..],
            }),
            KIND_PURGE => u64_at(&body[1..]).map(|upto| Record::Purge { upto }),
            _ => None,
        };
        let Some(record) = record else { return };
        f(record, (pos + HEADER) as u64);
        pos += HEADER + len;
    }
}
