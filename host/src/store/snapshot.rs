//! Snapshot files: the guest's `snapshot()` bytes wrapped with the host's metadata, written
//! atomically and checked on read.
//!
//! The wrapped form ("envelope") is also what travels to other nodes in `InstallSnapshot`, so it
//! carries the guest module itself: a node that installs it runs the module that was active at
//! the snapshot's index, whatever `--fsm` it was started with. Layout: `RWSNAP02`, the active
//! module's SHA-256 (32 bytes), the module's length (u64 LE) and bytes (empty for the native
//! benchmark baseline), the module history as JSON with its length (u32 LE), the guest state
//! with its length (u64 LE), the client session table with its length (u64 LE), the log's
//! clock (u64 LE), the change feed with its length (u64 LE), and a CRC-32 of everything before
//! it. Older envelopes are still read: `RWSNAP04` has no change feed, `RWSNAP03` no clock,
//! `RWSNAP02` no session table. The file adds the openraft
//! metadata in front: `RWMETA01`, its JSON length (u32 LE), the JSON, then the envelope.

use crate::types::{ModuleRecord, SnapshotData, SnapshotMeta};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

const ENVELOPE_MAGIC: &[u8; 8] = b"RWSNAP05";
/// The envelope before the change feed.
const ENVELOPE_MAGIC_V4: &[u8; 8] = b"RWSNAP04";
/// The envelope before the log's clock.
const ENVELOPE_MAGIC_V3: &[u8; 8] = b"RWSNAP03";
/// The envelope before client sessions.
const ENVELOPE_MAGIC_V2: &[u8; 8] = b"RWSNAP02";
const FILE_MAGIC: &[u8; 8] = b"RWMETA01";
/// File name of the current snapshot inside the data dir.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// A snapshot that cannot be used.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("snapshot was made by state machine {found}, which this node cannot run ({reason})")]
    ModuleMismatch { found: String, reason: String },
    #[error("snapshot I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The contents of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents<'a> {
    /// Hex SHA-256 of the active module.
    pub module_hash: String,
    /// The active module's bytes (empty for the native baseline).
    pub module: &'a [u8],
    /// Every module the state machine has run, oldest first; the last one is the active one.
    pub modules: Vec<ModuleRecord>,
    /// The guest's `snapshot()` bytes.
    pub state: &'a [u8],
    /// The client session table (`Sessions::encode`; empty for none).
    pub sessions: &'a [u8],
    /// The time of the last applied entry that carried one, ms since the Unix epoch (0: none).
    pub clock_ms: u64,
    /// The change feed (`ChangeFeed::encode`; empty for none).
    pub feed: &'a [u8],
}

/// Wraps guest state with the module that produced it and the module history, in one go (the
/// node itself streams the state in between [`begin`] and [`finish`]).
#[cfg(test)]
pub fn seal(contents: &Contents<'_>) -> Vec<u8> {
    let mut out = begin(
        &contents.module_hash,
        contents.module,
        &contents.modules,
        contents.state.len(),
    );
    let state_at = out.len();
    out.extend_from_slice(contents.state);
    finish(
        out,
        state_at,
        contents.sessions,
        contents.clock_ms,
        contents.feed,
    )
}

/// The head of an envelope, up to where the guest state goes: append the state to it, then
/// [`finish`] it with the head's length. `state_hint` is the expected state size (to size the
/// buffer once; 0 if unknown).
pub fn begin(
    module_hash: &str,
    module: &[u8],
    modules: &[ModuleRecord],
    state_hint: usize,
) -> Vec<u8> {
    let history = serde_json::to_vec(modules).unwrap_or_default();
    let mut out = Vec::with_capacity(state_hint + module.len() + history.len() + 72);
    out.extend_from_slice(ENVELOPE_MAGIC);
    let mut hash = [0u8; 32];
    // A module hash is always 64 hex digits (see `GuestModule::hash`).
    let _ = hex::decode_to_slice(module_hash, &mut hash);
    out.extend_from_slice(&hash);
    out.extend_from_slice(&(module.len() as u64).to_le_bytes());
    out.extend_from_slice(module);
    out.extend_from_slice(&(history.len() as u32).to_le_bytes());
    out.extend_from_slice(&history);
    // The state's length, filled in by `finish`.
    out.extend_from_slice(&[0; 8]);
    out
}

