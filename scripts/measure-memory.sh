#!/usr/bin/env bash
# What an idle connection costs the server: RSS growth of the demo server ÷ connections, per
# transport (examples/idle_clients.rs opens and holds them). Release build, 127.0.0.1 only, bounded.
#   scripts/measure-memory.sh [count]        (default 5000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
count=${1:-5000}
port=$((20000 + RANDOM % 20000))
cargo build --release --quiet --example demo --example idle_clients
bin=${CARGO_TARGET_DIR:-target}/release/examples
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
for mode in sio sse; do
    PORT=$port "$bin/demo" >/dev/null 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    before=$(rss_kib $server)
    "$bin/idle_clients" --mode $mode --port $port --count "$count" --hold 6 > /tmp/idle_clients.out &
    clients=$!
    for _ in $(seq 600); do grep -q "open" /tmp/idle_clients.out 2>/dev/null && break; sleep 0.1; done
    sleep 1
    after=$(rss_kib $server)
    wait $clients || true
    kill $server 2>/dev/null || true
    wait $server 2>/dev/null || true
    echo "$mode: $count idle connections: server RSS $before KiB -> $after KiB = $(( (after - before) * 1024 / count )) bytes per connection"
    port=$((port + 1))
done
