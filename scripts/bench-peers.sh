#!/usr/bin/env bash
# Fan-out and latency, side by side on this machine in one run: tidings vs the official
# Node socket.io 4.8 server vs socketioxide (Rust, tokio/axum), all with the same `bench:burst`
# contract and the same load client (examples/fanout_client.rs):
#   - fan-out: deliveries/s of a full-speed burst to N Socket.IO websocket clients (SSE: tidings only),
#   - latency p50/p99/max at a fixed offered rate (20 broadcasts/s),
#   - server RSS growth per idle connection, server CPU time per delivered message,
#   - stripped release binary size (tidings demo vs the socketioxide server).
# Each server runs alone, restarted for every client count, on a free 127.0.0.1 port. Everything is
# bounded (each client run by its own deadline and `timeout`). A benchmark, never a test: it asserts
# nothing about time. Not run by CI.
#   scripts/bench-peers.sh                  (N = 1000 and 5000; ~10 min on 2 cores incl. builds)
#   BENCH_CLIENTS="1000" scripts/bench-peers.sh
# Needs node/npm (the Node peer) and network access to crates.io and npm for the first build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clients_list=${BENCH_CLIENTS:-"1000 5000"}
servers=${BENCH_SERVERS:-"tidings node socketioxide"}
size=64          # pad bytes per tick (a tick is ~120 bytes on the wire)
rate=20          # paced scenario: broadcasts per second ...
paced_count=200  # ... for 10 s
deliveries=1000000 # burst: count = deliveries / N broadcasts
out=target/bench-peers
mkdir -p "$out"
results=$out/results.txt
: > "$results"
ulimit -n 20000 2>/dev/null || true

echo "== build (release)"
cargo build --release --quiet --example bench_server --example fanout_client --example demo
cargo build --release --quiet --manifest-path benches/peers/socketioxide/Cargo.toml
(cd benches/peers/node && npm ci --no-audit --no-fund --silent)

# Where cargo put the binaries (CARGO_TARGET_DIR, when set, holds both crates' builds).
bin=${CARGO_TARGET_DIR:-target}/release/examples
peer_bin=${CARGO_TARGET_DIR:-benches/peers/socketioxide/target}/release/bench-peer-socketioxide
client=$bin/fanout_client
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

# Server ports below the ephemeral range (the clients' own ports come from there).
port=$((20000 + RANDOM % 10000))
next_free_port() {
    for _ in $(seq 200); do
        port=$((port + 1))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    done
    echo "no free port" >&2
    exit 1
}

start_server() { # name
    next_free_port
    local log=$out/$1.server.log
    case $1 in
        tidings) PORT=$port "$bin/bench_server" >>"$log" 2>&1 & ;;
        node) PORT=$port node benches/peers/node/server.mjs >>"$log" 2>&1 & ;;
        socketioxide)
            PORT=$port "$peer_bin" >>"$log" 2>&1 & ;;
    esac
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    sleep 1 # let it settle before the baseline RSS is read
}

run_client() { # name proto n
    local n=$3 count=$((deliveries / $3))
    echo "-- $1 $2 N=$n (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    timeout 330 "$client" --proto "$2" --port "$port" --clients "$n" --server-pid "$server_pid" \
        --label "$1" --hold 3 --deadline 300 \
        --run "warmup:20:$size:0" --run "burst:$count:$size:0" \
        --run "paced:$paced_count:$size:$rate" | tee -a "$results" || echo "client failed" >&2
}

for name in $servers; do
    for n in $clients_list; do
        start_server "$name"
        run_client "$name" sio "$n"
        stop_server
        if [ "$name" = tidings ]; then
            start_server tidings
            run_client tidings sse "$n"
            stop_server
        fi
    done
done

echo
echo "== results ($(nproc) cores; client and server share them; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
awk '
function kv(line,   i, n, a, p) { delete f; n = split(line, a, " "); for (i = 2; i <= n; i++) { split(a[i], p, "="); f[p[1]] = p[2] } }
/^IDLE/   { kv($0); k = f["label"] " " f["proto"] " " f["clients"]; idle[k] = f["bytes_per_conn"]; next }
/^RESULT/ { kv($0); k = f["label"] " " f["proto"] " " f["clients"]
            if (!(k in seen)) { seen[k] = 1; order[++rows] = k }
            if (f["run"] == "burst") { bps[k] = f["per_sec"]; bcpu[k] = f["cpu_us_per_msg"]; bfirst[k] = f["first_ms"]; bp99[k] = f["p99_ms"]
                                       bpeak[k] = sprintf("%.0f", f["peak_rss_growth_kib"] / 1024); blost[k] = f["lost"] "/" f["dropped_conns"] }
            if (f["run"] == "paced") { p50[k] = f["p50_ms"]; p99[k] = f["p99_ms"]; pmax[k] = f["max_ms"]; pcpu[k] = f["cpu_us_per_msg"]; plost[k] = f["lost"] "/" f["dropped_conns"] } }
END {
  fmt = "%-12s %-4s %5s | %9s %8s %8s %7s %7s %6s | %7s %7s %7s %7s %6s | %7s\n"
  printf fmt, "", "", "", "BURST", "", "", "", "", "", "PACED", "", "", "", "", "IDLE"
  printf fmt, "server", "prot", "N", "msg/s", "first ms", "p99 ms", "CPU us", "peak MB", "lost", "p50 ms", "p99 ms", "max ms", "CPU us", "lost", "B/conn"
  for (r = 1; r <= rows; r++) { k = order[r]; split(k, p, " ")
    printf fmt, p[1], p[2], p[3], bps[k], bfirst[k], bp99[k], bcpu[k], bpeak[k], blost[k], p50[k], p99[k], pmax[k], pcpu[k], plost[k], idle[k] }
}' "$results" | tee "$out/table.txt"
echo "BURST: $deliveries deliveries per row ($deliveries/N broadcasts at full speed): delivered msg/s, latency of the first"
echo "  delivery and p99, server CPU us per delivery, server peak RSS over its pre-connection baseline (VmHWM)."
echo "PACED: $paced_count broadcasts at $rate/s: delivery latency p50/p99/max (server send stamp -> client read), CPU us/delivery."
echo "IDLE: server RSS growth / connections after 3 s idle. lost = expected - delivered / connections dropped."

echo
echo "== stripped release binary sizes"
size_of() { stat -c %s "$1" 2>/dev/null || echo "?"; }
printf "%-40s %10s bytes\n" "tidings examples/demo" "$(size_of "$bin/demo")"
printf "%-40s %10s bytes\n" "tidings examples/bench_server" "$(size_of "$bin/bench_server")"
printf "%-40s %10s bytes\n" "socketioxide peer (same profile)" "$(size_of "$peer_bin")"
printf "%-40s %10s bytes (+ node_modules %s)\n" "node (runtime binary)" "$(size_of "$(command -v node)")" \
    "$(du -sh benches/peers/node/node_modules | cut -f1)"
