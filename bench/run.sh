#!/usr/bin/env bash
# The benchmark harness: runs our server (examples/bench.rs) and the tokio-tungstenite baseline
# (bench/src/bin/baseline.rs) alternately, server pinned to CPU 0 and load client to CPU 1, and
# prints a table of medians with the ratio ours/baseline. Results: one JSON line per run in
# target/bench/results.jsonl (read by bench/summarize.py, which also draws target/bench/chart.svg).
#
#   bash bench/run.sh                 # full: 3 rounds, 10 s per measurement, 10,000 idle connections
#   bash bench/run.sh --rounds 5 --seconds 20
#   bash bench/run.sh --smoke         # seconds, for CI: the harness still works
#
# Rows `mtN-*` run both servers on tokio's multi-thread runtime with N workers (`--workers N`).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seconds=10 idle=10000 big=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        --smoke) rounds=1 seconds=1 idle=200 big=200; shift ;;
        *) echo "usage: bench/run.sh [--rounds N] [--seconds S] [--idle N] [--smoke]" >&2; exit 2 ;;
    esac
done

cargo build --quiet --release --example bench
cargo build --quiet --release -p channels-bench --bin load --bin baseline --bin fastws
bin=target/release
out=target/bench
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

# CPU pinning when taskset exists (util-linux); `taskset` execs its command, so `$!` is the server.
if command -v taskset >/dev/null; then pin0=(taskset -c 0) pin1=(taskset -c 1); else pin0=() pin1=(); fi

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    return 1
}

load() { "${pin1[@]}" "$bin/load" "$@" >> "$results"; }

for round in $(seq "$rounds"); do
    for server in ours baseline; do
        if [ "$server" = ours ]; then port=$((18000 + round * 10)); else port=$((18001 + round * 10)); fi
        if [ "$server" = ours ]; then
            "${pin0[@]}" "$bin/examples/bench" --addr "127.0.0.1:$port" --print-cookie > "$out/cookie" 2>/dev/null &
        else
            "${pin0[@]}" "$bin/baseline" --addr "127.0.0.1:$port" 2>/dev/null &
        fi
        pid=$!
        wait_port "$port"
        cookie=$(head -n1 "$out/cookie" 2>/dev/null || true)
        [ -n "$cookie" ] || cookie="sessionid=baseline-only-checks-presence"
        common=(--addr "127.0.0.1:$port" --server-pid "$pid" --seconds "$seconds")
        load --mode echo --path /ws/echo/ --connections 100 --label "$server echo-100" "${common[@]}"
        load --mode echo --path /ws/echo/ --connections "$big" --label "$server echo-$big" "${common[@]}"
        if [ "$server" = ours ]; then
            load --mode handshake --path /ws/auth-echo/ --cookie "$cookie" --connections 8 --label "$server handshake" "${common[@]}"
        else
            load --mode handshake --path /ws/echo/ --connections 8 --label "$server handshake" "${common[@]}"
        fi
        load --mode broadcast --path /ws/broadcast/ --connections 100 --label "$server broadcast-100" "${common[@]}"
        load --mode broadcast --path /ws/broadcast/ --connections "$big" --label "$server broadcast-$big" "${common[@]}"
        load --mode broadcast-closed --path /ws/broadcast/ --connections 100 --label "$server broadcast-closed-100" "${common[@]}"
        load --mode idle --path /ws/auth-echo/ --cookie "$cookie" --connections "$idle" --label "$server idle-$idle" \
            --addr "127.0.0.1:$port" --server-pid "$pid" --seconds 2
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
    # Tokio's default runtime (`#[tokio::main]`), one and two worker threads on the server's one
    # core: echo and broadcast at $big connections, both servers (issue 17's fairness rows).
    for workers in 1 2; do
        for server in ours baseline; do
            port=$((18003 + round * 10 + workers * 2)); [ "$server" = baseline ] && port=$((port + 1))
            if [ "$server" = ours ]; then
                "${pin0[@]}" "$bin/examples/bench" --addr "127.0.0.1:$port" --workers "$workers" 2>/dev/null &
            else
                "${pin0[@]}" "$bin/baseline" --addr "127.0.0.1:$port" --workers "$workers" 2>/dev/null &
            fi
            pid=$!
            wait_port "$port"
            common=(--addr "127.0.0.1:$port" --server-pid "$pid" --seconds "$seconds")
            load --mode echo --path /ws/echo/ --connections "$big" --label "$server mt$workers-echo-$big" "${common[@]}"
            load --mode broadcast --path /ws/broadcast/ --connections "$big" --label "$server mt$workers-broadcast-$big" "${common[@]}"
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        done
    done
    # The second baseline, deno's fastwebsockets: echo only (the bar for CPU per message).
    port=$((18002 + round * 10))
    "${pin0[@]}" "$bin/fastws" --addr "127.0.0.1:$port" 2>/dev/null &
    pid=$!
    wait_port "$port"
    common=(--addr "127.0.0.1:$port" --server-pid "$pid" --seconds "$seconds")
    load --mode echo --path /ws/echo/ --connections 100 --label "fastws echo-100" "${common[@]}"
    load --mode echo --path /ws/echo/ --connections "$big" --label "fastws echo-$big" "${common[@]}"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done

python3 bench/summarize.py "$results" "$out/chart.svg"
