//! Test fixture: a guest whose initial linear memory (1.5 GiB, set by its build.rs through the
//! linker) is over the host's memory cap, so it must be refused at load. Built by host/build.rs.

wit_bindgen::generate!({ path: "../../../../wit/0.1.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};

struct BigMem;

impl Guest for BigMem {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(command)
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
        Self::apply(request)
    }

    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(_state: Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
}

export!(BigMem);
