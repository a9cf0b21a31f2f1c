//! Apply throughput of guest-kv through wasm (fuel on) against the same code natively.
//!
//! Run: `cargo bench --bench fsm` (optionally `-- OPS KEYSPACE`). Prints ns/op for puts and gets.

use guest_kv::Kv;
use host::fsm::{EntryContext, GuestLimits, GuestModule};
use std::path::Path;
use std::time::Instant;

const DEFAULT_OPS: usize = 1_000_000;
const DEFAULT_KEYSPACE: usize = 100_000;
const VALUE_LEN: usize = 100;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ops = args.first().copied().unwrap_or(DEFAULT_OPS);
    let keyspace = args.get(1).copied().unwrap_or(DEFAULT_KEYSPACE);
    let value = "v".repeat(VALUE_LEN);
    // Keys spread over the keyspace by a fixed multiplicative step, so the map sees a realistic mix
    // of inserts and overwrites.
    let key = |i: usize| format!("key{:08}", (i * 7919) % keyspace);
    let puts: Vec<Vec<u8>> = (0..ops)
        .map(|i| {
            let (key, value) = (key(i), value.clone());
            guest_kv::Command::Put { key, value }.encode()
        })
        .collect();
    let gets: Vec<Vec<u8>> = (0..ops)
        .map(|i| guest_kv::Query::Get { key: key(i) }.encode())
        .collect();

    let module = GuestModule::from_file(
        Path::new(env!("RAFTWASM_GUEST_KV_WASM")),
        GuestLimits::default(),
    )?;
    let mut fsm = module.start()?;
    let start = Instant::now();
    let mut fuel = 0u64;
    for cmd in &puts {
        let out = fsm.apply(cmd, EntryContext::default())?;
        fuel += out.fuel_used;
        out.result?;
    }
    let wasm_put = start.elapsed();
    let start = Instant::now();
    for q in &gets {
        fsm.query(q, EntryContext::default())?.result?;
    }
    let wasm_get = start.elapsed();
    let start = Instant::now();
    let snap = fsm.snapshot()?;
    let wasm_snapshot = start.elapsed();

    let mut kv = Kv::default();
    let start = Instant::now();
    for cmd in &puts {
        std::hint::black_box(kv.apply_bytes(cmd).map_err(|e| anyhow::anyhow!("{e:?}"))?);
    }
    let native_put = start.elapsed();
    let start = Instant::now();
    for q in &gets {
        std::hint::black_box(kv.query_bytes(q).map_err(|e| anyhow::anyhow!("{e:?}"))?);
    }
    let native_get = start.elapsed();
    assert_eq!(kv.snapshot(), *snap, "wasm and native states differ");

    let per_op = |d: std::time::Duration| d.as_nanos() as f64 / ops as f64;
    println!("guest-kv, {ops} ops over {keyspace} keys, {VALUE_LEN}-byte values, fuel on");
    println!(
        "put  wasm {:8.0} ns/op   native {:8.0} ns/op   ratio {:.2}",
        per_op(wasm_put),
        per_op(native_put),
        per_op(wasm_put) / per_op(native_put)
    );
    println!(
        "get  wasm {:8.0} ns/op   native {:8.0} ns/op   ratio {:.2}",
        per_op(wasm_get),
        per_op(native_get),
        per_op(wasm_get) / per_op(native_get)
    );
    println!("fuel per put: {:.0} units", fuel as f64 / ops as f64);
    println!(
        "snapshot: {} keys, {} bytes, {:.1} ms",
        kv.len(),
        snap.len(),
        wasm_snapshot.as_secs_f64() * 1e3
    );
    Ok(())
}
