//! The snapshot stream of a `raftwasm:fsm@0.3.0` guest: `snapshot` writes its state to the host
//! in pieces (`snapshot-write`) and `restore` reads it back in pieces (`restore-read`), so the
//! guest never holds a serialized copy of its whole state in its linear memory, which never
//! shrinks. On the host side the pieces go where the caller says ([`Sink`]): appended to a
//! buffer that already holds the head of a snapshot envelope, or straight into a rollback
//! checkpoint's scratch file, so the host holds no extra copy either.

use crate::snapshot_data::SnapshotData;
use std::fs::File;
use std::io::{BufWriter, Write};

/// Most bytes one `restore-read` returns.
pub const MAX_READ_BYTES: u32 = 1 << 20;

/// Where a `snapshot` call's pieces go.
#[derive(Debug)]
pub(super) enum Sink {
    /// Appended to this buffer (after whatever it holds already).
    Memory(Vec<u8>),
    /// Written to this file.
    File(BufWriter<File>),
}

/// What the current call streams, if anything.
#[derive(Debug)]
pub(super) struct SnapshotStream {
    /// Most bytes one snapshot may hold: a guest looping on `snapshot-write` would otherwise
    /// grow the host's buffer without bound while its own memory stays small.
    max_bytes: usize,
    /// Where the snapshot being written goes, and how many bytes it has so far (only during
    /// `snapshot`).
    out: Option<(Sink, usize)>,
    /// The state being restored and how far the guest has read it (only during `restore`).
    input: Option<(SnapshotData, u64)>,
}

impl SnapshotStream {
    pub(super) fn new(max_bytes: usize) -> Self {
        SnapshotStream {
            max_bytes,
            out: None,
            input: None,
        }
    }

    /// A `snapshot` call starts: writes go to `sink` from now on.
    pub(super) fn begin_snapshot(&mut self, sink: Sink) {
        self.input = None;
        self.out = Some((sink, 0));
    }

    /// The `snapshot` call ended: the sink, and how many bytes the call wrote to it.
    pub(super) fn take_snapshot(&mut self) -> Option<(Sink, usize)> {
        self.out.take()
    }

    /// A `restore` call of `state` starts.
    pub(super) fn begin_restore(&mut self, state: SnapshotData) {
        self.out = None;
        self.input = Some((state, 0));
    }

    /// The `restore` call ended.
    pub(super) fn end_restore(&mut self) {
        self.input = None;
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (sink, written) = self
            .out
            .as_mut()
            .ok_or("snapshot-write is only available in snapshot")?;
        if written.saturating_add(bytes.len()) > self.max_bytes {
            return Err(format!(
                "the snapshot exceeds {} bytes (twice the guest's memory cap)",
                self.max_bytes
            ));
        }
        match sink {
            Sink::Memory(out) => out.extend_from_slice(bytes),
            Sink::File(file) => file
                .write_all(bytes)
                .map_err(|e| format!("the host could not store the snapshot: {e}"))?,
        }
        *written += bytes.len();
        Ok(())
    }

    pub(super) fn read(&mut self, max: u32) -> Result<Vec<u8>, String> {
        let (state, at) = self
            .input
            .as_mut()
            .ok_or("restore-read is only available in restore")?;
        let piece = state
            .read_at(*at, max.min(MAX_READ_BYTES) as usize)
            .map_err(|e| format!("the host could not read the state: {e}"))?;
        *at += piece.len() as u64;
        Ok(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_only_in_their_call() {
        let mut s = SnapshotStream::new(6);
        assert!(s.write(b"x").is_err());
        assert!(s.read(4).is_err());
        s.begin_snapshot(Sink::Memory(b"head".to_vec()));
        s.write(b"ab").unwrap();
        s.write(b"cd").unwrap();
        assert!(s.read(4).is_err());
        assert!(s.write(b"efg").is_err(), "over the cap");
        match s.take_snapshot() {
            Some((Sink::Memory(out), 4)) => assert_eq!(out, b"headabcd"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(s.write(b"x").is_err());
        s.begin_restore(SnapshotData::from(b"abcde".to_vec()));
        assert_eq!(s.read(2).unwrap(), b"ab");
        assert_eq!(s.read(10).unwrap(), b"cde");
        assert_eq!(s.read(10).unwrap(), b"");
        s.end_restore();
        assert!(s.read(1).is_err());
    }
}
