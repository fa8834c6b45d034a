#!/usr/bin/env python3
"""Medians (with min-max spread) of the harness's JSON lines, ours/baseline ratios, and an SVG
chart of throughput and p99 latency per measurement. Usage: summarize.py results.jsonl chart.svg"""
import json
import statistics
import sys
from collections import defaultdict

path, chart = sys.argv[1], sys.argv[2]
runs = defaultdict(list)
for line in open(path):
    line = line.strip()
    if not line:
        continue
    run = json.loads(line)
    server, name = run["label"].split(" ", 1)
    runs[(name, server)].append(run)


def metric(run, name):
    if run["mode"] == "idle":
        return run["extra"].get("bytes_per_connection") or 0.0
    return run["per_second"]


def spread(values):
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def order(name):
    """`echo-100` before `echo-1000`; `broadcast-closed-100` after `broadcast-*`; `handshake` alone."""
    kind, _, size = name.rpartition("-")
    return (kind, int(size)) if size.isdigit() else (name, 0)


names = sorted({name for name, _ in runs}, key=order)
print(f"| measurement | unit | ours | baseline | ours/baseline | server CPU µs/op ours / baseline | p99 µs ours / baseline |")
print("|---|---|---|---|---|---|---|")
rows = []
for name in names:
    ours, base = runs.get((name, "ours"), []), runs.get((name, "baseline"), [])
    if not ours or not base:
        continue
    unit = "bytes/conn" if ours[0]["mode"] == "idle" else ("handshakes/s" if ours[0]["mode"] == "handshake" else "msgs/s")
    o, b = [metric(r, name) for r in ours], [metric(r, name) for r in base]
    ratio = statistics.median(o) / statistics.median(b) if statistics.median(b) else float("nan")
    cpu = lambda rs: statistics.median([r["server_cpu_us_per_op"] or 0 for r in rs])
    p99 = lambda rs: statistics.median([r["p99_us"] for r in rs])
    cpu_text = "-" if unit == "bytes/conn" else f"{cpu(ours):.1f} / {cpu(base):.1f}"
    p99_text = "-" if unit == "bytes/conn" else f"{p99(ours):,.0f} / {p99(base):,.0f}"
    print(f"| {name} | {unit} | {spread(o)} | {spread(b)} | {ratio:.2f} | {cpu_text} | {p99_text} |")
    rows.append((name, unit, statistics.median(o), statistics.median(b), p99(ours), p99(base)))

# The second baseline (deno's fastwebsockets), echo only: server CPU per message is the bar.
fast = [name for name in names if runs.get((name, "fastws")) and runs.get((name, "ours"))]
if fast:
    print()
    print("| measurement | msgs/s ours | msgs/s fastwebsockets | server CPU µs/msg ours / fastwebsockets | ours/fastwebsockets CPU |")
    print("|---|---|---|---|---|")
    for name in fast:
        ours, other = runs[(name, "ours")], runs[(name, "fastws")]
        cpu = lambda rs: statistics.median([r["server_cpu_us_per_op"] or 0 for r in rs])
        ratio = cpu(ours) / cpu(other) if cpu(other) else float("nan")
        print(f"| {name} | {spread([r['per_second'] for r in ours])} | {spread([r['per_second'] for r in other])} | "
              f"{cpu(ours):.2f} / {cpu(other):.2f} | {ratio:.2f} |")

# A grouped bar chart per measurement (throughput rows and p99 rows), drawn by hand.
bars = [r for r in rows if r[1] != "bytes/conn"]
width, row_h = 760, 26
height = 60 + row_h * 2 * len(bars) * 2 + 40
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
       '<text x="10" y="20" font-size="14">channels (blue) vs tokio-tungstenite baseline (grey): medians</text>']
y = 40
for title, index in (("throughput (per second)", 2), ("p99 latency (µs)", 4)):
    svg.append(f'<text x="10" y="{y + 12}" font-weight="bold">{title}</text>')
    y += 20
    top = max([max(r[index], r[index + 1]) for r in bars] + [1])
    for r in bars:
        for value, color in ((r[index], "#3572b0"), (r[index + 1], "#999")):
            length = 0 if top == 0 else (width - 260) * value / top
            svg.append(f'<text x="10" y="{y + 14}">{r[0]}</text>')
            svg.append(f'<rect x="150" y="{y + 3}" width="{length:.1f}" height="16" fill="{color}"/>')
            svg.append(f'<text x="{155 + length:.1f}" y="{y + 15}">{value:,.0f}</text>')
            y += row_h // 1
    y += 10
svg.append("</svg>")
open(chart, "w").write("\n".join(svg))
print(f"\nchart: {chart}")

# An idle connection is only measured if it is still open and answering: the load client pings
# each one after the hold. A server that stops answering would look cheap here, so it fails.
dead = [
    f"{run['label']}: {run['extra'].get('alive_after_hold')} of {run['extra'].get('opened')} answered a ping after the hold"
    for group in runs.values()
    for run in group
    if run["mode"] == "idle" and run["extra"].get("alive_after_hold") != run["extra"].get("opened")
]
if dead:
    print("\n".join(["", "idle connections lost:"] + dead), file=sys.stderr)
    sys.exit(1)
