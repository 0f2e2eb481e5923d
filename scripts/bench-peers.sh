#!/usr/bin/env bash
# tidings next to its peers, side by side in one run, one table: tidings with 1 and 2 event loops,
# socketioxide (Rust, tokio/axum) with 1 and 2 worker threads, the official Node socket.io 4.8
# server. Every server has the same contract (bench:burst, bench:ack; see examples/bench_server.rs,
# benches/peers/socketioxide, benches/peers/node) and the same load client
# (examples/fanout_client.rs), at N Socket.IO WebSocket clients (default 10 000):
#   - server RSS growth per idle Socket.IO connection (tidings: and per SSE stream), after 3 s idle,
#   - a full-speed burst of 1 M deliveries (1 000 000 / N broadcasts to all N): deliveries/s,
#     server CPU per delivery, and the first delivery (server's first send -> first receipt),
#   - a steady 20 000 deliveries/s (20 000 / N broadcasts/s for 10 s): latency p50 / p99,
#   - acks: 256 of the N clients keep 16 emits-with-ack in flight each for 10 s, all N connected:
#     acks/s and server CPU per ack,
#   - what was lost (undelivered ticks, unanswered or wrong acks, dropped connections).
# Each figure is the median of BENCH_RUNS runs (a fresh server for each), the runs interleaved
# across the columns; the load average is printed beside every row. A benchmark, never a test: it
# asserts nothing. Not run by CI. Everything on 127.0.0.1, every step bounded by a timeout.
#
# Pinning (2 cores): the 1-loop / 1-worker servers and Node run on core 0 (taskset -c 0), the load
# client on core 1; the 2-loop / 2-worker servers are not pinned (they need both cores) and the
# load client shares the cores with them.
#
#   scripts/bench-peers.sh                                 full run (3 runs x 5 columns at 10 000)
#   BENCH_RUNS=1 BENCH_CLIENTS=1000 scripts/bench-peers.sh quick check
# Other knobs: BENCH_COLUMNS (a subset of "tidings-1 tidings-2 sioxide-1 sioxide-2 node"),
# BENCH_PACED_SECS (10), BENCH_ACK_SENDERS (256), BENCH_ACK_WINDOW (16), BENCH_ACK_SECS (10).
# The tidings columns pass TIDINGS_EVENT_LOOPS=1 / 2 to examples/bench_server, the socketioxide
# columns WORKERS=1 / 2 to its peer. Set CARGO_TARGET_DIR to build both crates into one directory.
# Needs node/npm (the Node peer) and network access to crates.io and npm for the first build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clients=${BENCH_CLIENTS:-10000}
runs=${BENCH_RUNS:-3}
columns=${BENCH_COLUMNS:-"tidings-1 tidings-2 sioxide-1 sioxide-2 node"}
paced_secs=${BENCH_PACED_SECS:-10}
ack_senders=${BENCH_ACK_SENDERS:-256}
ack_window=${BENCH_ACK_WINDOW:-16}
ack_secs=${BENCH_ACK_SECS:-10}

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
is_count BENCH_CLIENTS "$clients" 1 19000
is_count BENCH_RUNS "$runs" 1 99
is_count BENCH_PACED_SECS "$paced_secs" 1 600
is_count BENCH_ACK_SENDERS "$ack_senders" 1 19000
is_count BENCH_ACK_WINDOW "$ack_window" 1 1000
is_count BENCH_ACK_SECS "$ack_secs" 1 600
declare -A title=(
    [tidings-1]="tidings 1 loop" [tidings-2]="tidings 2 loops"
    [sioxide-1]="socketioxide 1 worker" [sioxide-2]="socketioxide 2 workers"
    [node]="Node socket.io 4.8"
)
for c in $columns; do
    [ -n "${title[$c]:-}" ] || { echo "BENCH_COLUMNS: unknown column $c" >&2; exit 2; }
done

size=64                                      # pad bytes per tick (~120 bytes on the wire)
deliveries=1000000                           # the burst: deliveries / N broadcasts, full speed
burst_count=$((deliveries / clients))
steady=20000                                 # steady deliveries/s: rate broadcasts/s to all N
paced_rate=$(((steady + clients / 2) / clients))
[ "$paced_rate" -ge 1 ] || paced_rate=1
paced_count=$((paced_rate * paced_secs))
[ "$ack_senders" -le "$clients" ] || ack_senders=$clients
deadline=$((120 + clients / 40 + paced_secs + ack_secs)) # per client process, seconds

