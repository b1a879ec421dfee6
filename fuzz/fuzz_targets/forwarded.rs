//! `cargo fuzz run forwarded` (needs cargo-fuzz; RUSTC_BOOTSTRAP=1 on a stable toolchain).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrule_http::fuzz_forwarded(data);
});
