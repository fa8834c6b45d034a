#!/usr/bin/env bash
# The benchmark harness: runs our server (examples/bench.rs), the tokio-tungstenite baseline
# (bench/src/bin/baseline.rs) and fastwebsockets (bench/src/bin/fastws.rs) side by side, servers
# pinned to CPU 0 and the load client to CPU 1, each measurement taken from each server back to
# back, and prints a table of medians with the ratio ours/baseline. Results: one JSON line per run in
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

# Every server of a round runs at once, pinned to the same core (an idle one costs nothing), and
# each measurement is taken from each server back to back, the order turning round by round: on
# this VM a server's CPU time per message drifts by 10-20 % from minute to minute, and servers
# measured minutes apart compared the minutes more than the servers.
declare -A port pid cookies
start() { # NAME PORT COMMAND...
    local name=$1
    port[$name]=$2
    shift 2
    "${pin0[@]}" "$@" --addr "127.0.0.1:${port[$name]}" > "$out/$name.out" 2>/dev/null &
    pid[$name]=$!
    wait_port "${port[$name]}"
}
stop_all() {
    for name in "${!pid[@]}"; do kill "${pid[$name]}" 2>/dev/null || true; wait "${pid[$name]}" 2>/dev/null || true; done
    pid=() port=()
}
# The load on each of SERVERS, in the round's turn, labelled "<server> ROW"; with --cookie, each
# sends its session cookie (ours: a logged-in user's; the baseline only checks one is there).
measure() { # ROW "SERVER..." [--cookie] ARGS...
    local row=$1 servers=($2) with_cookie=
    shift 2
    [ "${1:-}" = --cookie ] && with_cookie=1 && shift
    local turn=$((round % ${#servers[@]}))
    for server in "${servers[@]:turn}" "${servers[@]:0:turn}"; do
        local extra=()
        [ -n "$with_cookie" ] && extra=(--cookie "${cookies[$server]}")
        load --label "$server $row" --addr "127.0.0.1:${port[$server]}" --server-pid "${pid[$server]}" "$@" "${extra[@]}"
    done
}

for round in $(seq "$rounds"); do
    base=$((18000 + round * 10))
    start ours "$base" "$bin/examples/bench" --print-cookie
    start baseline $((base + 1)) "$bin/baseline"
    start fastws $((base + 2)) "$bin/fastws"
    cookies=([ours]=$(head -n1 "$out/ours.out" 2>/dev/null || true) [baseline]=sessionid=baseline-only-checks-presence)
    [ -n "${cookies[ours]}" ] || { echo "the bench server printed no cookie" >&2; exit 1; }
    common=(--seconds "$seconds")
    measure echo-100 "ours baseline fastws" --mode echo --path /ws/echo/ --connections 100 "${common[@]}"
    measure "echo-$big" "ours baseline fastws" --mode echo --path /ws/echo/ --connections "$big" "${common[@]}"
    # Through the whole auth stack (ours: cookie, session, user); the baseline's handshake checks
    # that a cookie is there.
    measure handshake "ours baseline" --cookie --mode handshake --path /ws/auth-echo/ --connections 8 "${common[@]}"
    measure broadcast-100 "ours baseline" --mode broadcast --path /ws/broadcast/ --connections 100 "${common[@]}"
    measure "broadcast-$big" "ours baseline" --mode broadcast --path /ws/broadcast/ --connections "$big" "${common[@]}"
    measure broadcast-closed-100 "ours baseline" --mode broadcast-closed --path /ws/broadcast/ --connections 100 "${common[@]}"
    measure "idle-$idle" "ours baseline" --cookie --mode idle --path /ws/auth-echo/ --connections "$idle" --seconds 2
    stop_all
    # Tokio's default runtime (`#[tokio::main]`), one and two worker threads on the server's one
    # core: echo and broadcast at $big connections, both servers (issue 17's fairness rows).
    for workers in 1 2; do
        start ours $((base + 3 + workers * 2)) "$bin/examples/bench" --workers "$workers"
        start baseline $((base + 4 + workers * 2)) "$bin/baseline" --workers "$workers"
        measure "mt$workers-echo-$big" "ours baseline" --mode echo --path /ws/echo/ --connections "$big" "${common[@]}"
        measure "mt$workers-broadcast-$big" "ours baseline" --mode broadcast --path /ws/broadcast/ --connections "$big" "${common[@]}"
        stop_all
    done
done

python3 bench/summarize.py "$results" "$out/chart.svg"
