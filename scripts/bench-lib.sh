# Shell helpers shared by the benchmark scripts (bench-peers.sh, bench-cluster.sh); sourced, not
# run. 127.0.0.1 only; every wait bounded.

# is_count NAME VALUE MIN MAX: VALUE is a whole number in [MIN, MAX], or the script stops.
is_count() { [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || {
    echo "$1=$2: expected a number from $3 to $4" >&2
    exit 2
}; }

# stop_pids PID...: TERM to all, up to 5 s each to go, then KILL.
stop_pids() {
    local p
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

# next_free_port: sets `port` to the next port after it that nothing listens on. Start it below
# the ephemeral range (the clients' own ports come from there).
port=$((20000 + RANDOM % 10000))
next_free_port() {
    for _ in $(seq 200); do
        port=$((port + 1))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    done
    echo "no free port" >&2
    exit 1
}

# load: the load averages, for the tables.
load() { cut -d' ' -f1-3 /proc/loadavg; }
