//! Replay: reads a log directory's segments in id order into the index, and decides whether
//! they form a log that lost nothing it acknowledged.
//!
//! The rules (current format). Every segment starts with a head record saying how long its file
//! was made and where the log ended when it started. A segment is closed with an end record
//! only once the head of the next one is durable, so the newest segment holding records is
//! never closed, and every older one is, except when all newer ones hold only their heads (a
//! crash between the two). An unclosed segment stops at bytes that are not a valid record (a
//! torn write: never acknowledged, since a write is acknowledged only after the sync that
//! covers every earlier byte, or unused space), and nothing valid may follow them in its file.
//! A file shorter than its head says was cut. Replay must reach where each head says the log
//! ended, unless what it misses was purged. A log whose format marker exists (written once
//! the first head was durable) has at least one segment holding records. Anything else is
//! [`Damage`], and the node does not start.

use super::files::{segment_path, Format};
use super::record::{find_valid, Record, Records, Seal, Stop, HEADER};
use super::{apply, Index, Segment};
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A log that cannot be trusted: where, and what was found.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the write-ahead log is damaged: {file} at offset {offset}: {what} (last entry read \
     before it: {}). Entries this node acknowledged may be lost, so it will not start on \
     this log. To recover, move the data directory aside, start the node with an empty one \
     and add it back to the cluster: the other members hold the data. \
     `host wal verify --data-dir <dir>` checks a stopped node's log.",
    last_entry.map_or("none".to_string(), |i| i.to_string())
)]
pub struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub last_entry: Option<u64>,
    pub what: String,
}

/// How one segment's records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// At its end record, at this offset.
    Closed(u64),
    /// At this offset, where no valid record starts and none follows: the torn tail of the
    /// newest segment, or the unused space of one that was never closed.
    Cut(u64),
}

/// What replay found in one segment file.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub file: PathBuf,
    pub records: usize,
    /// True when it holds its head record and the restated metadata and nothing else.
    pub head_only: bool,
    /// The lowest and highest entry index written in it.
    pub entries: Option<(u64, u64)>,
    pub end: SegmentEnd,
}

/// A replayed log.
pub(super) struct Replayed {
    pub index: Index,
    pub segments: Vec<Segment>,
    pub purged: Option<u64>,
    /// The segments that end in a cut and where to close them: the newest one holding records
    /// and any before it whose successors hold only their heads.
    pub tails: Vec<(u64, u64)>,
    pub report: Vec<SegmentReport>,
}

/// Where the log ends: the next entry follows this index.
pub(super) fn log_end(index: &Index, purged: Option<u64>) -> Option<u64> {
    index.entries.keys().next_back().copied().max(purged)
}

/// A head record, checked once the final purge point is known.
struct Head {
    file: PathBuf,
    offset: u64,
    says: Option<u64>,
    reached: Option<u64>,
}

/// How replay is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// To open the log for writing; a `fresh` log (being created) may hold no record yet.
    Open { fresh: bool },
    /// To check it: files are opened read-only.
    Verify,
}

/// Replay's state between segments.
struct Replay {
    salt: u64,
    strict: bool,
    writable: bool,
    index: Index,
    purged: Option<u64>,
    segments: Vec<Segment>,
    report: Vec<SegmentReport>,
    heads: Vec<Head>,
    /// For each segment: the last entry index replayed when it ended.
    last_at_end: Vec<Option<u64>>,
}

/// Replays segments `ids` (ascending) of `dir`, in `format`. Only reads.
pub(super) fn replay(dir: &Path, ids: &[u64], format: Format, mode: Mode) -> io::Result<Replayed> {
    let (salt, strict) = match format {
        Format::V3 { salt } => (salt, true),
        Format::V2 => (0, false),
    };
    let mut replay = Replay {
        salt,
        strict,
        writable: mode != Mode::Verify,
        index: Index::default(),
        purged: None,
        segments: Vec::new(),
        report: Vec::new(),
        heads: Vec::new(),
        last_at_end: Vec::new(),
    };
    for &id in ids {
        replay.segment(segment_path(dir, id), id)?;
    }
    let Replay {
        index,
        purged,
        segments,
        report,
        heads,
        last_at_end,
        ..
    } = replay;
    let empty = report.iter().all(|s| s.records == 0);
    if strict && empty && mode != (Mode::Open { fresh: true }) {
        return Err(broken(Damage {
            file: dir.to_path_buf(),
            offset: 0,
            last_entry: None,
            what: format!(
                "no segment holds a valid record ({} segment files), though the log was made",
                ids.len()
            ),
        }));
    }
    let tails = match strict {
        true => check_ends(ids, &report, &last_at_end)?,
        false => Vec::new(),
    };
    check_heads(&heads, purged)?;
    Ok(Replayed {
        index,
        segments,
        purged,
        tails,
        report,
    })
}

