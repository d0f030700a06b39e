"""Bar chart of queries/s per server and mode from the peer benchmark's results.jsonl, as SVG.

    .venv/bin/python bench/plot.py bench/out/<run>/results.jsonl [more.jsonl ...] -o docs/qps.svg

One group of bars per dnsperf mode (max, deep), one bar per server: the median QPS over the
rounds, with the min..max range drawn as a line. Plain SVG, no plotting library needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"]


def load(paths: list[Path], modes: list[str]) -> dict[str, dict[str, list[float]]]:
    runs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("rc") == 0 and row["mode"] in modes and row.get("qps"):
                runs[row["mode"]][row["label"]].append(float(row["qps"]))
    return runs


def svg(runs: dict[str, dict[str, list[float]]], modes: list[str], title: str) -> str:
    servers = list(dict.fromkeys(s for m in modes for s in runs.get(m, {})))
    top = max((max(v) for m in modes for v in runs.get(m, {}).values()), default=1.0)
    scale = 10 ** (len(str(int(top))) - 1)
    top = (int(top / scale) + 1) * scale
    bar, gap, left, height, base = 26, 40, 70, 300, 340
    width = left + len(modes) * (len(servers) * bar + gap) + 180
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{base + 60}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{left}" y="20" font-size="14">{title}</text>',
    ]
    for i in range(6):
        value = top * i / 5
        y = base - height * i / 5
        out.append(f'<line x1="{left}" x2="{width - 180}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{value / 1000:.0f}k</text>')
    for m, mode in enumerate(modes):
        x0 = left + 10 + m * (len(servers) * bar + gap)
        for s, server in enumerate(servers):
            values = runs.get(mode, {}).get(server)
            if not values:
                continue
            med = statistics.median(values)
            x = x0 + s * bar
            h = height * med / top
            color = COLORS[s % len(COLORS)]
            out.append(
                f'<rect x="{x}" y="{base - h:.1f}" width="{bar - 4}" height="{h:.1f}" '
                f'fill="{color}"><title>{server} {mode}: {med:.0f} QPS</title></rect>'
            )
            lo, hi = min(values), max(values)
            cx = x + (bar - 4) / 2
            out.append(
                f'<line x1="{cx}" x2="{cx}" y1="{base - height * hi / top:.1f}" '
                f'y2="{base - height * lo / top:.1f}" stroke="#333"/>'
            )
        out.append(
            f'<text x="{x0 + len(servers) * bar / 2}" y="{base + 18}" text-anchor="middle">'
            f"{mode}</text>"
        )
    for s, server in enumerate(servers):
        y = 50 + s * 18
        out.append(
            f'<rect x="{width - 165}" y="{y - 10}" width="12" height="12" '
            f'fill="{COLORS[s % len(COLORS)]}"/>'
        )
        out.append(f'<text x="{width - 148}" y="{y}">{server}</text>')
    out.append(
        f'<text x="{left}" y="{base + 40}" fill="#555">queries/s, median over rounds '
        "(line: min..max); dnsperf on the same 2-core machine</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--modes", default="max,deep")
    p.add_argument("--title", default="Queries per second by server (shared data set)")
    args = p.parse_args()
    modes = args.modes.split(",")
    args.out.write_text(svg(load(args.results, modes), modes, args.title))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
