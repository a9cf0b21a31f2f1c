//! Asks the wasm linker for a 1.5 GiB initial memory (wasm builds only; a native build is untouched).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=--initial-memory={}", 1536u64 << 20);
    }
}
