//! `host guest new NAME`: a guest crate on the SDK that builds with `cargo build --release` as
//! it is (a wasm component in `target/wasm32-unknown-unknown/release/NAME.wasm`), to edit from
//! there: a counter whose commands log and remember the entry's time.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the SDK was when this host was built (the crate is not published).
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk")
}

/// Writes crate `name` under `parent`, depending on the SDK at `sdk`; its directory.
pub fn new_guest(name: &str, parent: &Path, sdk: &Path) -> Result<PathBuf> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("{name:?} is not a crate name: lowercase letters, digits, - and _, first a letter");
    }
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK is not at {}: pass --sdk", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} has no Cargo.toml: pass --sdk", sdk.display());
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let sdk_path = sdk.display().to_string().replace('\\', "/");
    let files = [
        (
            "Cargo.toml",
            CARGO_TOML
                .replace("{name}", name)
                .replace("{sdk}", &sdk_path),
        ),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", "/target\n".to_string()),
        (
            "src/lib.rs",
            LIB_RS.replace("{wasm}", &name.replace('-', "_")),
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
raftwasm-guest = { path = "{sdk}" }
serde = { version = "1", features = ["derive"] }

[profile.release]
panic = "abort"

# A crate of its own, even inside another workspace's directory.
[workspace]
"#;

const CARGO_CONFIG: &str = r#"# A raftwasm guest is a wasm component: built for wasm32-unknown-unknown and linked by
# wasm-component-ld (it comes with `rustup target add wasm32-wasip2`), without WASI.
[build]
target = "wasm32-unknown-unknown"

[target.wasm32-unknown-unknown]
linker = "wasm-component-ld"
rustflags = ["-Clink-arg=--wasi-adapter=none"]
"#;

const LIB_RS: &str = r#"//! A raftwasm guest on the SDK: a counter that remembers when it last changed.
//!
//! Build: `cargo build --release` (needs `rustup target add wasm32-unknown-unknown wasm32-wasip2`).
//! Check: `host guest check target/wasm32-unknown-unknown/release/{wasm}.wasm --commands script`
//! with lines like `{"apply":{"add":5}}` and `{"query":null}`.
//! Run: `host --fsm target/wasm32-unknown-unknown/release/{wasm}.wasm --id node1 --bs`, then
//! `curl -d '{"add":5}' localhost:9000/v1/apply` and `curl -d null localhost:9000/v1/query`;
//! or `host dev --fsm target/wasm32-unknown-unknown/release/{wasm}.wasm`, which upgrades the
//! running node each time the file changes.

use raftwasm_guest::{Context, Error, StateMachine};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    total: i64,
    /// The log time of the last change, ms since the Unix epoch.
    changed_ms: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Command {
    Add(i64),
}

#[derive(Serialize)]
struct Total {
    total: i64,
    changed_ms: u64,
}

impl StateMachine for Counter {
    type Command = Command;
    type Query = ();
    type Response = Total;

    fn apply(&mut self, ctx: &Context, Command::Add(n): Command) -> Result<Total, Error> {
        self.total = self.total.checked_add(n).ok_or(Error::rejected("overflow"))?;
        self.changed_ms = ctx.unix_ms();
        ctx.info(&format!("added {n} at index {}", ctx.index()));
        self.query(ctx, ())
    }

    fn query(&self, _: &Context, (): ()) -> Result<Total, Error> {
        Ok(Total {
            total: self.total,
            changed_ms: self.changed_ms,
        })
    }
}

raftwasm_guest::export!(Counter);
"#;