out=${CARGO_TARGET_DIR:-target}/bench-peers
mkdir -p "$out"
results=$out/results.txt
: >"$results"
ulimit -n 20000 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((clients + 100)) ]; then
    echo "ulimit -n is $(ulimit -n): too few file descriptors for $clients clients" >&2
    exit 2
fi

if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin_server=(taskset -c 0)
    pin_client=(taskset -c 1)
    pinning="1-loop / 1-worker servers and Node on core 0, their load client on core 1"
else
    pin_server=()
    pin_client=()
    pinning="NOT pinned ($(nproc) core(s) or no taskset)"
fi

started=$(date +%s)
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
        stop_pids "$server_pid"
        server_pid=
    fi
}
trap stop_server EXIT

start_server() { # column; sets server_pid, or returns 1
    next_free_port
    local log=$out/$1.server.log
    local cmd
    case $1 in
        tidings-1) cmd=(TIDINGS_EVENT_LOOPS=1 "${pin_server[@]}" "$bin/bench_server") ;;
        tidings-2) cmd=(TIDINGS_EVENT_LOOPS=2 "$bin/bench_server") ;;
        sioxide-1) cmd=(WORKERS=1 "${pin_server[@]}" "$peer_bin") ;;
        sioxide-2) cmd=(WORKERS=2 "$peer_bin") ;;
        node) cmd=("${pin_server[@]}" node benches/peers/node/server.mjs) ;;
    esac
    # env and taskset exec what they run: $! is the server's own pid (read by the client in /proc).
    echo "== $(date -u +%T) port $port: ${cmd[*]}" >>"$log"
    env PORT="$port" "${cmd[@]}" >>"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "$1: the server did not start (see $log)" >&2
        stop_server
        return 1
    fi
    sleep 1 # let it settle before the baseline RSS is read
}

run_client() { # column run proto fanout_client-args...
    local col=$1 rep=$2 proto=$3
    shift 3
    local pin=("${pin_client[@]}") where="client on core 1"
    case $col in *-2) pin=() where="client shares both cores with the server" ;; esac
    [ ${#pin_client[@]} -gt 0 ] || where="not pinned"
    echo "-- run $rep/$runs ${title[$col]} $proto N=$clients ($where; load average: $(load))"
    timeout $((deadline + 30)) "${pin[@]}" "$client" --proto "$proto" --port "$port" \
        --clients "$clients" --server-pid "$server_pid" --label "$col" --hold 3 \
        --deadline "$deadline" "$@" |
        awk -v rep="$rep" '/^(IDLE|RESULT|ACKS) / { $0 = $0 " rep=" rep } { print; fflush() }' |
        tee -a "$results" || echo "$col: the client failed (status ${PIPESTATUS[0]})" >&2
}

for rep in $(seq "$runs"); do
    for col in $columns; do
        if start_server "$col"; then
            run_client "$col" "$rep" sio --run "warmup:20:$size:0" \
                --run "burst:$burst_count:$size:0" --run "paced:$paced_count:$size:$paced_rate" \
                --acks "$ack_senders:$ack_window:$ack_secs"
            stop_server
        fi
        case $col in
            tidings-*) if start_server "$col"; then
                run_client "$col" "$rep" sse
                stop_server
            fi ;;
        esac
    done
done

socketioxide_version=$(awk '/^name = "socketioxide"$/ { getline; gsub(/"/, "", $3); print $3 }' \
    benches/peers/socketioxide/Cargo.lock)
socketio_version=$(node -p 'require("./benches/peers/node/node_modules/socket.io/package.json").version' 2>/dev/null || echo "?")
echo
echo "== results: $clients clients, median of $runs run(s), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -r)"
echo "tidings $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples || echo '+changes'), socketioxide $socketioxide_version, socket.io $socketio_version on node $(node --version 2>/dev/null || echo '?')"
echo "pinning: $pinning; 2-loop / 2-worker servers unpinned, their load client shares both cores"
LC_ALL=C awk -v cols="$columns" -v runs="$runs" -v n="$clients" -v burst="$burst_count" \
    -v rate="$paced_rate" -v senders="$ack_senders" -v window="$ack_window" \
    -v titles="tidings-1=tidings 1 loop|tidings-2=tidings 2 loops|sioxide-1=socketioxide 1 worker|sioxide-2=socketioxide 2 workers|node=Node socket.io 4.8" '
