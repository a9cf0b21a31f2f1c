//! Test fixture: a guest whose `restore()` fails on cue, to test rejected module upgrades. The
//! cue is in the state it is handed (the old guest's snapshot): the bytes `RESTORE-TRAP` make it
//! panic (a trap), `RESTORE-LOOP` make it loop until it runs out of fuel, `RESTORE-ERR` make it
//! return an error; any other state is accepted. Built by host/build.rs.

wit_bindgen::generate!({ path: "../../../../wit/0.1.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct BadRestore;

impl Guest for BadRestore {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(command)
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
        Self::apply(request)
    }

    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(state: Vec<u8>) -> Result<(), Error> {
        if contains(&state, b"RESTORE-TRAP") {
            panic!("restore refuses this state");
        }
        if contains(&state, b"RESTORE-LOOP") {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if contains(&state, b"RESTORE-ERR") {
            return Err(Error::InvalidInput("restore refuses this state".into()));
        }
        Ok(())
    }
}

export!(BadRestore);
