//! The connection-level request framing (`src/io/request_reader.rs`): heads, bodies, pipelining,
//! limits, in two chunkings that must agree. No socket. The check lives in `fuzz/checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::request_reader(data));
