//! Failpoints for crash tests: named places where a test build can make the node behave as if
//! it crashed. Compiled in only with the `failpoints` cargo feature, which `make test` turns on;
//! without it (the release binary `make build` makes) [`is_set`] is a constant `false` and no
//! environment variable is ever read.
//!
//! A test names the failpoints to arm, comma-separated, in [`ENV`] when it starts a node.

/// The bootstrapping node does not log its seed module entry, as if it had crashed right after
/// initializing the cluster.
pub const SKIP_SEED: &str = "skip_seed";
/// The process aborts after writing and syncing a temporary snapshot file, before renaming it
/// into place.
pub const SNAPSHOT_BEFORE_RENAME: &str = "snapshot_before_rename";

/// Armed as `wal_sync_fails=N`: the log's `fdatasync` reports an error once N have succeeded,
/// as a failing disk would.
pub const WAL_SYNC_FAILS: &str = "wal_sync_fails";

/// Armed as `clock_ahead_ms=N`: this node, when it leads, stamps the entries it proposes N ms
/// ahead of its clock, as a node whose clock runs fast.
pub const CLOCK_AHEAD_MS: &str = "clock_ahead_ms";

/// The environment variable a failpoints build reads the armed failpoints from.
pub const ENV: &str = "RAFTWASM_FAILPOINTS";

/// True when failpoint `name` is armed (never, without the `failpoints` feature).
#[cfg(feature = "failpoints")]
pub fn is_set(name: &str) -> bool {
    std::env::var(ENV).is_ok_and(|armed| armed.split(',').any(|n| n.trim() == name))
}

/// True when failpoint `name` is armed (never, without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn is_set(_name: &str) -> bool {
    false
}

/// For a counting failpoint armed as `name=N`: false for its first N calls, true for every one
/// after (never, without the `failpoints` feature).
#[cfg(feature = "failpoints")]
pub fn should_fail(name: &str) -> bool {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static CALLS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let Ok(armed) = std::env::var(ENV) else {
        return false;
    };
    let Some(limit) = armed.split(',').find_map(|item| {
        let (n, v) = item.trim().split_once('=')?;
        (n == name).then(|| v.parse::<u64>().ok())?
    }) else {
        return false;
    };
    let mut calls = CALLS.lock().unwrap_or_else(|p| p.into_inner());
    let count = calls.entry(name.to_string()).or_default();
    *count += 1;
    *count > limit
}

/// For a counting failpoint armed as `name=N`: false for its first N calls, true for every one
/// after (never, without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn should_fail(_name: &str) -> bool {
    false
}

/// Armed as `wal_sync_hangs_when=PATH`: once the file PATH exists, the log's `fdatasync` never
/// returns, as a disk that stopped answering; what the log was given after that stays queued in
/// memory and is lost with the process.
pub const WAL_SYNC_HANGS_WHEN: &str = "wal_sync_hangs_when";

/// For a failpoint armed as `name=VALUE`: its value (never, without the `failpoints` feature).
#[cfg(feature = "failpoints")]
pub fn value(name: &str) -> Option<String> {
    let armed = std::env::var(ENV).ok()?;
    armed.split(',').find_map(|item| {
        let (n, v) = item.trim().split_once('=')?;
        (n == name).then(|| v.to_string())
    })
}

/// For a failpoint armed as `name=VALUE`: its value (never, without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn value(_name: &str) -> Option<String> {
    None
}
