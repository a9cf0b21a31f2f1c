//! Guest components built alongside the host by `build.rs`.
//!
//! The build copies every guest to a stable path under the workspace's `target/wasm/`
//! (`guest_kv.wasm`, `bank.wasm`, ...); guest-kv is also embedded in the host binary as the
//! default state machine.

/// The default guest, guest-kv, embedded so a node runs with no `--fsm` flag.
pub const GUEST_KV: &[u8] = include_bytes!(env!("RAFTWASM_GUEST_KV_WASM"));

/// Name used for the embedded default in messages and status.
pub const GUEST_KV_NAME: &str = "embedded guest-kv";
