#!/usr/bin/env bash
# Memory of an idle chat socket (issue 17): the chat example (auth stack, a room with history
# and presence, the user's group, JSON), N logged-in sockets opened on a fresh process and left
# idle, 100 to a room (`--per-room`; a room's presence is O(members) per socket: each join
# sends every member a diff, so one room of 10,000 measures that, not a socket);
# the load client reports the server's RSS growth per socket. One line of JSON per run in
# target/bench/chat-idle.jsonl.
#
#   bash bench/chat-idle.sh [--connections N] [--rounds R] [--per-room M]
set -euo pipefail
cd "$(dirname "$0")/.."

connections=10000 rounds=3 per_room=100
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) connections=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --per-room) per_room=$2; shift 2 ;;
        *) echo "usage: bench/chat-idle.sh [--connections N] [--rounds R] [--per-room M]" >&2; exit 2 ;;
    esac
done

cargo build --quiet --release --example chat
cargo build --quiet --release -p channels-bench --bin load
out=target/bench
mkdir -p "$out"
results="$out/chat-idle.jsonl"
: > "$results"
if command -v taskset >/dev/null; then pin0=(taskset -c 0) pin1=(taskset -c 1); else pin0=() pin1=(); fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

for round in $(seq "$rounds"); do
    port=$((18090 + round))
    rm -f "$dir/chat.sqlite3"
    "${pin0[@]}" target/release/examples/chat --addr "127.0.0.1:$port" --db "$dir/chat.sqlite3" \
        --demo-password bench-pw > /dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    cookie=$(curl -s -o /dev/null -D - --data 'username=alice&password=bench-pw' "http://127.0.0.1:$port/login/" \
        | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(sessionid=[^;]*\).*/\1/p')
    [ -n "$cookie" ] || { echo "login failed" >&2; kill "$pid"; exit 1; }
    "${pin1[@]}" target/release/load --mode idle --addr "127.0.0.1:$port" --path '/ws/chat/idle-{room}/' \
        --rooms $(( (connections + per_room - 1) / per_room )) \
        --cookie "$cookie" --origin "http://127.0.0.1:$port" --connections "$connections" \
        --server-pid "$pid" --seconds 2 --label "chat idle-$connections" >> "$results"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
per = [run["extra"]["bytes_per_connection"] for run in runs]
alive = [run["extra"].get("alive_after_hold") for run in runs]
print(f"chat idle: {statistics.median(per):,.0f} bytes per socket (runs {', '.join(f'{p:,.0f}' for p in per)}; alive {alive})")
PY
