#!/usr/bin/env bash
# Every test, on a fresh machine: installs what it needs (npm packages, Debian's Chromium), then
# runs formatting and lint checks, the Rust tests (unit, scenario, loopback, hostile input, fuzz
# corpora, doc tests; `cargo test` also builds every example; the gateway binary's unit tests),
# compiles and links the benches, and runs the interop suite with real clients (socket.io-client,
# engine.io-client, eventsource, Chromium via playwright-core) against the examples `cargo test`
# built, which also drives the gateway binary (`--features gateway`) as a process.
#
# The servers the tests start take their number of event loops from TIDINGS_EVENT_LOOPS (when a
# test does not set `Config::event_loops` itself): the Rust tests and the interop suite run once
# with one loop and once with two, so every promise is checked within a loop and across loops.
#
# Everything builds in the dev/test profile, once: the benches are checked with `cargo build
# --benches`, which reuses the test build's dependencies, instead of `cargo bench --no-run`, which
# would build everything again under the release profile's fat LTO for minutes. Real benchmark
# runs (`cargo bench`) keep the release profile.
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

step "cargo doc -D warnings (every public item documented, no broken link)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --quiet

for loops in 1 2; do
    step "cargo test with $loops event loop(s) (and build every example)"
    TIDINGS_EVENT_LOOPS=$loops cargo test
done

step "cargo test: the gateway binary's unit tests"
cargo test --features gateway --bin tidings-gateway

step "cargo build --benches (compile and link them, test profile)"
cargo build --benches

for loops in 1 2; do
    step "interop with $loops event loop(s): real clients against examples/interop.rs"
    TIDINGS_EVENT_LOOPS=$loops bash scripts/interop.sh
done
