//! Guest runtime tests: real components built by host/build.rs, run through `host::fsm`.
//!
//! Areas: guest-kv behaviour and snapshots, determinism across instances, hostile guests
//! (each with its documented error, state unchanged, next command fine), and load errors.

use guest_kv::schema::{self, Command, GetResponse, Query, ScanResponse};
use host::fsm::{
    CallError, EntryContext, GuestError, GuestFsm, GuestLimits, GuestModule, LoadError,
};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

const GUEST_KV: &str = env!("RAFTWASM_GUEST_KV_WASM");
const BANK: &str = env!("RAFTWASM_BANK_WASM");
const HOSTILE: &str = env!("RAFTWASM_HOSTILE_WASM");
const BIGMEM: &str = env!("RAFTWASM_BIGMEM_WASM");
const WASI_USER: &str = env!("RAFTWASM_WASI_USER_WASM");

/// Small limits so hostile guests fail fast.
fn test_limits() -> GuestLimits {
    GuestLimits {
        fuel_per_apply: 10_000_000,
        fuel_per_snapshot: 1_000_000_000,
        memory_mib: 64,
    }
}

fn load(path: &str) -> GuestModule {
    GuestModule::from_file(Path::new(path), test_limits()).expect("guest loads")
}

fn apply(fsm: &mut GuestFsm, cmd: &Command) -> Result<Vec<u8>, CallError> {
    fsm.apply(&cmd.encode(), EntryContext::default())
        .expect("no host fault")
        .result
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn query<T: serde::de::DeserializeOwned>(fsm: &mut GuestFsm, q: &Query) -> T {
    let out = fsm
        .query(&q.encode(), EntryContext::default())
        .expect("no host fault");
    schema::decode(&out.result.expect("query succeeds")).expect("guest-kv answers its schema")
}

fn get(fsm: &mut GuestFsm, key: &str) -> Option<String> {
    let got: GetResponse = query(fsm, &Query::Get { key: key.into() });
    got.value
}

fn scan_all(fsm: &mut GuestFsm) -> ScanResponse {
    let scan = Query::Scan {
        prefix: None,
        start: None,
        end: None,
        limit: Some(10_000),
    };
    query(fsm, &scan)
}

/// A deterministic command sequence touching every guest-kv operation and awkward keys.
fn workload(n: usize) -> Vec<Command> {
    let awkward = ["a_b", "with/slash", "with space", "ünïcødé ✓", "x_y_z/1 2"];
    (0..n)
        .map(|i| {
            let key = format!("{}-{}", awkward[i % awkward.len()], i % 97);
            match i % 7 {
                0..=3 => put(&key, &format!("v{i}_{}", i * 31 % 1000)),
                4 => Command::Delete { key },
                5 => Command::Cas {
                    key,
                    expected: None,
                    value: Some(String::new()),
                },
                _ => put(&key, ""),
            }
        })
        .collect()
}

#[test]
fn guest_kv_round_trips_awkward_keys_and_values() {
    let mut fsm = load(GUEST_KV).start().unwrap();
    let pairs = [
        ("key_with_underscores", "value_1"),
        ("a/b/c", "d/e"),
        ("spaces in key", "spaces in value"),
        ("ключ ✓ 鍵", "значение 🎉"),
        ("empty-value", ""),
    ];
    for (k, v) in pairs {
        apply(&mut fsm, &put(k, v)).unwrap();
    }
    for (k, v) in pairs {
        assert_eq!(get(&mut fsm, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(get(&mut fsm, "missing"), None);
}

#[test]
fn snapshot_restore_round_trip_is_byte_identical() {
    let module = load(GUEST_KV);
    let mut a = module.start().unwrap();
    for cmd in workload(2_000) {
        apply(&mut a, &cmd).unwrap();
    }
    let snap = a.snapshot().unwrap();
    let mut b = module.start().unwrap();
    b.restore(snap.clone()).unwrap().result.unwrap();
    assert_eq!(*b.snapshot().unwrap(), *snap);
    let all = scan_all(&mut a);
    assert!(all.items.len() > 100);
    assert_eq!(all, scan_all(&mut b));
    for key in ["a_b-0", "with space-3", "ünïcødé ✓-3"] {
        assert_eq!(get(&mut a, key), get(&mut b, key));
    }
}

#[test]
fn independent_instances_agree_on_state_and_fuel() {
    let module_a = load(GUEST_KV);
    // Load the module a second time, as another node would.
    let module_b = load(GUEST_KV);
    let (mut a, mut b) = (module_a.start().unwrap(), module_b.start().unwrap());
    let mut fuel = (0u64, 0u64);
    for cmd in workload(3_000) {
        let bytes = cmd.encode();
        let (oa, ob) = (
            a.apply(&bytes, EntryContext::default()).unwrap(),
            b.apply(&bytes, EntryContext::default()).unwrap(),
        );
        assert_eq!(oa, ob, "{cmd:?}");
        assert!(oa.fuel_used > 0);
        fuel.0 += oa.fuel_used;
        fuel.1 += ob.fuel_used;
    }
    assert_eq!(fuel.0, fuel.1);
    assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
}

#[test]
fn bad_commands_to_guest_kv_are_error_values() {
    let mut fsm = load(GUEST_KV).start().unwrap();
    apply(&mut fsm, &put("k", "v")).unwrap();
    let before = fsm.snapshot().unwrap();
    for bad in [
        "not json at all".to_string(),
        json!({"op": "explode", "key": "k"}).to_string(),
        json!({"op": "put", "key": "k"}).to_string(),
        json!({"key": "k", "value": "v"}).to_string(),
        String::from_utf8(put("", "v").encode()).unwrap(),
        String::new(),
    ] {
        let out = fsm.apply(bad.as_bytes(), EntryContext::default()).unwrap();
        match out.result {
            Err(CallError::Guest {
                error: GuestError::InvalidInput(msg),
            }) => assert!(!msg.is_empty()),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
    let out = fsm
        .query(b"{\"op\":\"get\"}", EntryContext::default())
        .unwrap();
    assert!(
        matches!(out.result, Err(CallError::Guest { error: GuestError::InvalidInput(m) }) if m.contains("missing field"))
    );
    assert_eq!(fsm.snapshot().unwrap(), before);
    assert_eq!(get(&mut fsm, "k").as_deref(), Some("v"));
}

#[test]
fn bank_example_is_swappable_and_keeps_its_invariant() {
    let mut fsm = load(BANK).start().unwrap();
    let mut apply = |cmd: &str| {
        fsm.apply(cmd.as_bytes(), EntryContext::default())
            .unwrap()
            .result
    };
    apply("open alice 100").unwrap();
    apply("open bob 50").unwrap();
    apply("transfer alice bob 30").unwrap();
    assert!(matches!(
        apply("transfer bob alice 500"),
        Err(CallError::Guest {
            error: GuestError::Rejected(_)
        })
    ));
    assert_eq!(
        fsm.query(b"balance bob", EntryContext::default())
            .unwrap()
            .result
            .unwrap(),
        b"80"
    );
    assert_eq!(
        fsm.query(b"audit", EntryContext::default())
            .unwrap()
            .result
            .unwrap(),
        b"ok 150 2"
    );
}

/// Applies `cmd` to the hostile guest and checks it fails as `expected` says, leaves the state
/// as it was, and that the next command still works.
fn assert_contained(fsm: &mut GuestFsm, cmd: &str, expected: impl Fn(&CallError) -> bool) {
    let before = fsm.snapshot().unwrap();
    let out = fsm
        .apply(cmd.as_bytes(), EntryContext::default())
        .expect("the host survives and rebuilds");
    let err = out.result.expect_err(cmd);
    assert!(expected(&err), "{cmd}: unexpected error {err:?}");
    assert_eq!(fsm.snapshot().unwrap(), before, "{cmd} changed state");
    let next = format!("set after-{} ok", cmd.replace(' ', "-"));
    fsm.apply(next.as_bytes(), EntryContext::default())
        .unwrap()
        .result
        .expect("next command works");
}

#[test]
fn hostile_guests_are_contained() {
    let mut fsm = load(HOSTILE).start().unwrap();
    fsm.apply(b"set base 1", EntryContext::default())
        .unwrap()
        .result
        .unwrap();
    assert_contained(&mut fsm, "loop", |e| {
        matches!(e, CallError::OutOfFuel { budget: 10_000_000 })
    });
    assert_contained(&mut fsm, "grow", |e| {
        matches!(e, CallError::MemoryLimit { limit_mib: 64 })
    });
    assert_contained(&mut fsm, "recurse", |e| matches!(e, CallError::Trap { .. }));
    assert_contained(
        &mut fsm,
        "unreachable",
        |e| matches!(e, CallError::Trap { message } if message.contains("unreachable")),
    );
    assert_contained(&mut fsm, "set-then-loop k lost", |e| {
        matches!(e, CallError::OutOfFuel { .. })
    });
    assert_contained(&mut fsm, "set-then-trap k lost", |e| {
        matches!(e, CallError::Trap { .. })
    });
    assert_eq!(
        fsm.query(b"get k", EntryContext::default())
            .unwrap()
            .result
            .unwrap(),
        b""
    );
    assert_eq!(
        fsm.query(b"get base", EntryContext::default())
            .unwrap()
            .result
            .unwrap(),
        b"1"
    );
    // A runaway query is contained too, and leaves the state alone.
    let out = fsm.query(b"loop now", EntryContext::default()).unwrap();
    assert!(matches!(out.result, Err(CallError::OutOfFuel { .. })));
    assert_eq!(
        fsm.query(b"get base", EntryContext::default())
            .unwrap()
            .result
            .unwrap(),
        b"1"
    );
}

#[test]
fn hostile_failures_are_identical_across_instances() {
    let (mut a, mut b) = (
        load(HOSTILE).start().unwrap(),
        load(HOSTILE).start().unwrap(),
    );
    for cmd in [
        "set a 1",
        "loop",
        "grow",
        "recurse",
        "unreachable",
        "set-then-trap x y",
        "set b 2",
        "nonsense",
    ] {
        let (oa, ob) = (
            a.apply(cmd.as_bytes(), EntryContext::default()).unwrap(),
            b.apply(cmd.as_bytes(), EntryContext::default()).unwrap(),
        );
        assert_eq!(oa, ob, "{cmd}");
    }
    assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
}

#[test]
fn rollback_after_a_checkpoint_replays_the_journal() {
    let mut fsm = load(HOSTILE).start().unwrap();
    fsm.apply(b"set a 1", EntryContext::default())
        .unwrap()
        .result
        .unwrap();
    // The snapshot becomes the checkpoint; the next two commands live only in the journal.
    fsm.snapshot().unwrap();
    fsm.apply(b"set b 2", EntryContext::default())
        .unwrap()
        .result
        .unwrap();
    fsm.apply(b"set c 3", EntryContext::default())
        .unwrap()
        .result
        .unwrap();
    let out = fsm
        .apply(b"set-then-trap a lost", EntryContext::default())
        .unwrap();
    assert!(out.result.is_err());
    assert_eq!(*fsm.snapshot().unwrap(), b"a 1\nb 2\nc 3\n");
}

#[test]
fn the_journal_checkpoints_itself_and_rollback_still_sees_every_command() {
    // 6 MiB of commands: past the journal's bound (4 MiB for a small state), so at least one
    // checkpoint is taken on the way without being asked for; a rollback then rebuilds from it.
    let mut fsm = load(HOSTILE).start().unwrap();
    let value = "v".repeat(4096);
    for i in 0..1536 {
        let command = format!("set k{i} {value}");
        fsm.apply(command.as_bytes(), EntryContext::default())
            .unwrap()
            .result
            .unwrap();
    }
    let out = fsm
        .apply(b"set-then-trap k0 lost", EntryContext::default())
        .unwrap();
    assert!(out.result.is_err());
    let state = fsm.snapshot().unwrap();
    let text = std::str::from_utf8(&state).unwrap();
    assert_eq!(text.lines().count(), 1536);
    assert!(
        text.lines().all(|l| l.ends_with(&value)),
        "k0 kept its value"
    );
}

#[test]
fn restore_failure_keeps_the_current_state() {
    let mut fsm = load(GUEST_KV).start().unwrap();
    apply(&mut fsm, &put("k", "v")).unwrap();
    let out = fsm.restore(Arc::new(b"garbage".to_vec())).unwrap();
    assert!(
        matches!(out.result, Err(CallError::Guest { error: GuestError::InvalidInput(m) }) if m.contains("bad snapshot"))
    );
    assert_eq!(get(&mut fsm, "k").as_deref(), Some("v"));
}

fn wasi_call(fsm: &mut GuestFsm, cmd: &str, entry: EntryContext) -> Result<String, CallError> {
    let out = fsm.apply(cmd.as_bytes(), entry).expect("no host fault");
    out.result.map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn wasi_is_answered_from_the_entry_the_same_on_every_instance() {
    let module = load(WASI_USER);
    let entry = |index, unix_ms| EntryContext {
        index,
        term: 1,
        unix_ms,
        position: 0,
    };
    let (e1, e2) = (entry(7, 1_700_000_000_123), entry(8, 1_700_000_000_999));
    let (mut a, mut b) = (module.start().unwrap(), module.start().unwrap());
    for fsm in [&mut a, &mut b] {
        assert_eq!(wasi_call(fsm, "time", e1).unwrap(), "1700000000123");
        assert_eq!(wasi_call(fsm, "time", e2).unwrap(), "1700000000999");
        // Time stands still within a call: an hour's sleep returns at once, having slept 0.
        assert_eq!(wasi_call(fsm, "sleep", e2).unwrap(), "slept 0ns");
        assert_eq!(
            wasi_call(fsm, "env", e2).unwrap(),
            r#"vars 0 args 0 cwd Some("/") root false"#
        );
    }
    // Random bytes follow the entry: equal on both instances, other for another entry.
    let (mut c, mut d) = (module.start().unwrap(), module.start().unwrap());
    let r1 = wasi_call(&mut c, "random", e1).unwrap();
    assert_eq!(r1, wasi_call(&mut d, "random", e1).unwrap());
    let mut other = module.start().unwrap();
    assert_ne!(r1, wasi_call(&mut other, "random", e2).unwrap());

    // stdout and stderr become the guest's log lines.
    a.take_logs();
    assert_eq!(wasi_call(&mut a, "print", e2).unwrap(), "printed");
    let lines: Vec<_> = a
        .take_logs()
        .into_iter()
        .map(|l| (format!("{:?}", l.level), l.message, l.index))
        .collect();
    assert_eq!(
        lines,
        [
            ("Info".into(), "hello from the guest".into(), 8),
            ("Warn".into(), "and to stderr".into(), 8)
        ]
    );
    // Exiting (WASI 0.2 tells only success from failure) fails the call like a trap, and the
    // instance goes on.
    let err = wasi_call(&mut a, "exit", e2).unwrap_err();
    assert!(
        matches!(&err, CallError::Trap { message } if message.contains("exit status 1")),
        "{err:?}"
    );
    assert_eq!(
        wasi_call(&mut a, "echo still alive", e2).unwrap(),
        "still alive"
    );
}

#[test]
fn a_guest_importing_what_the_host_does_not_provide_is_refused_at_load() {
    let component = wat::parse_str(
        r#"(component (import "example:nothing/here@1.0.0" (instance (export "f" (func)))))"#,
    )
    .unwrap();
    let err = GuestModule::from_bytes("importer.wasm", &component, test_limits()).unwrap_err();
    assert!(matches!(err, LoadError::Import { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("importer.wasm") && msg.contains("example:nothing/here@1.0.0"),
        "{msg}"
    );
}

fn load_err(name: &str, bytes: &[u8]) -> String {
    GuestModule::from_bytes(name, bytes, test_limits())
        .expect_err("must not load")
        .to_string()
}

#[test]
fn bad_modules_are_refused_at_load_with_a_reason() {
    let msg = load_err("garbage.wasm", b"this is not wasm at all");
    assert!(
        msg.contains("garbage.wasm") && msg.contains("not a WebAssembly file"),
        "{msg}"
    );

    let core = wat::parse_str("(module (func (export \"apply\")))").unwrap();
    let msg = load_err("core.wasm", &core);
    assert!(
        msg.contains("core.wasm") && msg.contains("not a component"),
        "{msg}"
    );

    let empty = wat::parse_str("(component)").unwrap();
    let err = GuestModule::from_bytes("empty.wasm", &empty, test_limits()).unwrap_err();
    assert!(matches!(err, LoadError::WrongExports { .. }), "{err}");
    assert!(err.to_string().contains("raftwasm:fsm"), "{err}");

    let mut truncated = std::fs::read(GUEST_KV).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = GuestModule::from_bytes("truncated.wasm", &truncated, test_limits()).unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");

    let err =
        GuestModule::from_file(Path::new("/nonexistent/guest.wasm"), test_limits()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/guest.wasm"), "{err}");
}

#[test]
fn huge_initial_memory_is_refused_at_load() {
    let err = GuestModule::from_file(Path::new(BIGMEM), test_limits()).unwrap_err();
    assert!(matches!(err, LoadError::Instantiate { .. }), "{err}");
    assert!(err.to_string().contains("memory limit of 64 MiB"), "{err}");
}

#[test]
fn snapshots_larger_than_wasmtimes_default_copy_limit_round_trip() {
    // wasmtime caps what one call may hand the host at 128 MiB unless told otherwise; a snapshot
    // is the whole state, so the cap must follow the guest memory limit instead.
    let limits = GuestLimits {
        memory_mib: 1024,
        ..GuestLimits::default()
    };
    let module = GuestModule::from_file(Path::new(GUEST_KV), limits).unwrap();
    let mut fsm = module.start().unwrap();
    let value = "x".repeat(100 * 1024);
    for i in 0..1_400 {
        apply(&mut fsm, &put(&format!("k{i}"), &value)).unwrap();
    }
    let snap = fsm.snapshot().unwrap();
    assert!(snap.len() > 136 << 20, "{} bytes", snap.len());
    let mut copy = module.start().unwrap();
    copy.restore(snap.clone()).unwrap().result.unwrap();
    assert_eq!(
        get(&mut copy, "k1399").as_deref().map(str::len),
        Some(100 * 1024)
    );
}

#[test]
fn a_streamed_snapshot_leaves_no_encoded_copy_in_the_guests_memory() {
    // Linear memory never shrinks: a guest that built its snapshot (or received a restore's
    // state) as one buffer would keep room for a second copy of its state for good. guest-kv
    // streams both through the 0.3.0 context, so its memory stays near its live state.
    let limits = GuestLimits {
        memory_mib: 256,
        ..GuestLimits::default()
    };
    let module = GuestModule::from_file(Path::new(GUEST_KV), limits).unwrap();
    assert_eq!(module.world(), host::fsm::WorldVersion::V0_3);
    let mut fsm = module.start().unwrap();
    let value = "x".repeat(1024);
    for i in 0..24_000 {
        apply(&mut fsm, &put(&format!("k{i:06}"), &value)).unwrap();
    }
    let snap = fsm.snapshot().unwrap();
    let grown = fsm.memory_bytes();
    assert!(
        grown < snap.len() as u64 * 3 / 2,
        "after a snapshot of {} bytes: {grown} bytes of guest memory",
        snap.len()
    );
    let mut copy = module.start().unwrap();
    copy.restore(snap.clone()).unwrap().result.unwrap();
    let restored = copy.memory_bytes();
    assert!(
        restored < snap.len() as u64 * 3 / 2,
        "after restoring {} bytes: {restored} bytes of guest memory",
        snap.len()
    );
    assert_eq!(*copy.snapshot().unwrap(), *snap);
    // The same bytes as guest-kv's own encoding, compiled natively.
    let mut native = guest_kv::Kv::default();
    for i in 0..24_000 {
        let command = put(&format!("k{i:06}"), &value).encode();
        native.apply_bytes(&command).unwrap();
    }
    assert_eq!(native.snapshot(), *snap);
}
