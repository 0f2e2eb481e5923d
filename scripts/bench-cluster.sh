#!/usr/bin/env bash
# The cluster benchmark: what Redis costs a tidings broadcast, and what spreading the clients over
# nodes does, side by side in one run, one table. It starts its own redis-server (127.0.0.1, a
# free port, no persistence) and measures, with N Socket.IO WebSocket clients in all (default
# 9 000):
#   1node         one examples/bench_server, standalone (no REDIS_URL), N clients;
#   1node-redis   one bench_server in cluster mode (REDIS_URL), N clients: Redis's own cost;
#   3nodes        three bench_servers in one cluster, N/3 clients each;
#   sioxide-3nodes  three socketioxide peers (benches/peers/socketioxide, `redis` feature:
#                 socketioxide-redis) on the same Redis, N/3 clients each;
#   sioxide-1node, sioxide-1node-redis (not in the default set): one socketioxide peer,
#                 standalone / on Redis, N clients.
# Each node has its own examples/fanout_client (one process per node, N/nodes clients); only the
# one on the first node asks for the bursts, the others are --listen-only and count what reaches
# their node. The figures, added up over the nodes:
#   - a full-speed burst of 1 M deliveries (1 000 000 / N broadcasts to all N): deliveries/s
#     (from the request to the last receipt on any node), server CPU per delivery (all nodes),
#     the first delivery (the server's first send to the first receipt anywhere),
#   - Redis bytes per broadcast over that burst (total_net_input_bytes / total_net_output_bytes
#     of INFO) next to the tick's size × nodes, and Redis CPU per broadcast,
#   - a steady 20 000 deliveries/s (20 000 / N broadcasts/s for 10 s): latency p50 / p99 (the
#     worst node's),
#   - what was lost (undelivered ticks, dropped connections).
# Each figure is the median of BENCH_RUNS runs (fresh servers and an emptied Redis for each), the
# runs interleaved across the columns; the load average is printed beside every row. Nothing is
# pinned: three nodes, Redis and three clients share the cores. A benchmark, never a test: it
# asserts nothing. Not run by CI. Everything on 127.0.0.1, every step bounded by a timeout.
#
#   scripts/bench-cluster.sh                                  full run (9 000 clients, 1 run)
#   BENCH_CLIENTS=900 scripts/bench-cluster.sh                quick check
# Other knobs: BENCH_RUNS (1), BENCH_COLUMNS (a subset of "1node 1node-redis 3nodes
# sioxide-3nodes sioxide-1node sioxide-1node-redis"), BENCH_PACED_SECS (10), BENCH_LOOPS (1: TIDINGS_EVENT_LOOPS of
# every tidings node, and WORKERS of every socketioxide node), BENCH_BUILD_SECS (2400, bound on
# each build), REDIS_SERVER (/usr/bin/redis-server). Set CARGO_TARGET_DIR to build into another
# directory; the socketioxide peer with the `redis` feature is built into its own directory
# under it (sioxide-redis/), so that scripts/bench-peers.sh keeps its build without the feature.
# Needs redis-server (Debian: apt-get install redis-server) and, for the first build, crates.io.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clients=${BENCH_CLIENTS:-9000}
runs=${BENCH_RUNS:-1}
columns=${BENCH_COLUMNS:-"1node 1node-redis 3nodes sioxide-3nodes"}
paced_secs=${BENCH_PACED_SECS:-10}
loops=${BENCH_LOOPS:-1}
build_secs=${BENCH_BUILD_SECS:-2400}
redis_server=${REDIS_SERVER:-/usr/bin/redis-server}

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
is_count BENCH_CLIENTS "$clients" 3 18000
is_count BENCH_RUNS "$runs" 1 99
is_count BENCH_PACED_SECS "$paced_secs" 1 600
is_count BENCH_LOOPS "$loops" 1 64
is_count BENCH_BUILD_SECS "$build_secs" 60 36000
declare -A title=(
    [1node]="1 node" [1node-redis]="1 node+redis" [3nodes]="3 nodes"
    [sioxide-3nodes]="sioxide 3 nodes" [sioxide-1node]="sioxide 1 node"
    [sioxide-1node-redis]="sioxide 1+redis"
)
declare -A nodes_of=([1node]=1 [1node-redis]=1 [3nodes]=3 [sioxide-3nodes]=3 [sioxide-1node]=1
    [sioxide-1node-redis]=1)
