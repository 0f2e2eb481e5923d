#!/usr/bin/env bash
# Every test, on a fresh machine: installs what it needs (npm packages, Debian's Chromium), then
# runs formatting and lint checks, the Rust tests (unit, scenario, loopback, hostile input, fuzz
# corpora, doc tests, the gateway binary's unit tests), compiles the benches and fuzz-free examples,
# and runs the interop suite with real clients (socket.io-client, engine.io-client, eventsource,
# Chromium via playwright-core), which also drives the gateway binary as a process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*"; }

if [[ ! -x /usr/bin/chromium ]]; then
    step "installing Debian's chromium (browser tests)"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi

step "npm ci (interop clients)"
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings (every feature: the gateway binary too)"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo build --examples, cargo bench --no-run"
cargo build --examples
cargo bench --no-run --quiet

step "cargo test"
cargo test

step "cargo test: the gateway binary's unit tests"
cargo test --features gateway --bin tidings-gateway

step "interop: real clients against examples/interop.rs"
bash scripts/interop.sh
