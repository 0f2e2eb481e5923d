#!/usr/bin/env bash
# The gateway's figures: stripped binary size, RSS idle and with N Socket.IO clients, and publish
# API throughput (single sends and batches) with those clients connected. The `gateway` build
# profile, 127.0.0.1 only; every phase is bounded in time.
#
#   scripts/gateway-bench.sh [clients] [seconds]      (defaults: 10000 clients, 10 s per run)
#
# The clients are `examples/idle_clients` (raw Socket.IO over WebSocket, client i with an HS256
# JWT for user u<i>, made here with Python's standard library); the load is `examples/api_load`
# (keep-alive POSTs to users picked across the clients). Prints one line per figure and the
# machine load.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
clients=${1:-10000}
seconds=${2:-10}
target=${CARGO_TARGET_DIR:-target}
key=bench-key

# The gateway as shipped: the `gateway` profile (release, optimised for size; see Cargo.toml).
cargo build --profile gateway --quiet --features gateway --bin tidings-gateway
cargo build --release --quiet --example idle_clients --example api_load
bin=$target/gateway/tidings-gateway
echo "binary: $(stat -c %s "$bin") bytes stripped ($(numfmt --to=iec "$(stat -c %s "$bin")"))"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
port=$((20000 + RANDOM % 20000))
api_port=$((port + 1))
log=$(mktemp -t tidings-gateway-bench.XXXXXX)
tokens=$(mktemp -t tidings-gateway-tokens.XXXXXX)
secret=bench-secret-0123456789abcdef-0123456789
python3 - "$clients" "$secret" >"$tokens" <<'PY'
import base64, hashlib, hmac, json, sys, time
count, secret = int(sys.argv[1]), sys.argv[2].encode()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
exp = int(time.time()) + 3600
for i in range(count):
    body = head + "." + b64(json.dumps({"sub": f"u{i}", "exp": exp}).encode())
    sig = b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    print(body + "." + sig)
PY
"$bin" --jwt-secret "$secret" --bind "127.0.0.1:$port" --api-bind "127.0.0.1:$api_port" \
    --api-keys "$key" --max-connections $((clients + 100)) --log-level warn 2>"$log" &
gateway=$!
holder=""
cleanup() {
    [[ -n "$holder" ]] && kill "$holder" 2>/dev/null || true
    kill "$gateway" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$log" "$tokens" /tmp/tidings-gateway-bench-clients.out
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$api_port") 2>/dev/null && break; sleep 0.1; done
sleep 0.5
echo "RSS idle: $(rss_kib $gateway) KiB"

# Hold the clients for the whole run: connect time plus three load runs plus margin.
hold=$((seconds * 3 + 60))
"$target/release/examples/idle_clients" --mode sio --count "$clients" --port "$port" --hold "$hold" \
    --tokens "$tokens" >/tmp/tidings-gateway-bench-clients.out &
holder=$!
for _ in $(seq 1200); do grep -q "open" /tmp/tidings-gateway-bench-clients.out 2>/dev/null && break; sleep 0.1; done
cat /tmp/tidings-gateway-bench-clients.out
sleep 1
echo "RSS with $clients Socket.IO clients: $(rss_kib $gateway) KiB"

for run in "1 4" "1 16" "50 4"; do
    set -- $run
    "$target/release/examples/api_load" --port "$api_port" --key "$key" --batch "$1" \
        --threads "$2" --seconds "$seconds" --users "$clients"
done
echo "RSS after the load: $(rss_kib $gateway) KiB"
echo "machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
