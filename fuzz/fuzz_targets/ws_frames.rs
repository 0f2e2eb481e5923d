//! `tidings::proto::ws::FrameBoundaries`: chunking-independent, and right after every frame of a
//! well-formed client stream. The check lives in `fuzz/checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::ws_frames(data));
