//! Rollback of a large state: its checkpoint and journal spilled to unlinked files. A process of
//! its own, because the spill directory is set once per process and the test counts the files
//! in it (other tests' large states would spill there too).

use host::fsm::{EntryContext, GuestFsm, GuestLimits, GuestModule};
use host::snapshot_data::SnapshotData;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

const HOSTILE: &str = env!("RAFTWASM_HOSTILE_WASM");

/// The process's spill directory, and the lock each test holds while it counts the files in it.
fn scratch() -> (&'static Path, std::sync::MutexGuard<'static, ()>) {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap()).path();
    host::fsm::spill_checkpoints_in(dir);
    (dir, ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The hostile guest with room for its buffered snapshot and restore beside a map of 18 MiB.
fn hostile() -> GuestModule {
    let limits = GuestLimits {
        fuel_per_apply: 10_000_000,
        fuel_per_snapshot: 1_000_000_000,
        memory_mib: 256,
    };
    GuestModule::from_file(Path::new(HOSTILE), limits).unwrap()
}

/// Sets keys `k0`..`k{keys - 1}` to `value`, each command applied on its own.
fn set_keys(fsm: &mut GuestFsm, keys: usize, value: &str) {
    for i in 0..keys {
        let command = format!("set k{i} {value}");
        fsm.apply(command.as_bytes(), EntryContext::default())
            .unwrap()
            .result
            .unwrap();
    }
}

/// Sizes of the unlinked files this process holds open in `dir`, smallest first.
fn scratch_files(dir: &std::path::Path) -> Vec<u64> {
    let mut sizes: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| {
            let fd = fd.ok()?.path();
            let target = std::fs::read_link(&fd).ok()?;
            let deleted = target.to_string_lossy().ends_with("(deleted)");
            (target.starts_with(dir) && deleted)
                .then(|| std::fs::metadata(&fd).ok().map(|m| m.len()))
                .flatten()
        })
        .collect();
    sizes.sort_unstable();
    sizes
}

#[test]
fn a_large_checkpoint_and_its_journal_are_spilled_to_disk_and_rollback_reads_them_back() {
    // 18 MiB of state: past the size kept in memory, so the checkpoint goes to an unlinked file
    // in the scratch directory. Then 17.4 MiB of overwrites: past the 16 MiB an in-memory
    // journal may hold, within the state's size, so no checkpoint is taken and the journal is
    // in a file of its own. A failed call is rolled back from both.
    let (scratch, _one_at_a_time) = scratch();
    let mut fsm = hostile().start().unwrap();
    set_keys(&mut fsm, 4608, &"v".repeat(4096));
    let state_len = fsm.snapshot().unwrap().len() as u64;
    assert!(state_len > 18 << 20, "{state_len}");
    assert_eq!(
        scratch_files(scratch),
        vec![0, state_len],
        "one spilled checkpoint and an empty journal beside it"
    );
    let newer = "w".repeat(4096);
    set_keys(&mut fsm, 4400, &newer);
    let files = scratch_files(scratch);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        files[1], state_len,
        "the checkpoint is the one taken: {files:?}"
    );
    // All but what its 1 MiB write buffer holds.
    assert!(files[0] > 16 << 20, "the journal is on disk: {files:?}");
    let out = fsm
        .apply(b"set-then-trap k0 lost", EntryContext::default())
        .unwrap();
    assert!(out.result.is_err());
    let state = fsm.snapshot().unwrap();
    let text = std::str::from_utf8(&state).unwrap();
    assert_eq!(text.lines().count(), 4608);
    let rewritten = |l: &&str| l.ends_with(&newer);
    assert_eq!(
        text.lines().filter(rewritten).count(),
        4400,
        "the journal replayed"
    );
}

#[test]
fn a_state_restored_from_a_file_is_rolled_back_to_from_that_file() {
    // A guest restored from a region of a file (a snapshot on disk) keeps that region as its
    // checkpoint: no copy of the state goes to the scratch directory, only a journal.
    let (scratch, _one_at_a_time) = scratch();
    let module = hostile();
    let mut source = module.start().unwrap();
    let value = "v".repeat(4096);
    set_keys(&mut source, 3072, &value);
    let state = source.snapshot().unwrap();
    drop(source);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    std::fs::write(&path, [b"head".as_slice(), &state, b"tail"].concat()).unwrap();
    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    let on_disk = SnapshotData::File {
        file,
        offset: 4,
        len: state.len() as u64,
    };
    let before = scratch_files(scratch).len();
    let mut fsm = module.start().unwrap();
    fsm.restore_from(on_disk).unwrap().result.unwrap();
    // The file may be replaced meanwhile: the open handle keeps the checkpoint readable.
    std::fs::remove_file(&path).unwrap();
    fsm.apply(b"set extra 1", EntryContext::default())
        .unwrap()
        .result
        .unwrap();
    assert_eq!(
        scratch_files(scratch).len(),
        before + 1,
        "a journal, no copy of the state"
    );
    let out = fsm
        .apply(b"set-then-trap k0 lost", EntryContext::default())
        .unwrap();
    assert!(out.result.is_err());
    let after = fsm.snapshot().unwrap();
    let text = std::str::from_utf8(&after).unwrap();
    assert_eq!(text.lines().count(), 3073);
    assert!(text.lines().any(|l| l == "extra 1"), "the journal replayed");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("k0 "))
            .all(|l| l.ends_with(&value)),
        "k0 kept its value"
    );
}
