//! Seeding a new one-node cluster from a backup file (`host restore`).
//!
//! The file is checked whole before anything is written. Then a node is started on the empty
//! data dir, without serving, and installs the backup's snapshot as a follower installs one
//! from its leader: the state, sessions and module at the backup's index and term, with a
//! configuration holding only this node. Started afterwards on that data dir (without `--bs`),
//! the node elects itself in a later term and serves the state exactly as it was at that index;
//! more nodes join as usual (AddVoter).

use crate::config::NodeConfig;
use crate::node::{self, NodeError};
use crate::store::backup::{self, BackupError, BackupHeader};
use crate::types::{node_id, Member, Membership, Snapshot, SnapshotMeta, StoredMembership, Vote};
use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Longest the installed snapshot may take to be in place.
const INSTALL_WAIT: Duration = Duration::from_secs(600);

/// Why a restore did not happen (nothing was written unless it says so).
#[derive(Debug, Error)]
pub enum RestoreError {
    // The cause is in the message (one line for the operator), not chained after it.
    #[error("cannot read {path}: {why}")]
    Read { path: PathBuf, why: std::io::Error },
    #[error("{path} cannot be restored from: {why}")]
    Backup { path: PathBuf, why: BackupError },
    #[error("{0} already holds data: restore into a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("the node's address {0:?} has port 0: give the address it will be started with")]
    NoPort(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("installing the backup in {dir} failed: {message}")]
    Install { dir: PathBuf, message: String },
}

/// Restores the backup at `from` into `config`'s data dir, as a one-node cluster of
/// `config.name` at its advertised address. Returns the backup's header.
pub async fn restore(config: &NodeConfig, from: &Path) -> Result<BackupHeader, RestoreError> {
    let bytes = std::fs::read(from).map_err(|why| RestoreError::Read {
        path: from.to_path_buf(),
        why,
    })?;
    let (header, envelope) = backup::read(&bytes).map_err(|why| RestoreError::Backup {
        path: from.to_path_buf(),
        why,
    })?;
    let dir = &config.storage.data_dir;
    let holds_data = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if holds_data {
        return Err(RestoreError::NotEmpty(dir.clone()));
    }
    let network = &config.network;
    let addr = network
        .advertise_address
        .clone()
        .unwrap_or_else(|| network.address.clone());
    if addr.ends_with(":0") {
        return Err(RestoreError::NoPort(addr));
    }
    let install = |message: String| RestoreError::Install {
        dir: dir.clone(),
        message,
    };

    let started = node::start(config, addr.clone()).await?;
    let raft = &started.raft;
    let id = node_id(&config.name);
    let me = Member {
        name: config.name.clone(),
        addr,
    };
    let meta = SnapshotMeta {
        last_log_id: header.meta.last_log_id,
        last_membership: StoredMembership::new(
            *header.meta.last_membership.log_id(),
            Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, me)]))
                .map_err(|e| install(e.to_string()))?,
        ),
    };
    let leader = header
        .meta
        .last_log_id
        .as_ref()
        .map_or(id, |l| l.leader_id.node_id);
    let vote = Vote::new_committed(header.term, leader);
    let snapshot = Snapshot {
        meta,
        snapshot: envelope.to_vec().into(),
    };
    drop(bytes);
    raft.install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| install(e.to_string()))?;
    let index = header.index;
    let mut rx = raft.metrics();
    let in_place = rx.wait_until(|m: &crate::types::RaftMetrics| {
        m.snapshot.map(|l| l.index) == Some(index) && m.last_applied.map(|l| l.index) == Some(index)
    });
    let waited = tokio::time::timeout(INSTALL_WAIT, in_place).await;
    let _ = raft.shutdown().await;
    match waited {
        Ok(Ok(_)) => Ok(header),
        Ok(Err(e)) => Err(install(e.to_string())),
        Err(_) => Err(install(format!("not in place after {INSTALL_WAIT:?}"))),
    }
}
