//! Apply throughput of guest-kv through wasm (fuel on): the component (on the guest SDK), its
//! twin on raw bindings (examples/guest-kv-raw: same map, same bytes in and out), and the same
//! code natively.
//!
//! Run: `cargo bench --bench fsm` (optionally `-- OPS KEYSPACE ROUNDS`). Prints ns/op for puts
//! and gets. The two components run alternately, ROUNDS times each, each on a fresh instance;
//! a line per round, then the fastest put and get of each (the machine's noise only adds time).

use guest_kv::Kv;
use host::fsm::{EntryContext, GuestLimits, GuestModule};
use std::path::Path;
use std::time::{Duration, Instant};

const DEFAULT_OPS: usize = 1_000_000;
const DEFAULT_KEYSPACE: usize = 100_000;
const DEFAULT_ROUNDS: usize = 3;
const VALUE_LEN: usize = 100;

/// One component's run over the command mix.
struct Run {
    put: Duration,
    get: Duration,
    fuel: u64,
    snapshot: Vec<u8>,
    snapshot_time: Duration,
}

fn run_wasm(module: &GuestModule, puts: &[Vec<u8>], gets: &[Vec<u8>]) -> anyhow::Result<Run> {
    let mut fsm = module.start()?;
    let start = Instant::now();
    let mut fuel = 0u64;
    for cmd in puts {
        let out = fsm.apply(cmd, EntryContext::default())?;
        fuel += out.fuel_used;
        std::hint::black_box(out.result?);
    }
    let put = start.elapsed();
    let start = Instant::now();
    for q in gets {
        std::hint::black_box(fsm.query(q, EntryContext::default())?.result?);
    }
    let get = start.elapsed();
    let start = Instant::now();
    let snapshot = fsm.snapshot()?.to_vec();
    Ok(Run {
        put,
        get,
        fuel,
        snapshot,
        snapshot_time: start.elapsed(),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ops = args.first().copied().unwrap_or(DEFAULT_OPS);
    let keyspace = args.get(1).copied().unwrap_or(DEFAULT_KEYSPACE);
    let rounds = args.get(2).copied().unwrap_or(DEFAULT_ROUNDS).max(1);
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

    let load = |path: &str| GuestModule::from_file(Path::new(path), GuestLimits::default());
    let raw = load(env!("RAFTWASM_GUEST_KV_RAW_WASM"))?;
    let sdk = load(env!("RAFTWASM_GUEST_KV_WASM"))?;
    let per_op = |d: Duration| d.as_nanos() as f64 / ops as f64;
    println!("guest-kv, {ops} ops over {keyspace} keys, {VALUE_LEN}-byte values, fuel on");
    let (mut best_raw, mut best_sdk): (Option<Run>, Option<Run>) = (None, None);
    for round in 1..=rounds {
        for (name, module, best) in [("raw", &raw, &mut best_raw), ("sdk", &sdk, &mut best_sdk)] {
            let run = run_wasm(module, &puts, &gets)?;
            println!(
                "round {round} {name}: put {:6.0} ns/op  get {:6.0} ns/op  fuel/put {:.0}",
                per_op(run.put),
                per_op(run.get),
                run.fuel as f64 / ops as f64
            );
            *best = Some(match best.take() {
                Some(b) => Run {
                    put: b.put.min(run.put),
                    get: b.get.min(run.get),
                    snapshot_time: b.snapshot_time.min(run.snapshot_time),
                    ..run
                },
                None => run,
            });
        }
    }
    let (raw_run, sdk_run) = (best_raw.unwrap(), best_sdk.unwrap());

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
    assert_eq!(
        kv.snapshot(),
        raw_run.snapshot,
        "wasm and native states differ"
    );
    assert_eq!(
        raw_run.snapshot, sdk_run.snapshot,
        "raw and SDK states differ"
    );

    for (op, raw_d, sdk_d, native_d) in [
        ("put", raw_run.put, sdk_run.put, native_put),
        ("get", raw_run.get, sdk_run.get, native_get),
    ] {
        println!(
            "{op}  raw {:6.0} ns/op  sdk {:6.0} ns/op ({:+.0} ns, {:.3}x)  native {:6.0} ns/op (raw/native {:.2})",
            per_op(raw_d),
            per_op(sdk_d),
            per_op(sdk_d) - per_op(raw_d),
            per_op(sdk_d) / per_op(raw_d),
            per_op(native_d),
            per_op(raw_d) / per_op(native_d)
        );
    }
    println!(
        "fuel per put: raw {:.0}, sdk {:.0} units",
        raw_run.fuel as f64 / ops as f64,
        sdk_run.fuel as f64 / ops as f64
    );
    println!(
        "snapshot: {} keys, {} bytes, raw {:.1} ms, sdk {:.1} ms",
        kv.len(),
        raw_run.snapshot.len(),
        raw_run.snapshot_time.as_secs_f64() * 1e3,
        sdk_run.snapshot_time.as_secs_f64() * 1e3
    );
    Ok(())
}
