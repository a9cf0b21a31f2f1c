//! `host guest check` on real components built by this project: deterministic guests pass,
//! and a guest that changes its state in `query` and loses a field in `restore` is caught, as
//! is one importing what the host does not provide.

mod common;

use common::host_command;

fn check(guest: &str, args: &[&str]) -> (bool, String) {
    host_command(&[&["guest", "check", guest], args].concat())
}

fn script(lines: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines).unwrap();
    file
}

#[test]
fn deterministic_guests_pass_with_their_world_and_figures() {
    let (ok, out) = check(env!("RAFTWASM_GUEST_KV_WASM"), &["--generate", "20000"]);
    assert!(ok, "{out}");
    assert!(out.contains("world: raftwasm:fsm@0.3.0"), "{out}");
    // It announces its changes to watchers (emit).
    assert!(
        out.contains("imports: raftwasm:fsm/context@0.3.0\n"),
        "{out}"
    );
    assert!(out.contains("fuel per command: min "), "{out}");
    assert!(out.contains("ok: deterministic over this script"), "{out}");
    let (ok, out) = check(env!("RAFTWASM_GUEST_KV_RAW_WASM"), &["--generate", "5000"]);
    assert!(ok, "{out}");
    assert!(out.contains("world: raftwasm:fsm@0.1.0"), "{out}");
    assert!(out.contains("imports: none"), "{out}");

    let bank = script(
        "open alice 100\nopen bob 50\n{\"query\":\"audit\"}\ntransfer alice bob 30\n\
         {\"apply\":\"transfer bob carol 1\"}\nclose nobody\n{\"query\":\"balance bob\"}\n",
    );
    let (ok, out) = check(
        env!("RAFTWASM_BANK_WASM"),
        &["--commands", bank.path().to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert!(out.contains("world: raftwasm:fsm@0.3.0"), "{out}");
    assert!(out.contains("script: 5 commands, 2 queries"), "{out}");

    let leases = script(
        "{\"apply\":{\"acquire\":{\"name\":\"db\",\"owner\":\"a\",\"ttl_ms\":25}}}\n\
         {\"apply\":{\"acquire\":{\"name\":\"db\",\"owner\":\"b\",\"ttl_ms\":25}}}\n\
         {\"query\":\"list\"}\n\
         {\"apply\":{\"acquire\":{\"name\":\"db\",\"owner\":\"b\",\"ttl_ms\":25}}}\n",
    );
    let (ok, out) = check(
        env!("RAFTWASM_LEASE_WASM"),
        &["--commands", leases.path().to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("imports: raftwasm:fsm/context@0.3.0\n"),
        "{out}"
    );
}

#[test]
fn a_query_that_writes_and_a_lossy_restore_are_caught() {
    let sloppy = script("add 1\n{\"query\":\"peek\"}\nadd 2\nadd 3\n{\"query\":\"peek\"}\nadd 4\n");
    let (ok, out) = check(
        env!("RAFTWASM_NONDETERMINISTIC_WASM"),
        &["--commands", sloppy.path().to_str().unwrap()],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("the instance that also answered the queries ends in a different state"),
        "{out}"
    );
    assert!(
        out.contains("snapshot → restore → snapshot gives different bytes"),
        "{out}"
    );
    assert!(
        out.contains("the instance restored halfway answered differently"),
        "{out}"
    );
    assert!(out.contains("failed the check"), "{out}");
}

#[test]
fn imports_the_host_does_not_provide_fail_the_check() {
    // WASI is provided (deterministically).
    let (ok, out) = check(env!("RAFTWASM_WASI_USER_WASM"), &["--generate", "10"]);
    assert!(ok, "{out}");
    assert!(out.contains("wasi:cli/environment@0.2."), "{out}");
    assert!(!out.contains("NOT PROVIDED"), "{out}");
    // Anything else is refused, by name.
    let importer = tempfile::NamedTempFile::new().unwrap();
    let component = r#"(component (import "example:nothing/here@1.0.0" (instance)))"#;
    std::fs::write(importer.path(), wat::parse_str(component).unwrap()).unwrap();
    let (ok, out) = check(importer.path().to_str().unwrap(), &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("imports example:nothing/here@1.0.0"), "{out}");
    let (ok, out) = check("/nonexistent.wasm", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("nonexistent.wasm"), "{out}");
}
