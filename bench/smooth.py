"""What ``sequence: smooth`` costs a cached answer, in-process, against ``random``, alternating.

    .venv/bin/python bench/smooth.py [--rounds 4] [--instances 4]

One responder per setting over the same service (weights 1..n, ``max_answers: 1``), one
requester asking the same question; prints the best of 5 timings of 20,000 answers per round
and the medians. In-process (no sockets): the figure is the answer path's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.world import World, packed  # noqa: E402


def answer_us(sequence: str, instances: int) -> float:
    w = World()
    w.settings("web", max_answers=1, sequence=sequence)
    for i in range(1, instances + 1):
        w.add("web", f"w{i}", address=f"10.0.{i // 250}.{i % 250 + 1}", port=80, weight=i)
    q = dns.message.make_query("web.svc.internal.", "A", use_edns=0)
    q.flags = 0
    data, responder, source = q.to_wire(), w.responder, packed("192.0.2.1")
    for _ in range(2000):
        responder.respond(data, False, source)
    best = min(
        timeit.repeat(lambda: responder.respond(data, False, source), number=20000, repeat=5)
    )
    return best / 20000 * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--instances", type=int, default=4)
    args = p.parse_args()
    got: dict[str, list[float]] = {"random": [], "smooth": []}
    for n in range(args.rounds):
        for sequence in ("random", "smooth") if n % 2 == 0 else ("smooth", "random"):
            got[sequence].append(answer_us(sequence, args.instances))
            print(f"round {n + 1} {sequence:6}: {got[sequence][-1]:.2f} µs per answer", flush=True)
    r, s = statistics.median(got["random"]), statistics.median(got["smooth"])
    print(f"\n| sequence | µs per cached answer |\n|---|---:|\n| random | {r:.2f} |")
    print(f"| smooth | {s:.2f} |\n\nsmooth / random: {s / r:.2f}x the time per answer")


if __name__ == "__main__":
    main()
