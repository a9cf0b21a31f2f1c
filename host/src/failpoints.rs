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
