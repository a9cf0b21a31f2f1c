//! A snapshot envelope as openraft hands it around: bytes in memory (received from a leader,
//! restored from a backup) or a region of the snapshot file on disk, read only where its bytes
//! are needed.
//!
//! openraft asks for the current snapshot at every start (twice) only to learn its metadata,
//! and a leader sends it a chunk at a time: reading a large snapshot file into one buffer for
//! that cost a restart hundreds of milliseconds and as much memory again as the state.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The bytes of a snapshot envelope, wherever they are.
#[derive(Debug, Clone)]
pub enum SnapshotData {
    /// In memory (shared: a guest restores from it while a rollback checkpoint keeps it).
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes from `offset` of an open file (the open handle keeps them readable after the
    /// file is replaced by a newer snapshot).
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl From<Vec<u8>> for SnapshotData {
    fn from(bytes: Vec<u8>) -> Self {
        SnapshotData::Bytes(Arc::new(bytes))
    }
}

impl SnapshotData {
    /// The envelope's size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            SnapshotData::Bytes(bytes) => bytes.len() as u64,
            SnapshotData::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` bytes from `at` (fewer at the end; none past it). Blocking for a file.
    pub fn read_at(&self, at: u64, max: usize) -> io::Result<Vec<u8>> {
        let start = at.min(self.len());
        let end = self.len().min(start.saturating_add(max as u64));
        match self {
            SnapshotData::Bytes(bytes) => Ok(bytes[start as usize..end as usize].to_vec()),
            SnapshotData::File { file, offset, .. } => {
                let mut piece = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut piece, offset + start)?;
                Ok(piece)
            }
        }
    }

    /// `len` bytes from `at` (fewer at the end) as data of their own: for a file, the same file
    /// (nothing is read); in memory, a copy.
    pub fn region(&self, at: u64, len: u64) -> SnapshotData {
        let start = at.min(self.len());
        let end = self.len().min(start.saturating_add(len));
        match self {
            SnapshotData::Bytes(bytes) => {
                SnapshotData::from(bytes[start as usize..end as usize].to_vec())
            }
            SnapshotData::File { file, offset, .. } => SnapshotData::File {
                file: file.clone(),
                offset: offset + start,
                len: end - start,
            },
        }
    }

    /// The whole envelope in one buffer. Blocking for a file.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            SnapshotData::Bytes(bytes) => {
                Ok(Arc::try_unwrap(bytes).unwrap_or_else(|b| (*b).clone()))
            }
            data @ SnapshotData::File { .. } => {
                let len = usize::try_from(data.len()).map_err(io::Error::other)?;
                data.read_at(0, len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn both_kinds_read_the_same_bytes() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"headENVELOPEtail").unwrap();
        let on_disk = SnapshotData::File {
            file: Arc::new(file),
            offset: 4,
            len: 8,
        };
        let in_memory = SnapshotData::from(b"ENVELOPE".to_vec());
        for data in [on_disk, in_memory] {
            assert_eq!(data.len(), 8);
            let inner = data.region(2, 4);
            assert_eq!(inner.len(), 4);
            assert_eq!(inner.read_at(1, 10).unwrap(), b"ELO");
            assert_eq!(data.region(6, 10).into_bytes().unwrap(), b"PE");
            assert_eq!(data.read_at(0, 3).unwrap(), b"ENV");
            assert_eq!(data.read_at(5, 100).unwrap(), b"OPE");
            assert_eq!(data.read_at(8, 10).unwrap(), b"");
            assert_eq!(data.read_at(20, 10).unwrap(), b"");
            assert_eq!(data.into_bytes().unwrap(), b"ENVELOPE");
        }
    }
}
