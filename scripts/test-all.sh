#!/usr/bin/env bash
# Every test, on a fresh machine: installs what it needs (npm packages, Debian's Chromium and
# redis-server), then runs formatting and lint checks, the Rust tests (unit, scenario, loopback,
# hostile input, fuzz corpora, doc tests; `cargo test` also builds every example; the gateway
# binary's unit tests), compiles and links the benches, and runs the interop suite with real
# clients (socket.io-client, engine.io-client, eventsource, Chromium via playwright-core) against
# the examples (built with `--features redis`), which also drives the gateway binary
# (`--features gateway`) and a three-node cluster on a redis-server of its own as processes.
#
# The servers the tests start take their number of event loops from TIDINGS_EVENT_LOOPS (when a
# test does not set `Config::event_loops` itself): the Rust tests and the interop suite run once
# with one loop and once with two, so every promise is checked within a loop and across loops.
# The Rust tests run with the default features (one loop) and with `--features redis` (two loops:
# everything again, plus the cluster tests of tests/cluster.rs, which start redis-server).
#
# Everything builds in the dev/test profile, once: the benches are checked with `cargo build
# --benches`, which reuses the test build's dependencies, instead of `cargo bench --no-run`, which
# would build everything again under the release profile's fat LTO for minutes. Real benchmark
# runs (`cargo bench`) keep the release profile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*"; }

# Debian packages the tests need: apt-get update once, then each missing package.
apt_updated=""
apt_install() {
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    if [[ -z "$apt_updated" ]]; then
        "${sudo[@]}" apt-get update -qq
        apt_updated=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [[ ! -x /usr/bin/chromium ]]; then
    step "installing Debian's chromium (browser tests)"
    apt_install chromium
fi

if [[ ! -x /usr/bin/redis-server ]]; then
    step "installing Debian's redis-server (cluster tests; each test starts its own server)"
    apt_install redis-server
fi

step "npm ci (interop clients)"
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings (every feature: the gateway binary too)"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo doc -D warnings (every public item documented, no broken link)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --quiet

step "cargo test with 1 event loop, default features (and build every example)"
TIDINGS_EVENT_LOOPS=1 cargo test

step "cargo test with 2 event loops, --features redis (everything, the cluster tests too)"
TIDINGS_EVENT_LOOPS=2 cargo test --features redis

step "cargo test: the gateway binary's unit tests"
cargo test --features gateway --bin tidings-gateway

step "cargo build --benches (compile and link them, test profile)"
cargo build --benches

for loops in 1 2; do
    step "interop with $loops event loop(s): real clients against examples/interop.rs"
    TIDINGS_EVENT_LOOPS=$loops bash scripts/interop.sh
done
