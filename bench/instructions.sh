#!/usr/bin/env bash
# User-space instructions per echoed message (valgrind's callgrind counts instructions, not
# seconds: the same binary and load give the same figure however busy the machine is, which
# this VM's ±20 % CPU-time noise does not allow). Kernel work is not counted: both servers make
# the same system calls per echo (one recvfrom, one sendto; `strace -c`), so the difference
# between servers is this figure.
#
#   bash bench/instructions.sh [--connections N] [--broadcast] [SERVER...]
#
# --broadcast: the closed-loop broadcast to N subscribers instead (load --mode broadcast-closed,
# our /ws/broadcast/: a group on the in-memory layer); the figure is then per delivery.
#
# SERVER: ours (examples/bench.rs), baseline (tokio-tungstenite), fastws (fastwebsockets), or
# a path to a server binary that takes `--addr`. Default: ours fastws. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=100 servers=() mode=echo path=/ws/echo/
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) connections=$2; shift 2 ;;
        --broadcast) mode=broadcast-closed path=/ws/broadcast/; shift ;;
        -*) echo "usage: bench/instructions.sh [--connections N] [--broadcast] [SERVER...]" >&2; exit 2 ;;
        *) servers+=("$1"); shift ;;
    esac
done
[ ${#servers[@]} -gt 0 ] || servers=(ours fastws)
command -v valgrind >/dev/null || { echo "bench/instructions.sh needs valgrind" >&2; exit 1; }

cargo build --quiet --release --example bench
cargo build --quiet --release -p channels-bench --bin load --bin baseline --bin fastws
if command -v taskset >/dev/null; then pin0=(taskset -c 0) pin1=(taskset -c 1); else pin0=() pin1=(); fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

for server in "${servers[@]}"; do
    case "$server" in
        ours) bin=target/release/examples/bench ;;
        baseline | fastws) bin=target/release/$server ;;
        *) bin=$server ;;
    esac
    port=$((18700 + RANDOM % 200))
    # Instrumented only once the connections are open and echoing (after 8 s), for 10 s.
    "${pin0[@]}" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/out" \
        "$bin" --addr "127.0.0.1:$port" > /dev/null 2> "$dir/valgrind.log" &
    pid=$!
    for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    "${pin1[@]}" target/release/load --mode "$mode" --path "$path" --addr "127.0.0.1:$port" \
        --connections "$connections" --seconds 25 --label x > /dev/null &
    load=$!
    sleep 8
    callgrind_control -i on "$pid" > /dev/null
    sleep 10
    callgrind_control -i off "$pid" > /dev/null
    callgrind_control -d "$pid" > /dev/null
    wait "$load"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    # Instructions in the window, divided by the calls to send() or writev() in it (one per echo,
    # or per delivery).
    python3 - "$dir/out.1" "$server" "$connections" "$mode" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
total = int(re.search(r"^totals: (\d+)", text, re.M).group(1))
names = dict(re.findall(r"^c?fn=\((\d+)\) (.+)$", text, re.M))
lines = text.split("\n")
sends = 0
for i, line in enumerate(lines):
    m = re.match(r"^cfn=\((\d+)\)", line)
    if m and names.get(m.group(1), "").strip() in ("send", "__send", "__libc_send", "writev", "__writev"):
        calls = re.match(r"^calls=(\d+)", lines[i + 1])
        sends += int(calls.group(1)) if calls else 0
unit = "echo" if sys.argv[4] == "echo" else "delivery"
print(f"{sys.argv[2]} {sys.argv[4]}-{sys.argv[3]}: {total / max(sends, 1):,.0f} instructions per {unit} "
      f"({total:,} over {sends:,} written messages)")
PY
    rm -f "$dir"/out*
done