#[cfg(test)]
/// Completes an envelope [`begin`] started (`state_at`: the head's length) once the guest
/// state has been appended to it.
pub fn finish(
    mut out: Vec<u8>,
    state_at: usize,
    sessions: &[u8],
    clock_ms: u64,
    feed: &[u8],
) -> Vec<u8> {
    let state_len = (out.len() - state_at) as u64;
    out[state_at - 8..state_at].copy_from_slice(&state_len.to_le_bytes());
    out.extend_from_slice(&tail(sessions, clock_ms, feed));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The envelope after the guest state, up to the checksum.
pub fn tail(sessions: &[u8], clock_ms: u64, feed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sessions.len() + feed.len() + 24);
    out.extend_from_slice(&(sessions.len() as u64).to_le_bytes());
    out.extend_from_slice(sessions);
    out.extend_from_slice(&clock_ms.to_le_bytes());
    out.extend_from_slice(&(feed.len() as u64).to_le_bytes());
    out.extend_from_slice(feed);
    out
}

/// A snapshot file's head: what precedes the envelope.
pub fn file_head(meta: &SnapshotMeta) -> Result<Vec<u8>, SnapshotError> {
    let meta_json = serde_json::to_vec(meta).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    let mut head = Vec::with_capacity(12 + meta_json.len());
    head.extend_from_slice(FILE_MAGIC);
    head.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
    head.extend_from_slice(&meta_json);
    Ok(head)
}

/// Checks an envelope's framing and checksum and returns what it holds.
pub fn open(envelope: &[u8]) -> Result<Contents<'_>, SnapshotError> {
    let corrupt = |why: &str| SnapshotError::Corrupt(why.to_string());
    let magic = envelope.get(..8);
    let with_feed = magic == Some(ENVELOPE_MAGIC);
    let with_clock = with_feed || magic == Some(ENVELOPE_MAGIC_V4);
    let with_sessions = with_clock || magic == Some(ENVELOPE_MAGIC_V3);
    if envelope.len() < 64 || !(with_sessions || magic == Some(ENVELOPE_MAGIC_V2)) {
        return Err(corrupt("missing RWSNAP05 header"));
    }
    let (body, crc) = envelope.split_at(envelope.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| corrupt("no checksum"))?);
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let module_hash = hex::encode(&body[8..40]);
    let mut rest = &body[40..];
    let mut take = |n: usize, what: &str| -> Result<&[u8], SnapshotError> {
        if rest.len() < n {
            return Err(corrupt(&format!("truncated {what}")));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let len = u64::from_le_bytes(take(8, "module length")?.try_into().unwrap_or_default());
    let module = take(usize::try_from(len).unwrap_or(usize::MAX), "module")?;
    let len = u32::from_le_bytes(take(4, "history length")?.try_into().unwrap_or_default());
    let history = take(len as usize, "history")?;
    let modules: Vec<ModuleRecord> = serde_json::from_slice(history)
        .map_err(|e| corrupt(&format!("bad module history: {e}")))?;
    let len = u64::from_le_bytes(take(8, "state length")?.try_into().unwrap_or_default());
    let state = take(usize::try_from(len).unwrap_or(usize::MAX), "state")?;
    let sessions = match with_sessions {
        true => {
            let len =
                u64::from_le_bytes(take(8, "sessions length")?.try_into().unwrap_or_default());
            take(usize::try_from(len).unwrap_or(usize::MAX), "sessions")?
        }
        false => &[],
    };
    let clock_ms = match with_clock {
        true => u64::from_le_bytes(take(8, "clock")?.try_into().unwrap_or_default()),
        false => 0,
    };
    let feed = match with_feed {
        true => {
            let len = u64::from_le_bytes(take(8, "feed length")?.try_into().unwrap_or_default());
            take(usize::try_from(len).unwrap_or(usize::MAX), "change feed")?
        }
        false => &[],
    };
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Contents {
        module_hash,
        module,
        modules,
        state,
        sessions,
        clock_ms,
        feed,
    })
}

/// An envelope taken apart, owning its parts; the guest state stays where it was (a region of
/// the snapshot file is not read).
#[derive(Debug)]
pub struct Unsealed {
    pub module_hash: String,
    pub module: Vec<u8>,
    pub modules: Vec<ModuleRecord>,
    pub state: SnapshotData,
    pub sessions: Vec<u8>,
    pub clock_ms: u64,
    pub feed: Vec<u8>,
}

