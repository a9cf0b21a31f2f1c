//! The backup file: one snapshot of a cluster's whole replicated state (guest state, client
//! sessions, the active module and the module history, at a log index and term) that a person
//! can keep, check and restore a new cluster from (`host restore`).
//!
//! Layout: the line `RAFTWASM-BACKUP 1`, one line of JSON ([`BackupHeader`]: where the state
//! stands, the snapshot's openraft metadata, and the length and SHA-256 of what follows), then
//! the snapshot envelope as nodes store and send it (see [`super::snapshot`], with its own
//! CRC-32). Reading checks everything before anything is used: the magic, the header, the
//! length (a truncated file), the SHA-256 (a damaged one) and the envelope's framing.

use super::snapshot::{self, SnapshotError};
use crate::types::SnapshotMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The first line of every backup file.
pub const BACKUP_MAGIC: &[u8] = b"RAFTWASM-BACKUP 1\n";

/// What a backup holds, and how to check it. The JSON line after the magic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The last log index the state includes.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// Hex SHA-256 of the module active at `index`.
    pub module_hash: String,
    /// The node that made the backup (the leader), and its cluster's members then.
    pub made_by: String,
    pub members: Vec<String>,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The snapshot's openraft metadata as the cluster had it.
    pub meta: SnapshotMeta,
    /// Length and hex SHA-256 of the envelope that follows the header line.
    pub envelope_bytes: u64,
    pub envelope_sha256: String,
}

/// A file that cannot be restored from.
#[derive(Debug, Error)]
pub enum BackupError {
    #[error("not a raftwasm backup (it does not start with RAFTWASM-BACKUP 1)")]
    NotABackup,
    #[error("damaged backup header: {0}")]
    BadHeader(String),
    #[error(
        "truncated backup: the header announces {expected} bytes of state, the file holds {found}"
    )]
    Truncated { expected: u64, found: u64 },
    #[error("backup has {0} bytes after its end")]
    Trailing(u64),
    #[error("damaged backup: the state's SHA-256 is {found}, the header says {expected}")]
    Checksum { expected: String, found: String },
    #[error("damaged backup: {0}")]
    Envelope(#[from] SnapshotError),
}

impl BackupHeader {
    /// The header for `envelope`, a snapshot with metadata `meta`, made by node `made_by`.
    pub fn new(meta: SnapshotMeta, envelope: &[u8], made_by: &str) -> Result<Self, BackupError> {
        let contents = snapshot::open(envelope)?;
        let last = meta.last_log_id.as_ref();
        let members = meta
            .last_membership
            .nodes()
            .map(|(_, m)| m.name.clone())
            .collect();
        let created_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(BackupHeader {
            index: last.map_or(0, |l| l.index),
            term: last.map_or(0, |l| l.leader_id.term),
            module_hash: contents.module_hash,
            made_by: made_by.to_string(),
            members,
            created_unix_ms,
            meta,
            envelope_bytes: envelope.len() as u64,
            envelope_sha256: hex::encode(Sha256::digest(envelope)),
        })
    }

    /// The magic line and the header line: what a backup file starts with.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BACKUP_MAGIC.to_vec();
        // A struct of strings and numbers always serializes.
        out.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        out.push(b'\n');
        out
    }
}

/// Checks a whole backup file and returns its header and snapshot envelope.
pub fn read(file: &[u8]) -> Result<(BackupHeader, &[u8]), BackupError> {
    let rest = file
        .strip_prefix(BACKUP_MAGIC)
        .ok_or(BackupError::NotABackup)?;
    let end = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| BackupError::BadHeader("the header line has no end".into()))?;
    let header: BackupHeader =
        serde_json::from_slice(&rest[..end]).map_err(|e| BackupError::BadHeader(e.to_string()))?;
    let envelope = &rest[end + 1..];
    let found = envelope.len() as u64;
    if found < header.envelope_bytes {
        return Err(BackupError::Truncated {
            expected: header.envelope_bytes,
            found,
        });
    }
    if found > header.envelope_bytes {
        return Err(BackupError::Trailing(found - header.envelope_bytes));
    }
    let sha = hex::encode(Sha256::digest(envelope));
    if sha != header.envelope_sha256 {
        return Err(BackupError::Checksum {
            expected: header.envelope_sha256,
            found: sha,
        });
    }
    snapshot::verify_envelope(envelope)?;
    Ok((header, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ModuleRecord;

    fn envelope() -> Vec<u8> {
        snapshot::seal(&snapshot::Contents {
            module_hash: "ab".repeat(32),
            module: b"\0asm",
            modules: vec![ModuleRecord {
                hash: "ab".repeat(32),
                size: 4,
                since_index: 1,
            }],
            state: b"the guest state",
            sessions: b"",
            clock_ms: 0,
            feed: &[],
        })
    }

    fn file() -> Vec<u8> {
        let env = envelope();
        let header = BackupHeader::new(SnapshotMeta::default(), &env, "node1").unwrap();
        let mut file = header.encode();
        file.extend_from_slice(&env);
        file
    }

    #[test]
    fn a_whole_file_reads_back_and_any_damage_is_refused() {
        let file = file();
        let (header, env) = read(&file).unwrap();
        assert_eq!(env, envelope());
        assert_eq!(header.module_hash, "ab".repeat(32));
        assert_eq!(header.made_by, "node1");

        let short = &file[..file.len() - 3];
        assert!(matches!(read(short), Err(BackupError::Truncated { .. })));
        let mut long = file.clone();
        long.push(0);
        assert!(matches!(read(&long), Err(BackupError::Trailing(1))));
        let mut flipped = file.clone();
        let at = file.len() - 10;
        flipped[at] ^= 0x20;
        assert!(matches!(read(&flipped), Err(BackupError::Checksum { .. })));
        assert!(matches!(read(b"PK\x03\x04"), Err(BackupError::NotABackup)));
        let mut header = file.clone();
        header[BACKUP_MAGIC.len() + 2] = b'#';
        assert!(matches!(read(&header), Err(BackupError::BadHeader(_))));
    }
}
