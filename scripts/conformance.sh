#!/usr/bin/env bash
# Run the official Engine.IO v4 and Socket.IO v5 protocol test suites (from the socketio/socket.io
# repository, never committed here) against `examples/conformance.rs`. Local use only; CI does not
# run this.
#
# Usage:
#   scripts/conformance.sh [--prepare-only] <socket.io git dir | checkout | dir with docs/> [suite...]
#     suite: engine.io | socket.io (default: both)
#
# Environment:
#   CONFORMANCE_DIR  where the suites are extracted and npm-installed (default: a temp dir, removed
#                    on exit). An existing, already installed dir is reused as is.
#   SERVER_CMD       command that starts the server under test on 127.0.0.1:3000 (default: the
#                    debug build of the `conformance` example, built first). Lets you check the
#                    suites against the reference Node server.
#   MOCHA_ARGS       extra mocha arguments, e.g. MOCHA_ARGS='--grep heartbeat'.
#
# The suites hard-code http://localhost:3000, so the port is fixed; the script refuses to start if
# something already listens there (a stale server would give misleading results).
set -euo pipefail

prepare_only=0
if [[ "${1:-}" == "--prepare-only" ]]; then
    prepare_only=1
    shift
fi
if [[ $# -lt 1 ]]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
src=$1
shift
suites=("$@")
[[ ${#suites[@]} -eq 0 ]] && suites=(engine.io socket.io)

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=3000
eio_rel=docs/engine.io-protocol/v4-test-suite
sio_rel=docs/socket.io-protocol/v5-test-suite

server_pid=""
tmp_created=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "$tmp_created" ]]; then
        rm -rf "$tmp_created"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "${CONFORMANCE_DIR:-}" ]]; then
    work=$CONFORMANCE_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d -t tidings-conformance.XXXXXX)
    tmp_created=$work
fi
work=$(cd "$work" && pwd)

# --- extract -----------------------------------------------------------------------------------
extract() {
    local rel=$1
    if [[ -f "$work/$rel/package.json" ]]; then
        return 0
    fi
    echo "extracting $rel into $work" >&2
    if [[ -d "$src/$rel" ]]; then
        mkdir -p "$work/$rel"
        cp -R "$src/$rel/." "$work/$rel/"
    elif git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
        # A bare mirror or a checkout: take the committed subtree at HEAD (archiving the subtree
        # rather than a pathspec keeps git from touching objects a partial mirror lacks).
        git -C "$src" archive --prefix="$rel/" "HEAD:$rel" | tar -x -C "$work"
    else
        echo "error: $src is neither a git repository nor a directory containing $rel" >&2
        exit 2
    fi
}
extract "$eio_rel"
extract "$sio_rel"
if [[ -d "$src" ]] && git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$src" log -1 --format='%H %cs' >"$work/SOURCE_COMMIT" 2>/dev/null || true
fi

# --- install each suite's own devDependencies (their package-lock.json) -------------------------
install_suite() {
    local dir="$work/$1"
    if [[ -d "$dir/node_modules/mocha" ]]; then
        return 0
    fi
    echo "installing $1" >&2
    (cd "$dir" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; }) >&2
}
install_suite "$eio_rel"
install_suite "$sio_rel"

if [[ $prepare_only -eq 1 ]]; then
    echo "suites ready in $work" >&2
    exit 0
fi

# --- server ------------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

if port_open; then
    echo "error: something already listens on 127.0.0.1:$port; stop it first" >&2
    exit 2
fi

if [[ -z "${SERVER_CMD:-}" ]]; then
    (cd "$repo_root" && cargo build --example conformance) >&2
    SERVER_CMD="$repo_root/target/debug/examples/conformance"
fi

start_server() {
    local log=$1
    PORT=$port bash -c "exec $SERVER_CMD" >"$log" 2>&1 &
    server_pid=$!
    local deadline=$((SECONDS + 20))
    until port_open; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "error: server exited before listening; log:" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "error: server did not listen on $port within 20 s" >&2
            exit 1
        fi
        sleep 0.1
    done
}

stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
    # Wait for the port to be released before the next suite starts a fresh server.
    local deadline=$((SECONDS + 10))
    while port_open && ((SECONDS < deadline)); do sleep 0.1; done
}

# --- run ---------------------------------------------------------------------------------------
total_pass=0
total_fail=0
summary=()
for suite in "${suites[@]}"; do
    case $suite in
        engine.io) rel=$eio_rel ;;
        socket.io) rel=$sio_rel ;;
        *)
            echo "error: unknown suite '$suite' (engine.io | socket.io)" >&2
            exit 2
            ;;
    esac
    log="$work/server-$suite.log"
    out="$work/mocha-$suite.txt"
    echo "=== $suite ($rel) ===" >&2
    # A fresh server per suite, so one suite's leftovers cannot fail the other.
    start_server "$log"
    # Their package.json: "test": "mocha test-suite.js" (default spec reporter).
    # shellcheck disable=SC2086
    (cd "$work/$rel" && npx --no-install mocha ${MOCHA_ARGS:-} test-suite.js) 2>&1 | tee "$out" || true
    alive=yes
    kill -0 "$server_pid" 2>/dev/null || alive=no
    stop_server
    pass=$(grep -Eo '^ *[0-9]+ passing' "$out" | grep -Eo '[0-9]+' || echo 0)
    fail=$(grep -Eo '^ *[0-9]+ failing' "$out" | grep -Eo '[0-9]+' || echo 0)
    if [[ $pass -eq 0 && $fail -eq 0 ]]; then
        fail=1 # mocha did not get to its summary: count the suite as failed
    fi
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
    line="$suite: $pass passed, $fail failed"
    [[ $alive == no ]] && line="$line (server exited during the suite; see $log)"
    summary+=("$line")
done

echo
for line in "${summary[@]}"; do echo "$line"; done
echo "conformance: $total_pass passed, $total_fail failed"
if [[ -n "$tmp_created" ]]; then
    echo "(logs were in $work, removed on exit; set CONFORMANCE_DIR to keep them)"
else
    echo "logs: $work/server-*.log, $work/mocha-*.txt"
fi
[[ $total_fail -eq 0 ]]
