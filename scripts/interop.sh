#!/usr/bin/env bash
# Run the Node interop tests (tests/interop/*.test.mjs: official engine.io / socket.io / eventsource
# clients) against the `interop` example (examples/interop.rs: Socket.IO, SSE on /events, the unified
# API through `ctl:*` events, and the raw /engine.io/ echo), on 127.0.0.1 and a free port; and its
# second server, the same with connection state recovery on (tests/interop/recovery.test.mjs), on
# another free port. Some files start servers of their own: browser.test.mjs (the demo, from the
# example and from the gateway's --demo), gateway.test.mjs (the tidings-gateway binary, built
# here too), cluster.test.mjs (a redis-server and three interop nodes) and adapter.test.mjs (a
# redis-server, a Node socket.io server on `@socket.io/redis-adapter` and an interop node of its
# cluster); the examples are built with `--features redis` for those two, which must find
# `redis-server`.
#
# Usage: scripts/interop.sh [extra `node --test` arguments, e.g. tests/interop/engineio.test.mjs]
# Environment: SERVER_CMD overrides the server command (it gets PORT and RECOVERY_PORT; must listen
#              on 127.0.0.1 on both, the recovery server on RECOVERY_PORT).
#              INTEROP_BIN overrides the interop binary cluster.test.mjs and adapter.test.mjs run
#              as their nodes (and the default SERVER_CMD); it must be built with `--features redis`.
#              INTEROP_TIMEOUT bounds the whole node run in seconds (default 600).
# The tests get the servers' addresses as TIDINGS_URL and TIDINGS_RECOVERY_URL, and the interop
# example's path as INTEROP_BIN. REDIS_URL and REDIS_PREFIX are cleared: the shared servers are
# standalone (cluster.test.mjs starts its own Redis and nodes).
# Exit status: node's (non-zero also when the build or the server start fails).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
interop=tests/interop

server_pid=""
log=$(mktemp -t tidings-interop-server.XXXXXX)
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unset REDIS_URL REDIS_PREFIX

# The gateway binary is for tests/interop/gateway.test.mjs and the browser test of its --demo.
cargo build --features gateway --bin tidings-gateway
# The examples with the cluster compiled in (cluster.test.mjs makes nodes of them with REDIS_URL;
# without it they are the standalone servers the other files use).
cargo build --features redis --example interop --example demo
INTEROP_BIN="${INTEROP_BIN:-$(cd "${CARGO_TARGET_DIR:-$repo_root/target}" && pwd)/debug/examples/interop}"
export INTEROP_BIN
if [[ -z "${SERVER_CMD:-}" ]]; then
    SERVER_CMD="$INTEROP_BIN"
fi

if [[ ! -d "$interop/node_modules" ]]; then
    (cd "$interop" && npm ci --no-audit --no-fund)
fi

# Ask the kernel for two free loopback ports (bind both to 0 at once, so they differ); there is a
# small window before the server binds them, which is fine on a test machine.
read -r port recovery_port < <(node -e '
  const net = require("net");
  const a = net.createServer(), b = net.createServer();
  a.listen(0, "127.0.0.1", () => b.listen(0, "127.0.0.1", () => {
    console.log(a.address().port, b.address().port);
    a.close();
    b.close();
  }));') || true
if [[ -z "${port:-}" || -z "${recovery_port:-}" ]]; then
    echo "interop: could not pick two free ports" >&2
    exit 1
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

PORT=$port RECOVERY_PORT=$recovery_port bash -c "exec $SERVER_CMD" >"$log" 2>&1 &
server_pid=$!
deadline=$((SECONDS + 20))
for p in "$port" "$recovery_port"; do
    until port_open "$p"; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "interop: server exited before listening on $p; its output:" >&2
            cat "$log" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "interop: server did not listen on 127.0.0.1:$p within 20 s (PORT=$port," \
                "RECOVERY_PORT=$recovery_port); its output:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
done

if [[ $# -eq 0 ]]; then
    set -- "$interop/"
fi
status=0
# --test-force-exit: a client stuck on a hung server (engine.io-client does not abort a pending
# poll on close()) must not keep the run alive once every test has reported. `timeout` bounds the
# whole run (every wait inside the tests is bounded too; this catches anything they miss).
# --test-concurrency=1: the files share one server (recovery.test.mjs has the other to itself),
# and some checks read server-wide state (`ctl:stats` pendingAcks must be 0 after the ack tests),
# so they run one file at a time.
TIDINGS_URL="http://127.0.0.1:$port" TIDINGS_RECOVERY_URL="http://127.0.0.1:$recovery_port" \
    timeout --kill-after=10 "${INTEROP_TIMEOUT:-600}" \
    node --test --test-force-exit --test-concurrency=1 "$@" || status=$?
if [[ $status -eq 124 ]]; then
    echo "interop: node --test did not finish within ${INTEROP_TIMEOUT:-600} s" >&2
fi

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "interop: the server exited during the tests; its output:" >&2
    tail -n 50 "$log" >&2
    [[ $status -eq 0 ]] && status=1
elif [[ $status -ne 0 ]]; then
    echo "interop: server output (last 50 lines):" >&2
    tail -n 50 "$log" >&2
fi
exit "$status"