# The lines are "KIND key=value ..."; vals[row, column] collects one value per run.
function kv(line,   i, m, a, p) { delete f; m = split(line, a, " "); for (i = 2; i <= m; i++) { split(a[i], p, "="); f[p[1]] = p[2] } }
function add(row, col, v) { if (v == "" || v ~ /^-?nan$/ || v ~ /^NaN$/) return; vals[row, col] = vals[row, col] (vals[row, col] == "" ? "" : " ") v }
function addload(row, l) { if (l == "") return; if (!(row in lmin) || l + 0 < lmin[row]) lmin[row] = l + 0; if (!(row in lmax) || l + 0 > lmax[row]) lmax[row] = l + 0 }
function sum(row, col, v) { sums[row, col] += v; has[col] = 1 }
function median(s,   a, m, i, j, t) {
    m = split(s, a, " "); if (m == 0) return ""
    for (i = 2; i <= m; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return m % 2 ? a[(m + 1) / 2] + 0 : (a[m / 2] + a[m / 2 + 1]) / 2
}
# One figure as the table prints it.
function show(row, v) {
    if (row == "sio" || row == "sse") return sprintf("%.2f", v / 1024)
    if (row == "burst") return sprintf("%.2f M", v / 1e6)
    if (row == "acks") return sprintf("%.0f k", v / 1e3)
    if (row == "bcpu" || row == "acpu") return sprintf("%.3f", v)
    if (row == "first") return sprintf("%.2f", v)
    return sprintf("%.1f", v)
}
function cell(row, col) {
    if (vals[row, col] == "") return (row == "sse" && col !~ /^tidings/) ? "n/a" : "?"
    return show(row, median(vals[row, col]))
}
function every(row, col,   a, m, i, s) { m = split(vals[row, col], a, " "); s = ""; for (i = 1; i <= m; i++) s = s (i > 1 ? ", " : "") show(row, a[i]); return s }
function pad(s, w,   t, extra) { t = s; extra = gsub(/[\200-\277]/, "", t); return sprintf(" %-" (w + extra) "s |", s) } # UTF-8 text, byte-counting awk
function loadcell(row) { return (row in lmin) ? (lmin[row] == lmax[row] ? lmin[row] : lmin[row] "-" lmax[row]) : "" }
function line(text, load,   i) { printf "|%s", pad(text, W); for (i = 1; i <= nc; i++) printf "%s", pad(v[i], CW); printf "%s\n", pad(load, 11) }
/^IDLE / { kv($0); c = f["label"]; add(f["proto"], c, f["bytes_per_conn"]); addload(f["proto"], f["load1"])
           if (f["proto"] == "sio") add("threads", c, f["threads"]) }
/^RESULT / { kv($0); c = f["label"]; r = f["run"]
             if (r == "burst") { add("burst", c, f["per_sec"]); add("bcpu", c, f["cpu_us_per_msg"]); add("first", c, f["first_ms"])
                                 addload("burst", f["load1"]); addload("bcpu", f["load1"]); addload("first", f["load1"])
                                 sum("lostb", c, f["lost"]); sum("dropped", c, f["dropped_conns"]) }
             if (r == "paced") { add("p50", c, f["p50_ms"]); add("p99", c, f["p99_ms"]); addload("paced", f["load1"])
                                 sum("lostp", c, f["lost"]); sum("dropped", c, f["dropped_conns"]) } }
/^ACKS / { kv($0); c = f["label"]; add("acks", c, f["per_sec"]); add("acpu", c, f["cpu_us_per_ack"])
           addload("acks", f["load1"]); addload("acpu", f["load1"])
           sum("losta", c, f["lost"] + f["mismatched"]); sum("dropped", c, f["dropped_conns"]) }
END {
    nc = split(cols, col, " "); nt = split(titles, tl, "|")
    for (i = 1; i <= nt; i++) { split(tl[i], p, "="); name[p[1]] = p[2] }
    W = 66; CW = 22
    for (i = 1; i <= nc; i++) v[i] = name[col[i]]
    line("figure", "load1")
    printf "|%s|", "--------------------------------------------------------------------"
    for (i = 1; i <= nc; i++) printf "%s|", "------------------------"; printf "%s|\n", "-------------"
    label["sio"] = "RSS per idle Socket.IO WebSocket connection, KiB"
    label["sse"] = "RSS per idle SSE stream, KiB"
    label["burst"] = sprintf("burst to all %d: deliveries/s", n)
    label["bcpu"] = "server CPU per delivery (burst), µs"
    label["paced"] = sprintf("steady %d deliveries/s (%d broadcasts/s to %d): p50 / p99 ms", rate * n, rate, n)
    label["p50"] = "steady: p50 ms"; label["p99"] = "steady: p99 ms"
    label["first"] = sprintf("first delivery of a %d-delivery burst (%d × %d), ms", burst * n, burst, n)
    label["acks"] = sprintf("acks/s (%d senders × %d in flight, %d connected)", senders, window, n)
    label["acpu"] = "server CPU per ack, µs"
    label["lost"] = "lost, all runs: burst / steady / acks; dropped conns"
    label["threads"] = "server threads (idle, 1st run)"
    m = split("sio sse burst bcpu paced first acks acpu lost threads", row, " ")
    for (k = 1; k <= m; k++) {
        rw = row[k]
        for (i = 1; i <= nc; i++) { c = col[i]
            if (rw == "paced") v[i] = cell("p50", c) " / " cell("p99", c)
            else if (rw == "threads") { split(vals[rw, c], t, " "); v[i] = (t[1] == "" ? "?" : t[1]) }
            else if (rw == "lost") v[i] = has[c] ? sprintf("%d / %d / %d; %d", sums["lostb", c], sums["lostp", c], sums["losta", c], sums["dropped", c]) : "?"
            else v[i] = cell(rw, c) }
        line(label[rw], loadcell(rw))
    }
    if (runs == 1) exit
    print ""
    print "every run, in order (the medians above are taken over these):"
    m = split("sio sse burst bcpu p50 p99 first acks acpu", row, " ")
    for (k = 1; k <= m; k++) {
        rw = row[k]; any = 0
        for (i = 1; i <= nc; i++) { v[i] = every(rw, col[i]); if (v[i] != "") any = 1 }
        if (any) line(label[rw], "")
    }
}' "$results" | tee "$out/table.txt"
cat <<EOF
RSS: server RSS growth over its pre-connection baseline / connections, after 3 s idle (tidings:
  examples/bench_server, anonymous connections). burst: $burst_count broadcasts of a ${size}-byte pad at full
  speed, deliveries/s from the client's request to the last receipt; CPU = server utime+stime over
  the run / deliveries (10 ms clock ticks). first delivery: from the server's first send (the
  smallest send stamp of the run) to the first receipt by any client. steady: $paced_count broadcasts at
  $paced_rate/s, latency from each tick's send stamp to its receipt. acks: a window of emits with ack per
  sender, a new emit per answer, over $ack_secs s after a 1 s warm-up; CPU = server utime+stime / acks.
  lost: ticks not delivered, acks not answered or answered wrong, connections dropped (sums).
load1: the 1-minute load average when those figures were taken (min-max over runs and columns).
Raw lines: $results; server logs: $out/*.server.log.
EOF

echo
echo "== stripped release binary sizes"
size_of() { stat -c %s "$1" 2>/dev/null || echo "?"; }
printf "%-40s %10s bytes\n" "tidings examples/demo" "$(size_of "$bin/demo")"
printf "%-40s %10s bytes\n" "tidings examples/bench_server" "$(size_of "$bin/bench_server")"
printf "%-40s %10s bytes\n" "socketioxide peer (same profile)" "$(size_of "$peer_bin")"
printf "%-40s %10s bytes (+ node_modules %s)\n" "node (runtime binary)" "$(size_of "$(command -v node)")" \
    "$(du -sh benches/peers/node/node_modules | cut -f1)"
echo "took $(($(date +%s) - started)) s"