for c in $columns; do
    [ -n "${title[$c]:-}" ] || { echo "BENCH_COLUMNS: unknown column $c" >&2; exit 2; }
done
[ -x "$redis_server" ] || {
    echo "no $redis_server (Debian: apt-get install redis-server; or set REDIS_SERVER)" >&2
    exit 2
}

size=64                                      # pad bytes per tick (~120 bytes on the wire)
deliveries=1000000                           # the burst: deliveries / N broadcasts, full speed
burst_count=$((deliveries / clients))
steady=20000                                 # steady deliveries/s: rate broadcasts/s to all N
paced_rate=$(((steady + clients / 2) / clients))
[ "$paced_rate" -ge 1 ] || paced_rate=1
paced_count=$((paced_rate * paced_secs))
deadline=$((150 + clients / 40 + paced_secs)) # per client process, seconds

target=${CARGO_TARGET_DIR:-target}
out=$target/bench-cluster
mkdir -p "$out"
results=$out/results.txt
: >"$results"
rm -f "$out"/*.log
ulimit -n 20000 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((clients + 100)) ]; then
    echo "ulimit -n is $(ulimit -n): too few file descriptors for $clients clients" >&2
    exit 2
fi

started=$(date +%s)
bin=$target/release/examples
client=$bin/fanout_client
peer_target=$target/sioxide-redis
peer_bin=$peer_target/release/bench-peer-socketioxide
echo "== build (release, --features redis)"
timeout "$build_secs" cargo build --release --quiet --features redis \
    --example bench_server --example fanout_client
sioxide_ok=1
case " $columns " in
    *" sioxide-"*)
        echo "== build the socketioxide peer with socketioxide-redis (into $peer_target)"
        if ! timeout "$build_secs" cargo build --release --quiet --features redis \
            --manifest-path benches/peers/socketioxide/Cargo.toml --target-dir "$peer_target" \
            >"$out/sioxide-build.log" 2>&1; then
            sioxide_ok=0
            echo "the socketioxide peer did not build (see $out/sioxide-build.log): its columns are skipped" >&2
        fi
        ;;
esac

# Everything this script starts, by pid: stopped at the end whatever happens.
pids=()
redis_pid=
cleanup() {
    [ ${#pids[@]} -eq 0 ] || stop_pids "${pids[@]}"
    [ -z "$redis_pid" ] || stop_pids "$redis_pid"
}
trap cleanup EXIT

wait_port() { # port pid: up to 10 s for the port to accept while pid lives
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

echo "== redis-server"
next_free_port
redis_port=$port
redis_url="redis://127.0.0.1:$redis_port/"
# exec: $! is redis-server itself.
"$redis_server" --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --daemonize no --logfile "$out/redis.log" --dir "$out" >/dev/null 2>&1 &
redis_pid=$!
if ! wait_port "$redis_port" "$redis_pid"; then
    echo "redis-server did not start (see $out/redis.log)" >&2
    exit 1
fi
redis_cli() { timeout 10 redis-cli -p "$redis_port" "$@"; }
redis_version=$(redis_cli INFO server | tr -d '\r' | awk -F: '/^redis_version:/ { print $2 }')
echo "redis $redis_version on 127.0.0.1:$redis_port (pid $redis_pid)"

node_pids=()
node_ports=()
start_nodes() { # column: starts its nodes, sets node_pids / node_ports, or returns 1
    local col=$1 n=${nodes_of[$1]} k cmd log
    node_pids=()
    node_ports=()
    for k in $(seq "$n"); do
        next_free_port
        log=$out/$col.node$k.log
        case $col in
            1node) cmd=(env TIDINGS_EVENT_LOOPS="$loops" "$bin/bench_server") ;;
            1node-redis | 3nodes)
                cmd=(env TIDINGS_EVENT_LOOPS="$loops" REDIS_URL="$redis_url" "$bin/bench_server") ;;
            sioxide-1node) cmd=(env WORKERS="$loops" "$peer_bin") ;;
            sioxide-3nodes | sioxide-1node-redis)
                cmd=(env WORKERS="$loops" REDIS_URL="$redis_url" "$peer_bin") ;;
        esac
        echo "== $(date -u +%T) port $port: ${cmd[*]}" >>"$log"
        # env execs what it runs: $! is the server's own pid (read by the client in /proc).
        env PORT="$port" "${cmd[@]}" >>"$log" 2>&1 &
        node_pids+=($!)
        pids+=($!)
        node_ports+=("$port")
    done
    for k in $(seq 0 $((n - 1))); do
        if ! wait_port "${node_ports[$k]}" "${node_pids[$k]}"; then
            echo "$col: node $((k + 1)) did not start (see $out/$col.node$((k + 1)).log)" >&2
            stop_nodes
            return 1
        fi
    done
    sleep 1 # let them settle (and join the bus)
}
stop_nodes() {
    [ ${#node_pids[@]} -eq 0 ] || stop_pids "${node_pids[@]}"
    node_pids=()
    # What the nodes kept in Redis (numbers, history, rooms) goes: every run starts afresh.
    redis_cli FLUSHALL >/dev/null || echo "redis FLUSHALL failed" >&2
}

tag() { # node: marks the figures lines with the run and the node
    awk -v rep="$rep" -v node="$1" '/^(IDLE|RESULT|ACKS) / { $0 = $0 " rep=" rep " node=" node } { print; fflush() }'
}

run_column() { # column run
    local col=$1 rep=$2 n=${nodes_of[$1]} per k
    per=$((clients / n))
    local runs_args=(--run "warmup:20:$size:0" --run "burst:$burst_count:$size:0"
        --run "paced:$paced_count:$size:$paced_rate")
    echo "-- run $rep/$runs ${title[$col]}: $n node(s) x $per clients (load average: $(load))"
    # The listeners (nodes 2..n) first; the asking client once they are all connected.
    local lpids=() lfiles=()
    for k in $(seq 2 "$n"); do
        local f=$out/$col.client$k.log
        lfiles+=("$f")
        # Started first, so a longer deadline than the asking client's.
        timeout $((deadline + 90)) "$client" --proto sio --port "${node_ports[$((k - 1))]}" \
            --clients "$per" --server-pid "${node_pids[$((k - 1))]}" --label "$col" --hold 0 \
            --deadline $((deadline + 60)) --listen-only "${runs_args[@]}" >"$f" 2>&1 &
        lpids+=($!)
        pids+=($!)
    done
    local f all
    for _ in $(seq $((1200 + per / 5))); do # 0.1 s steps: 2 min + 1 s per 50 clients
        all=1
        for f in "${lfiles[@]}"; do grep -q "receivers connected" "$f" 2>/dev/null || all=0; done
        [ "$all" -eq 1 ] && break
        sleep 0.1
    done
    [ "$all" -eq 1 ] || echo "$col: a listener did not connect in time (see ${lfiles[*]})" >&2
    timeout $((deadline + 30)) "$client" --proto sio --port "${node_ports[0]}" --clients "$per" \
        --server-pid "${node_pids[0]}" --label "$col" --hold 3 --deadline "$deadline" \
        --redis-port "$redis_port" "${runs_args[@]}" | tag 1 | tee -a "$results" ||
        echo "$col: the asking client failed (status ${PIPESTATUS[0]})" >&2
    # The listeners end after their last run (a listener whose node lost ticks waits 0.5 s
    # more); they are not waited for longer than 30 s.
    for k in $(seq 2 "$n"); do
        local lp=${lpids[$((k - 2))]}
        for _ in $(seq 300); do kill -0 "$lp" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$lp" 2>/dev/null; then
            echo "$col: listener $k still running, stopped" >&2
            stop_pids "$lp"
        else
            wait "$lp" 2>/dev/null || echo "$col: listener $k failed (see ${lfiles[$((k - 2))]})" >&2
        fi
        tag "$k" <"${lfiles[$((k - 2))]}" | grep -E '^(RESULT|IDLE) ' | tee -a "$results" || true
    done
}

for rep in $(seq "$runs"); do
    for col in $columns; do
        case $col in sioxide-*) [ "$sioxide_ok" -eq 1 ] || continue ;; esac
        if start_nodes "$col"; then
            run_column "$col" "$rep"
            stop_nodes
        fi
    done
done

socketioxide_version=$(awk '/^name = "socketioxide"$/ { getline; gsub(/"/, "", $3); print $3 }' \
    benches/peers/socketioxide/Cargo.lock)
sioxide_redis_version=$(awk '/^name = "socketioxide-redis"$/ { getline; gsub(/"/, "", $3); print $3 }' \
    benches/peers/socketioxide/Cargo.lock)
echo
echo "== results: $clients clients in all, median of $runs run(s), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -r)"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD -- src examples benches 2>/dev/null || commit="$commit+changes"
echo "tidings $commit ($loops event loop(s) per node), redis-server $redis_version, socketioxide ${socketioxide_version:-?} + socketioxide-redis ${sioxide_redis_version:-?} ($loops worker(s) per node)"
echo "not pinned: the nodes, Redis and the clients share the $(nproc) cores"
LC_ALL=C awk -v cols="$columns" -v runs="$runs" -v n="$clients" -v burst="$burst_count" \
    -v rate="$paced_rate" -v nodes="1node=1|1node-redis=1|3nodes=3|sioxide-3nodes=3|sioxide-1node=1|sioxide-1node-redis=1" \
    -v titles="1node=1 node|1node-redis=1 node+redis|3nodes=3 nodes|sioxide-3nodes=sioxide 3 nodes|sioxide-1node=sioxide 1 node|sioxide-1node-redis=sioxide 1+redis" '
function kv(line,   i, m, a, p) { delete f; m = split(line, a, " "); for (i = 2; i <= m; i++) { split(a[i], p, "="); f[p[1]] = p[2] } }
function num(v) { return v != "" && v != "?" && v !~ /nan/ }
function add(row, col, v) { if (!num(v)) return; vals[row, col] = vals[row, col] (vals[row, col] == "" ? "" : " ") v }
function addload(row, l) { if (l == "") return; if (!(row in lmin) || l + 0 < lmin[row]) lmin[row] = l + 0; if (!(row in lmax) || l + 0 > lmax[row]) lmax[row] = l + 0 }
function median(s,   a, m, i, j, t) {
    m = split(s, a, " "); if (m == 0) return ""
    for (i = 2; i <= m; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return m % 2 ? a[(m + 1) / 2] + 0 : (a[m / 2] + a[m / 2 + 1]) / 2
}
function show(row, v) {
    if (row == "burst") return sprintf("%.2f M", v / 1e6)
    if (row == "bcpu" || row == "rcpu") return sprintf("%.3f", v)
    if (row == "first" || row == "p50" || row == "p99") return sprintf("%.2f", v)
    return sprintf("%.0f", v)
}
function cell(row, col) { return vals[row, col] == "" ? "?" : show(row, median(vals[row, col])) }
function every(row, col,   a, m, i, s) { m = split(vals[row, col], a, " "); s = ""; for (i = 1; i <= m; i++) s = s (i > 1 ? ", " : "") show(row, a[i]); return s }
function pad(s, w,   t, extra) { t = s; extra = gsub(/[\200-\277]/, "", t); return sprintf(" %-" (w + extra) "s |", s) }
function loadcell(row) { return (row in lmin) ? (lmin[row] == lmax[row] ? lmin[row] : lmin[row] "-" lmax[row]) : "" }
function line(text, load,   i) { printf "|%s", pad(text, W); for (i = 1; i <= nc; i++) printf "%s", pad(v[i], CW); printf "%s\n", pad(load, 11) }
# One (run, column, repetition) is the sum over its nodes; the asking client (acked != none)
# gives the request time and the Redis figures.
/^RESULT / {
    kv($0); k = f["run"] SUBSEP f["label"] SUBSEP f["rep"]; keys[k] = 1
    recv[k] += f["received"]; lost[k] += f["lost"]; dropped[k] += f["dropped_conns"];
    if (num(f["server_cpu_s"])) cpu[k] += f["server_cpu_s"]; else cpu_missing[k] = 1
    if (f["last_us"] + 0 > last[k] + 0) last[k] = f["last_us"]
    if (num(f["first_ms"]) && (!(k in first) || f["first_ms"] + 0 < first[k])) first[k] = f["first_ms"] + 0
    if (num(f["p50_ms"]) && f["p50_ms"] + 0 > p50[k] + 0) p50[k] = f["p50_ms"] + 0
    if (num(f["p99_ms"]) && f["p99_ms"] + 0 > p99[k] + 0) p99[k] = f["p99_ms"] + 0
    if (num(f["tick_bytes"])) tick[k] = f["tick_bytes"]
    if (f["load1"] > load1[k]) load1[k] = f["load1"]
    nodes_seen[k]++
    if (f["acked"] != "none") { start[k] = f["start_us"]; count[k] = f["count"]
        rin[k] = f["redis_in_bytes"]; rout[k] = f["redis_out_bytes"]; rcpu[k] = f["redis_cpu_s"]; rconn[k] = f["redis_conns"] }
}
END {
    nc = split(cols, col, " "); nt = split(titles, tl, "|")
    for (i = 1; i <= nt; i++) { split(tl[i], p, "="); name[p[1]] = p[2] }
    split(nodes, nl, "|"); for (i in nl) { split(nl[i], p, "="); nn[p[1]] = p[2] }
    for (k in keys) {
        split(k, q, SUBSEP); r = q[1]; c = q[2]
        if (r == "burst") {
            if (k in start && last[k] > start[k]) add("burst", c, recv[k] / ((last[k] - start[k]) / 1e6))
            if (!(k in cpu_missing) && recv[k] > 0) add("bcpu", c, cpu[k] * 1e6 / recv[k])
            if (k in first) add("first", c, first[k])
            if (count[k] > 0) {
                if (num(rin[k])) add("rin", c, rin[k] / count[k])
                if (num(rout[k])) add("rout", c, rout[k] / count[k])
                if (num(rcpu[k])) add("rcpu", c, rcpu[k] * 1e6 / count[k])
            }
            if (num(rconn[k])) add("rconn", c, rconn[k])
            if (k in tick) add("tick", c, tick[k] * nn[c])
            addload("burst", load1[k]); addload("redis", load1[k])
            lostb[c] += lost[k]; has[c] = 1
            if (nodes_seen[k] < nn[c]) missing[c] += nn[c] - nodes_seen[k]
        }
        if (r == "paced") {
            if (k in p50 && recv[k] > 0) add("p50", c, p50[k])
            if (k in p99 && recv[k] > 0) add("p99", c, p99[k])
            addload("paced", load1[k]); lostp[c] += lost[k]; has[c] = 1
            if (nodes_seen[k] < nn[c]) missing[c] += nn[c] - nodes_seen[k]
        }
        drop[c] += dropped[k]
    }
    W = 66; CW = 18
    for (i = 1; i <= nc; i++) v[i] = name[col[i]]
    line("figure", "load1")
    printf "|%s|", "--------------------------------------------------------------------"
    for (i = 1; i <= nc; i++) printf "%s|", "--------------------"; printf "%s|\n", "-------------"
    label["burst"] = sprintf("burst of %d × %d, all nodes: deliveries/s", burst, n)
    label["bcpu"] = "server CPU per delivery (burst, all nodes), µs"
    label["first"] = "first delivery of the burst (first send -> first receipt), ms"
    label["rin"] = "Redis bytes in per broadcast (burst)"
    label["rout"] = "Redis bytes out per broadcast (burst)"
    label["tick"] = "  next to: tick size × nodes, bytes"
    label["rcpu"] = "Redis CPU per broadcast (burst), µs"
    label["rconn"] = "Redis connections opened over the burst (0 expected)"
    label["paced"] = sprintf("steady %d/s (%d broadcasts/s): p50 / p99 ms, worst node", rate * n, rate)
    label["lost"] = "lost, all runs: burst / steady; dropped conns; missing nodes"
    m = split("burst bcpu first rin rout tick rcpu rconn paced lost", row, " ")
    for (j = 1; j <= m; j++) {
        rw = row[j]
        for (i = 1; i <= nc; i++) { c = col[i]
            if (rw == "paced") v[i] = cell("p50", c) " / " cell("p99", c)
            else if (rw == "lost") v[i] = has[c] ? sprintf("%d / %d; %d; %d", lostb[c], lostp[c], drop[c], missing[c]) : "?"
            else if ((rw == "rin" || rw == "rout" || rw == "rcpu" || rw == "rconn") && nn[c] == 1 && c !~ /redis/) v[i] = "(" cell(rw, c) ")"
            else v[i] = cell(rw, c) }
        ld = (rw == "burst" || rw == "bcpu" || rw == "first") ? "burst" : (rw == "paced" || rw == "lost") ? "paced" : "redis"
        line(label[rw], rw == "lost" ? "" : loadcell(ld))
    }
    if (runs == 1) exit
    print ""
    print "every run, in order (the medians above are taken over these):"
    m = split("burst bcpu first rin rout rcpu p50 p99", row, " ")
    label["p50"] = "steady: p50 ms (worst node)"; label["p99"] = "steady: p99 ms (worst node)"
    for (j = 1; j <= m; j++) { rw = row[j]; for (i = 1; i <= nc; i++) v[i] = every(rw, col[i]); line(label[rw], "") }
}' "$results" | tee "$out/table.txt"
cat <<EOF
burst: $burst_count broadcasts of a ${size}-byte pad at full speed, asked of node 1; deliveries/s = the
  deliveries on all nodes / (last receipt on any node - the request). CPU = utime+stime of every
  node over its client's run (a listener's run starts when it begins to wait for the first tick)
  / deliveries (10 ms clock ticks). first delivery: from the server's first send (the smallest
  send stamp) to the first receipt on any node. Redis: INFO total_net_input_bytes /
  total_net_output_bytes and used_cpu_sys+user, from just before the request to 1 s after the
  burst, less the INFO calls, / broadcasts; "tick size × nodes" is what the payload alone would
  cost to send once to each node (a Socket.IO tick packet as received). Connections: what Redis
  accepted meanwhile, the client's INFO calls aside: a node that reconnects (and loads its script
  again) inflates the bytes in. Standalone columns (in brackets) show what reached Redis anyway
  (nothing but noise). steady: $paced_count broadcasts at $paced_rate/s, latency from each tick's send
  stamp to its receipt; the worst node's p50 and p99.
  lost: ticks not delivered, connections dropped, nodes whose client reported nothing (sums).
load1: the 1-minute load average when those figures were taken (min-max over runs and columns).
Raw lines: $results; logs: $out/*.log.
EOF
echo "took $(($(date +%s) - started)) s"
