#!/usr/bin/env bash
# WebSocket handshakes per second through the auth stack with Django's `db` sessions on
# PostgreSQL: this server (examples/django_sidecar, /ws/whoami/) next to daphne + Channels'
# AuthMiddlewareStack (examples/django_sidecar/site, the same consumer), the same database and
# logged-in user. Server pinned to CPU 0, load client to CPU 1, alternating rounds, as
# bench/run.sh does; 32 clients handshaking in a loop (enough to saturate either server). Results: one JSON line per run in target/bench/django.jsonl.
#
#   bash bench/django.sh                 # 3 rounds of 10 s
#   bash bench/django.sh --rounds 1 --seconds 3
#   DJANGO_CONN_MAX_AGE=600 bash bench/django.sh   # Django with persistent database connections
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seconds=10 connections=32
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        *) echo "usage: bench/django.sh [--rounds N] [--seconds S] [--connections C]" >&2; exit 2 ;;
    esac
done

python="${CHANNELS_TEST_PYTHON:-$PWD/target/py-venv/bin/python}"
daphne="$(dirname "$python")/daphne"
[ -x "$daphne" ] || { echo "daphne not found next to $python (.ci/run makes that venv)" >&2; exit 1; }
cargo build --quiet --release --example django_sidecar
cargo build --quiet --release -p channels-bench --bin load

out=target/bench; mkdir -p "$out"; results="$out/django.jsonl"; : > "$results"
db="channels_bench_$$"
export DJANGO_SECRET_KEY="bench-django-secret-key-not-a-secret-0123456789"
export DJANGO_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export DJANGO_ALLOWED_HOSTS='*'
helper() { "$python" tests/django/helper.py "$@"; }
helper createdb "$db"
trap 'helper dropdb "$db" >/dev/null 2>&1 || true' EXIT
helper migrate
helper create-user alice "correct horse" pbkdf2_sha256 >/dev/null
cookie=$(helper login alice "correct horse" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["cookie"])')

pin0=(); pin1=()
if command -v taskset >/dev/null; then pin0=(taskset -c 0); pin1=(taskset -c 1); fi
wait_port() {
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "server on port $1 did not start" >&2; return 1
}

for round in $(seq "$rounds"); do
    for server in daphne ours; do
        port=$((18500 + round * 10 + ${#server} % 2))
        if [ "$server" = daphne ]; then
            (cd examples/django_sidecar/site && exec "${pin0[@]}" "$daphne" -b 127.0.0.1 -p "$port" \
                sidecar_site.asgi:application 2>/dev/null) &
        else
            "${pin0[@]}" target/release/examples/django_sidecar --addr "127.0.0.1:$port" 2>/dev/null &
        fi
        pid=$!
        wait_port "$port"
        "${pin1[@]}" target/release/load --mode handshake --path /ws/whoami/ --cookie "sessionid=$cookie" \
            --connections "$connections" --seconds "$seconds" --label "$server handshake conn_max_age=${DJANGO_CONN_MAX_AGE:-0}" --addr "127.0.0.1:$port" \
            --server-pid "$pid" >> "$results"
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done

"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for row in rows:
    by.setdefault(row["label"].split()[0], []).append(row)
med = {name: statistics.median(r["per_second"] for r in runs) for name, runs in by.items()}
cpu = {name: statistics.median(r["server_cpu_us_per_op"] for r in runs) for name, runs in by.items()}
fail = {name: sum(r["extra"].get("failures", 0) for r in runs) for name, runs in by.items()}
for name in ("daphne", "ours"):
    print(f"{name:7} {med[name]:10,.0f} handshakes/s  {cpu[name]:8.1f} µs server CPU each  failures {fail[name]}")
print(f"ours/daphne: {med['ours'] / med['daphne']:.1f}x")
PY
