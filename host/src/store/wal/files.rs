//! Segment files on disk: names, the format marker, zero-filled preallocation and reuse of
//! deleted segments. Nothing here knows the record format.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) const SPARE: &str = "next.tmp";
/// Names the record format; written before the first segment, checked on every open.
pub(super) const FORMAT_FILE: &str = "FORMAT";
const FORMAT: &str = "raftwasm-wal 2\n";
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

/// Checks the directory's format marker, or writes it into a directory with no segments yet.
pub(super) fn check_format(dir: &Path) -> io::Result<()> {
    let path = dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == FORMAT => Ok(()),
        Ok(found) => Err(corrupt(format!(
            "{}: log format {:?}, this build reads {:?}",
            dir.display(),
            found.trim(),
            FORMAT.trim()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let has_segments = std::fs::read_dir(dir)?
                .any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal")));
            if has_segments {
                return Err(corrupt(format!(
                    "{}: log segments without a {FORMAT_FILE} file (an older development \
                     format); this build cannot read them",
                    dir.display()
                )));
            }
            let tmp = dir.join("FORMAT.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(FORMAT.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(dir)
        }
        Err(e) => Err(e),
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
