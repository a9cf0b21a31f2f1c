//! Test fixture: a guest built for wasm32-wasip2 whose std imports WASI, which the host answers
//! deterministically: `time` is the entry's time, `random` 16 WASI random bytes,
//! `print` writes to stdout and stderr, `sleep` sleeps an hour (time stands still, so it
//! returns at once), `env` lists what the guest can see of the node (nothing), `exit` exits.
//! Anything else is echoed (`echo X` answers X). Built by host/build.rs.

wit_bindgen::generate!({ path: "../../../../wit/0.1.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};

struct WasiUser;

// wasi-libc's getentropy, which reads `wasi:random/random`.
unsafe extern "C" {
    fn getentropy(buf: *mut u8, len: usize) -> i32;
}

#[allow(unsafe_code)]
fn entropy(buf: &mut [u8]) -> i32 {
    // SAFETY: the pointer and length describe `buf`, which getentropy only writes into.
    unsafe { getentropy(buf.as_mut_ptr(), buf.len()) }
}

impl Guest for WasiUser {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        let text = String::from_utf8(command).map_err(|e| Error::InvalidInput(e.to_string()))?;
        match text.as_str() {
            "time" => {
                let since = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                Ok(since.as_millis().to_string().into_bytes())
            }
            "random" => {
                let mut bytes = [0u8; 16];
                if entropy(&mut bytes) != 0 {
                    return Err(Error::Internal("getentropy failed".into()));
                }
                Ok(bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into_bytes())
            }
            "print" => {
                println!("hello from the guest");
                eprintln!("and to stderr");
                Ok(b"printed".to_vec())
            }
            "sleep" => {
                let start = std::time::Instant::now();
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(format!("slept {:?}", start.elapsed()).into_bytes())
            }
            "env" => Ok(format!(
                "vars {} args {} cwd {:?} root {}",
                std::env::vars().count(),
                std::env::args().count(),
                std::env::current_dir().ok(),
                std::fs::read_dir("/").is_ok(),
            )
            .into_bytes()),
            "exit" => std::process::exit(3),
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
