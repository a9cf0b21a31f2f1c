//! The snapshot stream (`raftwasm:fsm@0.3.0`): [`SnapshotWriter`] hands a snapshot to the host
//! in pieces as it is written, and [`SnapshotReader`] reads a restore's state from the host in
//! pieces, so a guest never holds a serialized copy of its whole state: its linear memory never
//! shrinks, and a copy made once would stay for the life of the instance.

use crate::__private::bindings::raftwasm::fsm::context as host;
use std::io;

/// Bytes collected before they are handed to the host, and asked for at a time.
const PIECE_BYTES: usize = 64 << 10;

/// Where [`crate::StateMachine::write_snapshot`] writes the state.
#[derive(Debug)]
pub struct SnapshotWriter {
    buf: Vec<u8>,
}

impl SnapshotWriter {
    pub(crate) fn new() -> Self {
        SnapshotWriter {
            buf: Vec::with_capacity(PIECE_BYTES),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            host::snapshot_write(&self.buf).map_err(io::Error::other)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl io::Write for SnapshotWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > PIECE_BYTES {
            self.send()?;
        }
        if bytes.len() >= PIECE_BYTES {
            host::snapshot_write(bytes).map_err(io::Error::other)?;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Where [`crate::StateMachine::read_snapshot`] reads the state from.
#[derive(Debug)]
pub struct SnapshotReader {
    piece: Vec<u8>,
    at: usize,
    ended: bool,
}

impl SnapshotReader {
    pub(crate) fn new() -> Self {
        SnapshotReader {
            piece: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl io::Read for SnapshotReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.piece.len() && !self.ended && !out.is_empty() {
            self.piece = host::restore_read(PIECE_BYTES as u32).map_err(io::Error::other)?;
            self.at = 0;
            self.ended = self.piece.is_empty();
        }
        let n = out.len().min(self.piece.len() - self.at);
        out[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