/// Checks how the segments end (see the module's rules); returns the cut ones to close.
fn check_ends(
    ids: &[u64],
    report: &[SegmentReport],
    last_at_end: &[Option<u64>],
) -> io::Result<Vec<(u64, u64)>> {
    let damage = |n: usize, offset: u64, what: &str| {
        Err(broken(Damage {
            file: report[n].file.clone(),
            offset,
            last_entry: last_at_end[n],
            what: what.to_string(),
        }))
    };
    let Some(newest) = report.iter().rposition(|s| s.records > 0) else {
        return Ok(Vec::new());
    };
    let mut tails = Vec::new();
    for (n, seg) in report.iter().enumerate().filter(|(_, s)| s.records > 0) {
        match seg.end {
            SegmentEnd::Closed(at) if n == newest => {
                return damage(
                    n,
                    at,
                    "the newest segment holding records is closed, but the one made after \
                     it is missing or blank",
                )
            }
            SegmentEnd::Closed(_) => {}
            SegmentEnd::Cut(at) => {
                let heads_after = report[n + 1..]
                    .iter()
                    .all(|s| s.records == 0 || s.head_only);
                if !heads_after {
                    return damage(
                        n,
                        at,
                        "the segment stops before its end record, and newer segments hold \
                         records",
                    );
                }
                tails.push((ids[n], at));
            }
        }
    }
    Ok(tails)
}

/// Each head must agree with what replay had reached, unless everything between is purged
/// (segments holding only purged entries are deleted).
fn check_heads(heads: &[Head], purged: Option<u64>) -> io::Result<()> {
    for head in heads {
        let missing_but_purged = head.reached < head.says && head.says <= purged;
        if head.says != head.reached && !missing_but_purged {
            let show = |i: Option<u64>| i.map_or("the start".to_string(), |i| format!("entry {i}"));
            return Err(broken(Damage {
                file: head.file.clone(),
                offset: head.offset,
                last_entry: head.reached,
                what: format!(
                    "the segment's head says the log ended at {} when it started, but the \
                     older segments end at {}: a segment is missing or was cut",
                    show(head.says),
                    show(head.reached)
                ),
            }));
        }
    }
    Ok(())
}

impl Replay {
    fn last_entry(&self) -> Option<u64> {
        self.index.entries.keys().next_back().copied()
    }

    /// Checks `record`, the `count`th of a segment in `file` (`len` bytes), at `offset`;
    /// returns how many records follow it when it is the segment's head.
    fn check(
        &mut self,
        file: &Path,
        record: Record<'_>,
        offset: u64,
        len: u64,
        count: usize,
    ) -> io::Result<Option<u32>> {
        let damage = |what: String| {
            broken(Damage {
                file: file.to_path_buf(),
                offset,
                last_entry: self.last_entry(),
                what,
            })
        };
        match record {
            Record::Head { size, .. } if size > len => Err(damage(format!(
                "the file is {len} bytes, shorter than the {size} it was made with: it was cut"
            ))),
            Record::Head { end, follow, .. } if count == 0 => {
                let reached = log_end(&self.index, self.purged);
                self.heads.push(Head {
                    file: file.to_path_buf(),
                    offset,
                    says: end,
                    reached,
                });
                Ok(Some(follow))
            }
            Record::Head { .. } => Err(damage("a head record inside a segment".into())),
            _ if count == 0 && self.strict => Err(damage(
                "the segment does not start with its head record".into(),
            )),
            Record::Purge { upto } if Some(upto) < self.purged => Err(damage(format!(
                "a purge point ({upto}) below an earlier one ({})",
                self.purged.unwrap_or_default()
            ))),
            _ => Ok(None),
        }
    }

    /// Replays segment `id`, in `file`.
    fn segment(&mut self, file: PathBuf, id: u64) -> io::Result<()> {
        let data = std::fs::read(&file)?;
        let seal = Seal {
            salt: self.salt,
            segment: id,
        };
        let mut seg = Segment {
            id,
            max_index: None,
            truncates: false,
        };
        let (mut count, mut entries, mut follow) = (0usize, None::<(u64, u64)>, 0);
        let mut records = Records::new(&data, seal);
        for (record, body) in records.by_ref() {
            let offset = body - HEADER as u64;
            if let Some(f) = self.check(&file, record, offset, data.len() as u64, count)? {
                follow = f as usize;
            }
            if let Record::Entry { index: i, .. } = record {
                entries = Some(entries.map_or((i, i), |(lo, hi)| (lo.min(i), hi.max(i))));
            }
            apply(&mut self.index, &mut self.purged, &mut seg, record, body);
            count += 1;
        }
        let end = match records.stop() {
            Stop::End { at } => SegmentEnd::Closed(at),
            Stop::Cut { at } => match find_valid(&data, at, seal, self.last_entry().unwrap_or(0)) {
                Some(valid) => {
                    return Err(broken(Damage {
                        file,
                        offset: at,
                        last_entry: self.last_entry(),
                        what: format!(
                            "bytes that are not a valid record, followed by a valid record \
                             at offset {valid}"
                        ),
                    }))
                }
                None => SegmentEnd::Cut(at),
            },
        };
        let handle = OpenOptions::new()
            .read(true)
            .write(self.writable)
            .open(&file)?;
        self.index.files.insert(id, Arc::new(handle));
        self.segments.push(seg);
        self.last_at_end.push(self.last_entry());
        self.report.push(SegmentReport {
            file,
            records: count,
            head_only: count > 0 && count == 1 + follow,
            entries,
            end,
        });
        Ok(())
    }
}

fn broken(damage: Damage) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, damage)
}

/// The damage an error from opening a log reports, if that is what it is.
pub fn damage_of(e: &io::Error) -> Option<&Damage> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Damage>())
}
