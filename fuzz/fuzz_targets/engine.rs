//! The whole engine: operation sequences (connections on every transport, client messages, closes,
//! decisions, commands, time steps) with the invariants of `tidings::fuzzing::engine`.
//! The check lives in `fuzz/checks.rs`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::engine(data));
