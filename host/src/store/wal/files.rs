//! Segment files on disk: names, the format marker, zero-filled preallocation and reuse of
//! deleted segments. Nothing here knows the record format.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) const SPARE: &str = "next.tmp";
/// Names the record format; written before the first segment, checked on every open.
pub(super) const FORMAT_FILE: &str = "FORMAT";
/// The marker of a log being created.
const FORMAT_TMP: &str = "FORMAT.tmp";
/// The format before segments were closed and checksums salted.
const FORMAT_V2: &str = "raftwasm-wal 2\n";
/// A segment made ready for use: its id and open file.
pub(super) type Prepared = (u64, Arc<File>);

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.wal"))
}

pub(super) fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` filled with `bytes` zeros and syncs it.
pub(super) fn zero_filled(path: &Path, bytes: u64) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(f)
}

/// What a directory's format marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Segments that are not closed by an end record, checksums without a salt: read once
    /// with the old rules and rewritten.
    V2,
    /// The current format.
    V3 { salt: u64 },
}

fn format_line(salt: u64) -> String {
    format!("raftwasm-wal 3 salt={salt:016x}\n")
}

/// Reads the directory's format marker.
pub(super) fn read_format(dir: &Path) -> io::Result<Format> {
    let found = std::fs::read_to_string(dir.join(FORMAT_FILE))?;
    if found == FORMAT_V2 {
        return Ok(Format::V2);
    }
    found
        .strip_prefix("raftwasm-wal 3 salt=")
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .filter(|salt| *salt != 0)
        .map(|salt| Format::V3 { salt })
        .ok_or_else(|| {
            corrupt(format!(
                "{}: log format {:?}, this build reads \"raftwasm-wal 3\"",
                dir.display(),
                found.trim(),
            ))
        })
}

/// Reads the directory's format marker; for a directory with no log yet, picks a new random
/// salt, written as `FORMAT.tmp` until [`commit_format`]. True with a new log.
pub(super) fn check_format(dir: &Path) -> io::Result<(Format, bool)> {
    match read_format(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (ids, _) = list(dir)?;
            let tmp = dir.join(FORMAT_TMP);
            if !ids.is_empty() && !tmp.exists() {
                return Err(corrupt(format!(
                    "{}: log segments without a {FORMAT_FILE} file (an older development \
                     format); this build cannot read them",
                    dir.display()
                )));
            }
            // Segments beside `FORMAT.tmp` are from a creation that did not finish: nothing
            // in them was ever acknowledged.
            for id in ids {
                std::fs::remove_file(segment_path(dir, id))?;
            }
            let salt = new_salt()?;
            let mut f = File::create(&tmp)?;
            f.write_all(format_line(salt).as_bytes())?;
            f.sync_all()?;
            Ok((Format::V3 { salt }, true))
        }
        other => other.map(|format| (format, false)),
    }
}

/// Makes a new log's format marker final, once its first segment's head is durable: from then
/// on the log must hold at least one record.
pub(super) fn commit_format(dir: &Path) -> io::Result<()> {
    std::fs::rename(dir.join(FORMAT_TMP), dir.join(FORMAT_FILE))?;
    sync_dir(dir)
}

/// The segment ids in `dir`, ascending, and the files kept for reuse.
pub(super) fn list(dir: &Path) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
    let (mut ids, mut recycle) = (Vec::new(), Vec::new());
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".wal")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        {
            ids.push(id);
        } else if name.ends_with(".recycle") {
            recycle.push(path);
        }
    }
    ids.sort_unstable();
    Ok((ids, recycle))
}

fn new_salt() -> io::Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        let salt = u64::from_le_bytes(bytes);
        if salt != 0 {
            return Ok(salt);
        }
    }
}

/// A recycled file that no reader still holds (an entry being read from it stays intact).
pub(super) fn take_unread(
    recycled: &mut Vec<(PathBuf, Arc<File>)>,
) -> Option<(PathBuf, Arc<File>)> {
    let i = recycled
        .iter()
        .position(|(_, f)| Arc::strong_count(f) == 1)?;
    Some(recycled.swap_remove(i))
}

/// Makes segment file `id` ready for use: `reuse` renamed, or a new zero-filled file; then
/// syncs the directory so the name is durable.
pub(super) fn prepare(
    dir: &Path,
    id: u64,
    reuse: Option<(PathBuf, Arc<File>)>,
    segment_bytes: u64,
) -> io::Result<Prepared> {
    let path = segment_path(dir, id);
    let file = match reuse {
        Some((from, file)) => {
            std::fs::rename(from, &path)?;
            file
        }
        None => {
            let tmp = dir.join(SPARE);
            let file = zero_filled(&tmp, segment_bytes)?;
            std::fs::rename(&tmp, &path)?;
            Arc::new(file)
        }
    };
    sync_dir(dir)?;
    Ok((id, file))
}