/// Checks an envelope wherever it is and takes it apart: in memory as [`open`] does, in a file
/// by reading it through once for the checksum and then only its small parts. Blocking.
pub fn unseal(envelope: SnapshotData) -> Result<Unsealed, SnapshotError> {
    let io_err = |e: std::io::Error| SnapshotError::Corrupt(format!("unreadable: {e}"));
    let current = envelope.read_at(0, 8).map_err(io_err)? == ENVELOPE_MAGIC;
    if !current || matches!(envelope, SnapshotData::Bytes(_)) {
        // In memory, or an older layout: take it whole.
        return unseal_bytes(envelope.into_bytes().map_err(io_err)?);
    }
    let corrupt = |why: String| SnapshotError::Corrupt(why);
    let len = envelope.len();
    if len < 64 {
        return Err(corrupt("missing RWSNAP05 header".into()));
    }
    let body = len - 4;
    let mut crc = crc32fast::Hasher::new();
    let mut at = 0;
    while at < body {
        let piece = envelope
            .read_at(at, (body - at).min(4 << 20) as usize)
            .map_err(io_err)?;
        crc.update(&piece);
        at += piece.len() as u64;
    }
    let stored = envelope.read_at(body, 4).map_err(io_err)?;
    if crc.finalize().to_le_bytes()[..] != stored[..] {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut cursor = Cursor {
        data: &envelope,
        at: 8,
        end: body,
    };
    let module_hash = hex::encode(cursor.take(32, "module hash")?);
    let n = cursor.word("module length")?;
    let module = cursor.take(n, "module")?;
    let n = u32::from_le_bytes(
        cursor
            .take(4, "history length")?
            .try_into()
            .unwrap_or_default(),
    );
    let history = cursor.take(u64::from(n), "history")?;
    let modules: Vec<ModuleRecord> = serde_json::from_slice(&history)
        .map_err(|e| corrupt(format!("bad module history: {e}")))?;
    let n = cursor.word("state length")?;
    let state = cursor.skip(n, "state")?;
    let n = cursor.word("sessions length")?;
    let sessions = cursor.take(n, "sessions")?;
    let clock_ms = cursor.word("clock")?;
    let n = cursor.word("feed length")?;
    let feed = cursor.take(n, "change feed")?;
    if cursor.at != body {
        return Err(corrupt("trailing bytes".into()));
    }
    Ok(Unsealed {
        module_hash,
        module,
        modules,
        state,
        sessions,
        clock_ms,
        feed,
    })
}

/// [`unseal`] of an envelope in memory: its buffer becomes the state's.
fn unseal_bytes(bytes: Vec<u8>) -> Result<Unsealed, SnapshotError> {
    let c = open(&bytes)?;
    let start = c.state.as_ptr() as usize - bytes.as_ptr() as usize;
    let (module_hash, module, modules) = (c.module_hash, c.module.to_vec(), c.modules);
    let (sessions, clock_ms, feed) = (c.sessions.to_vec(), c.clock_ms, c.feed.to_vec());
    let end = start + c.state.len();
    let mut state = bytes;
    state.truncate(end);
    state.drain(..start);
    Ok(Unsealed {
        module_hash,
        module,
        modules,
        state: SnapshotData::from(state),
        sessions,
        clock_ms,
        feed,
    })
}

/// Reads an envelope's fields in order, within its body.
struct Cursor<'a> {
    data: &'a SnapshotData,
    at: u64,
    end: u64,
}

impl Cursor<'_> {
    fn skip(&mut self, n: u64, what: &str) -> Result<SnapshotData, SnapshotError> {
        if self.end - self.at < n {
            return Err(SnapshotError::Corrupt(format!("truncated {what}")));
        }
        let region = self.data.region(self.at, n);
        self.at += n;
        Ok(region)
    }

    fn take(&mut self, n: u64, what: &str) -> Result<Vec<u8>, SnapshotError> {
        self.skip(n, what)?
            .into_bytes()
            .map_err(|e| SnapshotError::Corrupt(format!("unreadable {what}: {e}")))
    }

    fn word(&mut self, what: &str) -> Result<u64, SnapshotError> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `envelope` is a whole, intact snapshot envelope (header, checksum, layout).
pub fn verify_envelope(envelope: &[u8]) -> Result<(), SnapshotError> {
    open(envelope).map(|_| ())
}

/// Writes `meta` and `envelope` to `dir/snapshot.bin` atomically: temp file, fsync, rename,
/// fsync of the directory.
pub fn write(dir: &Path, meta: &SnapshotMeta, envelope: &[u8]) -> Result<(), SnapshotError> {
    let head = file_head(meta)?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let dest = dir.join(SNAPSHOT_FILE);
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&head).map_err(io(&tmp))?;
        f.write_all(envelope).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    if crate::failpoints::is_set(crate::failpoints::SNAPSHOT_BEFORE_RENAME) {
        std::process::abort();
    }
    fs::rename(&tmp, &dest).map_err(io(&dest))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// The metadata of `dir/snapshot.bin`, if there is one, and where its envelope lies in it
