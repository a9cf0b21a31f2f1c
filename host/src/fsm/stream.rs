//! The snapshot stream of a `raftwasm:fsm@0.3.0` guest: `snapshot` writes its state to the host
//! in pieces (`snapshot-write`) and `restore` reads it back in pieces (`restore-read`), so the
//! guest never holds a serialized copy of its whole state in its linear memory, which never
//! shrinks. The host side still sees the snapshot as one buffer, as for older guests.

use std::sync::Arc;

/// Most bytes one `restore-read` returns.
pub const MAX_READ_BYTES: u32 = 1 << 20;

/// What the current call streams, if anything.
#[derive(Debug)]
pub(super) struct SnapshotStream {
    /// Most bytes one snapshot may hold: a guest looping on `snapshot-write` would otherwise
    /// grow the host's buffer without bound while its own memory stays small.
    max_bytes: usize,
    /// The snapshot being written (only during `snapshot`).
    out: Option<Vec<u8>>,
    /// The state being restored and how far the guest has read it (only during `restore`).
    input: Option<(Arc<Vec<u8>>, usize)>,
}

impl SnapshotStream {
    pub(super) fn new(max_bytes: usize) -> Self {
        SnapshotStream {
            max_bytes,
            out: None,
            input: None,
        }
    }

    /// A `snapshot` call starts: writes are collected from now on.
    pub(super) fn begin_snapshot(&mut self) {
        self.input = None;
        self.out = Some(Vec::new());
    }

    /// The `snapshot` call ended: what it wrote.
    pub(super) fn take_snapshot(&mut self) -> Vec<u8> {
        self.out.take().unwrap_or_default()
    }

    /// A `restore` call of `state` starts.
    pub(super) fn begin_restore(&mut self, state: Arc<Vec<u8>>) {
        self.out = None;
        self.input = Some((state, 0));
    }

    /// The `restore` call ended.
    pub(super) fn end_restore(&mut self) {
        self.input = None;
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let out = self
            .out
            .as_mut()
            .ok_or("snapshot-write is only available in snapshot")?;
        if out.len().saturating_add(bytes.len()) > self.max_bytes {
            return Err(format!(
                "the snapshot exceeds {} bytes (twice the guest's memory cap)",
                self.max_bytes
            ));
        }
        out.extend_from_slice(bytes);
        Ok(())
    }

    pub(super) fn read(&mut self, max: u32) -> Result<Vec<u8>, String> {
        let (state, at) = self
            .input
            .as_mut()
            .ok_or("restore-read is only available in restore")?;
        let end = state.len().min(*at + max.min(MAX_READ_BYTES) as usize);
        let piece = state[*at..end].to_vec();
        *at = end;
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
        s.begin_snapshot();
        s.write(b"ab").unwrap();
        s.write(b"cd").unwrap();
        assert!(s.read(4).is_err());
        assert!(s.write(b"efg").is_err(), "over the cap");
        assert_eq!(s.take_snapshot(), b"abcd");
        assert!(s.write(b"x").is_err());
        s.begin_restore(Arc::new(b"abcde".to_vec()));
        assert_eq!(s.read(2).unwrap(), b"ab");
        assert_eq!(s.read(10).unwrap(), b"cde");
        assert_eq!(s.read(10).unwrap(), b"");
        s.end_restore();
        assert!(s.read(1).is_err());
    }
}
