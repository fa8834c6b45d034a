#!/usr/bin/env bash
# Server CPU per message of several server binaries, interleaved round by round (A, B, C, A, B, C...):
# on this VM the CPU time of one server moves by 10-40 % from minute to minute, so two builds are
# compared in the same minutes, not in two harness runs. Each round starts every server afresh
# (pinned to CPU 0, the load client to CPU 1) and echoes at 100 then 1,000 connections.
#
#   bash bench/ab.sh [--rounds N] [--seconds S] [--broadcast] BIN...
#
# --broadcast: the closed-loop broadcast to 100 subscribers instead (CPU per delivery).
#
# BIN: a server binary that takes `--addr` (e.g. a copy of target/release/examples/bench built
# at another commit, and target/release/fastws).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seconds=5 bins=() mode=echo path=/ws/echo/ sizes=(100 1000)
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --broadcast) mode=broadcast-closed path=/ws/broadcast/ sizes=(100); shift ;;
        -*) echo "usage: bench/ab.sh [--rounds N] [--seconds S] [--broadcast] BIN..." >&2; exit 2 ;;
        *) bins+=("$1"); shift ;;
    esac
done
[ ${#bins[@]} -gt 0 ] || { echo "usage: bench/ab.sh [--rounds N] [--seconds S] [--broadcast] BIN..." >&2; exit 2; }

cargo build --quiet --release -p channels-bench --bin load
if command -v taskset >/dev/null; then pin0=(taskset -c 0) pin1=(taskset -c 1); else pin0=() pin1=(); fi
mkdir -p target/bench
results=target/bench/ab.jsonl
: > "$results"
for round in $(seq "$rounds"); do
    for i in "${!bins[@]}"; do
        port=$((18400 + round * 10 + i))
        "${pin0[@]}" "${bins[$i]}" --addr "127.0.0.1:$port" > /dev/null 2>&1 &
        pid=$!
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
        for connections in "${sizes[@]}"; do
            "${pin1[@]}" target/release/load --mode "$mode" --path "$path" --addr "127.0.0.1:$port" \
                --connections "$connections" --seconds "$seconds" --server-pid "$pid" \
                --label "$i:${bins[$i]} $mode-$connections" >> "$results"
        done
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
python3 - "$results" <<'PY'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    run = json.loads(line)
    runs[run["label"]].append(run)
for label in sorted(runs):
    cpu = [run["server_cpu_us_per_op"] for run in runs[label]]
    rate = statistics.median(run["per_second"] for run in runs[label])
    print(f"{label.split(':', 1)[1]}: CPU {statistics.median(cpu):.2f} µs per message "
          f"(rounds {', '.join(f'{c:.2f}' for c in cpu)}), {rate:,.0f} msgs/s")
PY
