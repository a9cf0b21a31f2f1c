//! Builds the wasm guests (guest-kv, the examples and the test fixtures) with a nested cargo, in
//! a target directory of their own so it never waits on the lock of the outer build, and copies
//! each one to `<workspace>/target/wasm/<name>.wasm`. Their paths reach the host as
//! `RAFTWASM_<NAME>_WASM` compile-time variables.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guests linked as components without WASI (see `.cargo/config.toml`): they import nothing,
/// or only the `raftwasm:fsm@0.2.0` context.
const PURE_GUESTS: &[&str] = &[
    "bank",
    "hostile",
    "bigmem",
    "bad-restore",
    "context-probe",
    "nondeterministic",
    "counter",
    "counter-v2",
    "lease",
];
/// Guests that are libraries too (an rlib the host links natively): each is built alone with
/// `cargo rustc --crate-type cdylib`, since cargo silently drops LTO for a cdylib built beside
/// an rlib (cargo#9672); guest-kv took 7% more fuel per command that way.
const LIBRARY_GUESTS: &[&str] = &["guest-kv"];
/// Guests that use guest-kv as a library without its component export: built in a cargo run of
/// their own, since cargo unifies features across the packages of one run.
const LIBRARY_USING_GUESTS: &[&str] = &["guest-kv-v2", "guest-kv-raw"];
/// Guests built against WASI (`wasm32-wasip2`): they import what Rust's std needs.
const WASI_GUESTS: &[&str] = &["wasi-user"];

fn main() -> Result<()> {
    let host_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = host_dir
        .parent()
        .context("host crate has no parent")?
        .to_path_buf();
    for watched in [
        "wit",
        "guest-sdk",
        "guest-kv",
        "examples",
        "host/tests/guests",
        ".cargo/config.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("guests");
    let out_dir = root.join("target").join("wasm");
    std::fs::create_dir_all(&out_dir)?;

    compile_protos()?;
    let (pure, wasi) = ("wasm32-unknown-unknown", "wasm32-wasip2");
    build(&root, &target_dir, pure, LIBRARY_USING_GUESTS)?;
    for guest in LIBRARY_GUESTS {
        let mut cargo = cargo(&root, &target_dir, pure, "rustc", &[guest]);
        run(cargo.args(["--lib", "--crate-type", "cdylib"]), pure)?;
    }
    build(&root, &target_dir, pure, PURE_GUESTS)?;
    build(&root, &target_dir, wasi, WASI_GUESTS)?;

    for (target, guests) in [
        (pure, LIBRARY_USING_GUESTS),
        (pure, LIBRARY_GUESTS),
        (pure, PURE_GUESTS),
        (wasi, WASI_GUESTS),
    ] {
        for guest in guests {
            let file = format!("{}.wasm", guest.replace('-', "_"));
            let built = target_dir.join(target).join("release").join(&file);
            let stable = out_dir.join(&file);
            std::fs::copy(&built, &stable)
                .with_context(|| format!("copying {} to {}", built.display(), stable.display()))?;
            let var = format!("RAFTWASM_{}_WASM", guest.replace('-', "_").to_uppercase());
            println!("cargo:rustc-env={var}={}", stable.display());
        }
    }
    Ok(())
}

/// gRPC stubs from `proto/` (ours, and the slice of etcd's API that kvbench drives), with the protoc shipped by `protoc-bin-vendored` so a
/// fresh machine needs no system package.
fn compile_protos() -> Result<()> {
    println!("cargo:rerun-if-changed=proto");
    let protoc = protoc_bin_vendored::protoc_bin_path().context("locating the vendored protoc")?;
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .compile_protos(&["proto/raftwasm.proto", "proto/etcd_kv.proto"], &["proto"])
        .context("compiling the protos")?;
    Ok(())
}

fn build(root: &Path, target_dir: &Path, target: &str, guests: &[&str]) -> Result<()> {
    run(
        &mut cargo(root, target_dir, target, "build", guests),
        target,
    )
}

/// A nested cargo `subcommand` (build, rustc) for `guests` in release, for `target`.
fn cargo(
    root: &Path,
    target_dir: &Path,
    target: &str,
    subcommand: &str,
    guests: &[&str],
) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([subcommand, "--release", "--target", target, "--target-dir"])
        .arg(target_dir);
    for guest in guests {
        cmd.args(["-p", guest]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not for guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    // Guests ship without debug info (smaller, faster to compile at load), and with whole-program
    // optimization: every nanosecond inside `apply` is paid on every node for every entry.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    cmd
}

fn run(cmd: &mut Command, target: &str) -> Result<()> {
    let status = cmd
        .status()
        .context("running cargo to build the wasm guests")?;
    if !status.success() {
        bail!(
            "building the wasm guests for {target} failed ({status}); is the target installed? \
             Run: rustup target add wasm32-unknown-unknown wasm32-wasip2"
        );
    }
    Ok(())
}
