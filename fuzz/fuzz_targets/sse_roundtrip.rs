//! SSE encode_event then SseParser, comments, retry, and parse_last_event_id.
//! The checks live in `fuzz/checks.rs`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::sse_roundtrip(data));
