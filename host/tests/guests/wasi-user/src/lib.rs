//! Test fixture: a guest built for wasm32-wasip2 whose std imports WASI. It must load; asking
//! for the clock (`time`), randomness (`random`) or stdout (`print`) must trap, the same way on
//! every node. `echo X` works without any import. Built by host/build.rs.

wit_bindgen::generate!({ path: "../../../../wit/0.1.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};

struct WasiUser;

impl Guest for WasiUser {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        let text = String::from_utf8(command).map_err(|e| Error::InvalidInput(e.to_string()))?;
        match text.as_str() {
            "time" => {
                let now = std::time::SystemTime::now();
                Ok(format!("{now:?}").into_bytes())
            }
            "random" => {
                let map: std::collections::HashMap<u8, u8> = std::collections::HashMap::new();
                Ok(format!("{}", map.len()).into_bytes())
            }
            "print" => {
                println!("hello from the guest");
                Ok(b"printed".to_vec())
            }
            other => Ok(other
                .strip_prefix("echo ")
                .unwrap_or(other)
                .as_bytes()
                .to_vec()),
        }
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(request)
    }

    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(_state: Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
}

export!(WasiUser);
