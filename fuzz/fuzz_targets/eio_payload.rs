//! Engine.IO decode_payload with a packet cap, with encode_payload round trips.
//! The checks live in `fuzz/checks.rs`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::eio_payload(data));
