//! Replays every input file under `fuzz/corpus/<target>/` through the same checks as the cargo-fuzz
//! targets (`fuzz/checks.rs`), so plain `cargo test` exercises the corpora without nightly.
//! A missing or empty corpus directory fails: the replay can never pass by finding nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

/// Runs `check` on every file of the target's corpus; reports every failing file, not just the first.
fn replay(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check named {target}"));
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is missing: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus directory {} is empty",
        dir.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failures.push(file.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} corpus files failed (messages above):\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_target_has_a_corpus_and_a_replay() {
    // The fuzz targets and the checks table must list the same names.
    let fuzz_targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&fuzz_targets)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // A target behind a feature that this build lacks has no check here.
    on_disk.retain(|name| {
        checks::TARGETS.iter().any(|(n, _)| n == name)
            || !checks::FEATURE_TARGETS.iter().any(|(n, _)| n == name)
    });
    on_disk.sort();
    let mut listed: Vec<String> = checks::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn corpus_http_head() {
    replay("http_head");
}

#[test]
fn corpus_query() {
    replay("query");
}

#[test]
fn corpus_eio_packet() {
    replay("eio_packet");
}

#[test]
fn corpus_eio_payload() {
    replay("eio_payload");
}

#[test]
fn corpus_sio_packet() {
    replay("sio_packet");
}

#[test]
fn corpus_sio_reassembler() {
    replay("sio_reassembler");
}

#[test]
fn corpus_sse_roundtrip() {
    replay("sse_roundtrip");
}

#[test]
fn corpus_engine() {
    replay("engine");
}

#[test]
fn corpus_request_reader() {
    replay("request_reader");
}

#[test]
fn corpus_ws_frames() {
    replay("ws_frames");
}

#[test]
fn corpus_cluster_wire() {
    replay("cluster_wire");
}

#[cfg(feature = "redis")]
#[test]
fn corpus_adapter_wire() {
    replay("adapter_wire");
}