/// (not read, not checked).
pub fn locate(dir: &Path) -> Result<Option<(SnapshotMeta, SnapshotData)>, SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let corrupt = |why: &str| SnapshotError::Corrupt(format!("{}: {why}", path.display()));
    let size = file.metadata().map_err(io(&path))?.len();
    let mut head = [0u8; 12];
    file.read_exact_at(&mut head, 0)
        .map_err(|_| corrupt("missing RWMETA01 header"))?;
    if &head[..8] != FILE_MAGIC {
        return Err(corrupt("missing RWMETA01 header"));
    }
    let meta_len = u32::from_le_bytes(head[8..12].try_into().map_err(|_| corrupt("short"))?);
    let meta_end = 12 + u64::from(meta_len);
    if meta_end > size {
        return Err(corrupt("truncated metadata"));
    }
    let mut meta = vec![0u8; meta_len as usize];
    file.read_exact_at(&mut meta, 12).map_err(io(&path))?;
    let meta: SnapshotMeta =
        serde_json::from_slice(&meta).map_err(|e| corrupt(&format!("bad metadata: {e}")))?;
    let envelope = SnapshotData::File {
        file: Arc::new(file),
        offset: meta_end,
        len: size - meta_end,
    };
    Ok(Some((meta, envelope)))
}

/// Reads `dir/snapshot.bin`, if there is one: its metadata and envelope (not yet opened).
pub fn read(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let corrupt = |why: &str| SnapshotError::Corrupt(format!("{}: {why}", path.display()));
    if bytes.len() < 12 || &bytes[..8] != FILE_MAGIC {
        return Err(corrupt("missing RWMETA01 header"));
    }
    let meta_len =
        u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| corrupt("short"))?) as usize;
    let meta_end = 12usize
        .checked_add(meta_len)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| corrupt("truncated metadata"))?;
    let meta: SnapshotMeta = serde_json::from_slice(&bytes[12..meta_end])
        .map_err(|e| corrupt(&format!("bad metadata: {e}")))?;
    // In place: a copy of a large snapshot would cost as much memory again.
    let mut envelope = bytes;
    envelope.drain(..meta_end);
    Ok(Some((meta, envelope)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn contents(state: &[u8]) -> Contents<'_> {
        Contents {
            module_hash: HASH.into(),
            module: b"\0asm-module-bytes",
            modules: vec![ModuleRecord {
                hash: HASH.into(),
                size: 17,
                since_index: 3,
            }],
            state,
            sessions: b"sessions",
            clock_ms: 1_764_000_000_000,
            feed: b"feed",
        }
    }

    #[test]
    fn envelope_round_trip_and_checks() {
        let env = seal(&contents(b"state"));
        assert_eq!(open(&env).unwrap(), contents(b"state"));
        let mut flipped = env.clone();
        flipped[50] ^= 1;
        assert!(matches!(open(&flipped), Err(SnapshotError::Corrupt(_))));
        assert!(open(&env[..env.len() - 1]).is_err());
        assert!(open(b"RWSNAP01 an old format").is_err());
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        assert!(locate(dir.path()).unwrap().is_none());
        let meta = SnapshotMeta::default();
        write(dir.path(), &meta, &seal(&contents(b"abc"))).unwrap();
        let (back, env) = read(dir.path()).unwrap().unwrap();
        assert_eq!(back, meta);
        assert_eq!(open(&env).unwrap().state, b"abc");
        let (back, located) = locate(dir.path()).unwrap().unwrap();
        assert_eq!(back, meta);
        assert_eq!(located.clone().into_bytes().unwrap(), env);
        let on_disk = unseal(located).unwrap();
        let in_memory = unseal(SnapshotData::from(env.clone())).unwrap();
        for u in [&on_disk, &in_memory] {
            let c = contents(b"abc");
            assert_eq!(u.state.clone().into_bytes().unwrap(), c.state);
            assert_eq!((u.module_hash.as_str(), &u.module[..]), (HASH, c.module));
            assert_eq!(u.modules, c.modules);
            assert_eq!(
                (&u.sessions[..], u.clock_ms, &u.feed[..]),
                (c.sessions, c.clock_ms, c.feed)
            );
        }
        assert!(
            matches!(on_disk.state, SnapshotData::File { .. }),
            "not read"
        );
        // Any damage to the file is refused where it lies, as in memory.
        for at in [9, 12 + 30, env.len() as u64 / 2, env.len() as u64 + 5] {
            let path = dir.path().join(SNAPSHOT_FILE);
            let mut bytes = fs::read(&path).unwrap();
            let meta_end = bytes.len() - env.len();
            let i = meta_end + (at as usize).min(env.len() - 1);
            bytes[i] ^= 0x40;
            let damaged = dir.path().join("damaged");
            fs::create_dir_all(&damaged).unwrap();
            fs::write(damaged.join(SNAPSHOT_FILE), &bytes).unwrap();
            let (_, data) = locate(&damaged).unwrap().unwrap();
            assert!(unseal(data).is_err(), "damage at {at} was not noticed");
        }
    }
}
