//! The cluster's messages on Redis: headers, bus messages and replies decode without a panic and
//! have one wire form each. The check lives in `fuzz/checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cluster_wire(data));
