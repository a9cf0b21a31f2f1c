//! The record format of the write-ahead log: `len: u32 LE | crc32(salt: u64 LE, segment id: u64
//! LE, body): u32 LE | body`, body = `kind: u8 | fields` (see the parent module for the kinds).
//! Encoding, sealing (checksums), decoding and the search for valid records past a damaged
//! one; nothing here touches a file.

/// Bytes before a record's body: its length and checksum.
pub(super) const HEADER: usize = 8;
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_META: u8 = 3;
const KIND_PURGE: u8 = 4;
const KIND_END: u8 = 5;
const KIND_HEAD: u8 = 6;

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
    /// Closes a segment: nothing after it in the file belongs to the log.
    End,
    /// Opens a segment: the file's length when it started (a shorter file was cut), where the
    /// log ended (the highest entry index or purge point: replay can tell whether an older
    /// segment holding entries went missing) and how many records restating metadata follow.
    Head {
        size: u64,
        end: Option<u64>,
        follow: u32,
    },
}

/// What makes a record valid in one segment of one log: the log's random salt and the
/// segment's id, both covered by every checksum. The salt keeps bytes a client wrote (an
/// entry's value, later left in a reused file) from ever passing for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seal {
    pub salt: u64,
    pub segment: u64,
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
        Record::End => out.push(KIND_END),
        Record::Head { size, end, follow } => {
            out.push(KIND_HEAD);
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&follow.to_le_bytes());
            if let Some(end) = end {
                out.extend_from_slice(&end.to_le_bytes());
            }
        }
    }
    let body_len = (out.len() - start - HEADER) as u32;
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    (start + HEADER) as u64
}

fn checksum(seal: Seal, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if seal.salt != 0 {
        h.update(&seal.salt.to_le_bytes());
    }
    h.update(&seal.segment.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Fills in the checksums of the records encoded in `buf`, for the segment `with` names.
pub(super) fn seal(buf: &mut [u8], with: Seal) {
    let mut pos = 0;
    while pos < buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = checksum(with, &buf[pos + HEADER..pos + HEADER + len]);
        buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos += HEADER + len;
    }
}

/// Where the records of a segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// At an end record; `at` is its offset.
    End { at: u64 },
    /// At offset `at`, where no valid record starts (zeros, a torn write, or damage).
    Cut { at: u64 },
}

/// The valid records at the start of one segment's bytes, in order, each with the offset of
/// its body; [`Records::stop`] then says where and why they ended.
pub(super) struct Records<'a> {
    data: &'a [u8],
    seal: Seal,
    pos: usize,
    stop: Option<Stop>,
}

impl<'a> Records<'a> {
    pub fn new(data: &'a [u8], seal: Seal) -> Self {
        Records {
            data,
            seal,
            pos: 0,
            stop: None,
        }
    }

    /// Where the records ended (call once the iterator is exhausted).
    pub fn stop(&self) -> Stop {
        self.stop.unwrap_or(Stop::Cut {
            at: self.pos as u64,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (Record<'a>, u64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() {
            return None;
        }
        let at = self.pos as u64;
        match record_at(self.data, self.pos, self.seal) {
            Some((Record::End, _)) => {
                self.stop = Some(Stop::End { at });
                None
            }
            Some((record, len)) => {
                self.pos += HEADER + len;
                Some((record, at + HEADER as u64))
            }
            None => {
                self.stop = Some(Stop::Cut { at });
                None
            }
        }
    }
}

/// The valid record at `pos` of `data`, with its body's length.
fn record_at(data: &[u8], pos: usize, seal: Seal) -> Option<(Record<'_>, usize)> {
    let head = data.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
    if len == 0 || len > data.len() - pos - HEADER {
        return None;
    }
    let body = &data[pos + HEADER..pos + HEADER + len];
    if checksum(seal, body) != crc {
        return None;
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
        KIND_END if body.len() == 1 => Some(Record::End),
        KIND_HEAD if body.len() == 13 || body.len() == 21 => Some(Record::Head {
            size: u64_at(&body[1..])?,
            follow: u32::from_le_bytes(body[9..13].try_into().unwrap()),
            end: u64_at(&body[13..]),
        }),
        _ => None,
    };
    record.map(|r| (r, len))
}

/// How far from the log's last entry the index of a record found past damage may be for the
/// record to be worth its checksum (see [`find_valid`]).
const NEAR_INDEX: u64 = 1 << 32;
/// Meta records hold small values (the vote, the committed log id).
const MAX_META_BYTES: usize = 4096;

/// The offset of the first valid record that starts at or after `from`, at any byte offset:
/// after a record that does not check out, whether anything valid follows it tells a torn
/// tail (nothing does) from damage inside the log (something does). `near` is the last entry
/// index the log holds before `from`.
///
/// Only a header whose record could be one the log writes there gets its checksum computed:
/// the scan may cross megabytes of an entry's bytes (a module upgrade is tens of MiB), each
/// offset reading a random length, and summing every such length's checksum would take hours.
pub(super) fn find_valid(data: &[u8], from: u64, seal: Seal, near: u64) -> Option<u64> {
    let from = usize::try_from(from).ok()?;
    (from..data.len().saturating_sub(HEADER))
        .filter(|&pos| could_be_record(data, pos, near))
        .find_map(|pos| record_at(data, pos, seal).map(|_| pos as u64))
}

/// Whether the header at `pos` (within `data`) describes a record the log could hold there,
/// judged without its checksum.
pub(super) fn could_be_record(data: &[u8], pos: usize, near: u64) -> bool {
    let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
    // Cheap rejections first: most bytes of a zero-filled or reused file fail here.
    if len == 0 || len > data.len() - pos - HEADER {
        return false;
    }
    let body = &data[pos + HEADER..pos + HEADER + len];
    let index_near = || {
        body.get(1..9)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .is_some_and(|i| i.abs_diff(near) <= NEAR_INDEX)
    };
    match body[0] {
        KIND_ENTRY | KIND_TRUNCATE | KIND_PURGE => index_near(),
        KIND_META => (2..=MAX_META_BYTES).contains(&len),
        KIND_END => len == 1,
        KIND_HEAD => len == 13 || len == 21,
        _ => false,
    }
}
