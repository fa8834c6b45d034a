#!/usr/bin/env bash
# 100,000 concurrent idle authenticated WebSocket connections on this machine, held for 60 s.
#
#   bash bench/many.sh                       # 100,000 connections over 6 server processes, 60 s
#   bash bench/many.sh --total 20000 --servers 2 --hold 10
#
# One process may open at most `ulimit -Hn` files (20,000 on the reference machine, which cannot
# be raised there without CAP_SYS_RESOURCE), so the connections are spread over several bench
# server processes (as a deployment spreads them over workers), each loaded by its own client
# process from its own loopback source address (127.0.0.10, .11, ...). Every client holds its
# connections open, answering the servers' keepalive pings, then checks each with a ping.
# Prints one JSON line per server and a summary: connections opened and still alive, the window
# during which all of them were open together, and the servers' RSS.
set -euo pipefail
cd "$(dirname "$0")/.."

total=100000 servers=6 hold=60
while [ $# -gt 0 ]; do
    case "$1" in
        --total) total=$2; shift 2 ;;
        --servers) servers=$2; shift 2 ;;
        --hold) hold=$2; shift 2 ;;
        *) echo "usage: bench/many.sh [--total N] [--servers K] [--hold SECONDS]" >&2; exit 2 ;;
    esac
done
per=$(( (total + servers - 1) / servers ))
limit=$(ulimit -Hn)
if [ "$limit" != unlimited ] && [ "$per" -ge $((limit - 100)) ]; then
    echo "$per connections per process exceed the open-file limit ($limit): use more --servers" >&2
    exit 2
fi
ulimit -n "$limit"

cargo build --quiet --release --example bench
cargo build --quiet --release -p channels-bench --bin load
bin=target/release
out=target/bench
mkdir -p "$out"
results="$out/many.jsonl"
: > "$results"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for i in $(seq 0 $((servers - 1))); do
    "$bin/examples/bench" --addr "127.0.0.1:$((19100 + i))" --print-cookie > "$out/cookie-$i" 2>/dev/null &
    pids+=($!)
done
for i in $(seq 0 $((servers - 1))); do
    for _ in $(seq 100); do [ -s "$out/cookie-$i" ] && break; sleep 0.1; done
done

loads=()
for i in $(seq 0 $((servers - 1))); do
    count=$(( i == servers - 1 ? total - per * (servers - 1) : per ))
    "$bin/load" --mode idle --addr "127.0.0.1:$((19100 + i))" --path /ws/auth-echo/ \
        --cookie "$(head -n1 "$out/cookie-$i")" --connections "$count" --seconds $((hold + 15)) \
        --sources "127.0.0.$((10 + i))" --server-pid "${pids[$i]}" --label "many-$i" >> "$results" &
    loads+=($!)
done
wait "${loads[@]}"

python3 - "$results" "$total" "$hold" <<'EOF'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
total, hold = int(sys.argv[2]), int(sys.argv[3])
extra = [line["extra"] for line in lines]
opened = sum(e["opened"] for e in extra)
alive = sum(e["alive_after_hold"] for e in extra)
window = min(e["checked_at"] for e in extra) - max(e["all_open_at"] for e in extra)
rss_kb = sum(e["rss_kb_after"] or 0 for e in extra)
growth_kb = sum((e["rss_kb_after"] or 0) - (e["rss_kb_before"] or 0) for e in extra)
summary = {
    "connections": total, "opened": opened, "alive_after_hold": alive,
    "all_open_together_seconds": round(window, 1), "servers": len(extra),
    "server_rss_mb": round(rss_kb / 1024, 1), "bytes_per_connection": round(growth_kb * 1024 / max(opened, 1)),
}
print(json.dumps(summary))
ok = opened == total and alive == total and window >= hold
print("held" if ok else "NOT held", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
