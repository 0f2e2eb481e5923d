#!/usr/bin/env bash
# What an idle connection costs the server: RSS growth of the server ÷ connections, per transport
# (examples/idle_clients.rs opens and holds them). Release build, 127.0.0.1 only, bounded.
#   scripts/measure-memory.sh [count]        (default 10000; the fd limit must allow it)
#   SERVER=demo scripts/measure-memory.sh    (the demo server instead of examples/idle_server.rs;
#                                             it adds the demo's own presence state and pushes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
count=${1:-10000}
server_example=${SERVER:-idle_server}
case $server_example in
    idle_server | demo) ;;
    *) echo "SERVER must be idle_server or demo" >&2; exit 2 ;;
esac
port=$((20000 + RANDOM % 20000))
cargo build --release --quiet --example "$server_example" --example idle_clients
bin=${CARGO_TARGET_DIR:-target}/release/examples
out=$(mktemp)
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
server=
trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
echo "server: $server_example; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in sio sse; do
    PORT=$port "$bin/$server_example" >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    before=$(rss_kib $server)
    "$bin/idle_clients" --mode $mode --port $port --count "$count" --hold 8 > "$out" &
    clients=$!
    for _ in $(seq 1200); do grep -q "open" "$out" 2>/dev/null && break; sleep 0.1; done
    sleep 2 # the last CONNECTs are answered, the server settles
    after=$(rss_kib $server)
    wait $clients || true
    kill $server 2>/dev/null || true
    wait $server 2>/dev/null || true
    echo "$mode: $count idle connections: server RSS $before KiB -> $after KiB = $(( (after - before) * 1024 / count )) bytes per connection"
    port=$((port + 1))
done
