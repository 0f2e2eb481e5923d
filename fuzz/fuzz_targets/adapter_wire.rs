//! The Node socket.io Redis adapter's messages (broadcasts, requests, responses) decode without a
//! panic and round-trip. The check lives in `fuzz/checks.rs`; it needs the `redis` feature (on by
//! default in the fuzz crate).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    #[cfg(feature = "redis")]
    checks::adapter_wire(data);
    #[cfg(not(feature = "redis"))]
    let _ = data;
});
