"""Measure how each balancing policy's shares survive each kind of client.

    sudo .venv/bin/python bench/balance_shares.py [--queries 2000] [--out FILE]

For each policy and answer cap, registers 4 instances with weights 1:2:3:4 and counts which
address a client gets first over N lookups, through: dnspython straight to dnsdisc; a real unbound
(stub-zone, TTL 0, and once with caching and TTL 5); and glibc getaddrinfo() in a network
namespace whose resolv.conf points at dnsdisc (needs root). Prints a Markdown table; the figures in
docs/balancing.md come from it. Everything runs on loopback or in a namespace made here, and every
process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.frontends import dnsdisc_in, getaddrinfo_firsts, namespace, unbound  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402

WEIGHTS = {"10.9.0.1": 1, "10.9.0.2": 2, "10.9.0.3": 3, "10.9.0.4": 4}
UNIFORM = (0.25, 0.25, 0.25, 0.25)
BY_WEIGHT = (0.1, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Case:
    policy: str
    max_answers: int | None
    expected: tuple[float, ...]
    priorities: tuple[int, ...] = (0, 0, 0, 0)
    heartbeat: str = ""  # "load" or "latency_ms"
    figures: tuple[float, ...] = ()
    note: str = ""


def _latency_shares(lat: tuple[float, ...]) -> tuple[float, ...]:
    scaled = [w / x for w, x in zip(WEIGHTS.values(), lat, strict=True)]
    return tuple(v / sum(scaled) for v in scaled)


CASES = [
    Case("round_robin", None, UNIFORM),
    Case("random", None, UNIFORM),
    Case("weighted", None, BY_WEIGHT),
    Case("round_robin", 1, UNIFORM),
    Case("random", 1, UNIFORM),
    Case("weighted", 1, BY_WEIGHT),
    Case("priority", 1, (1 / 3, 2 / 3, 0, 0), priorities=(0, 0, 1, 1), note="priorities 0,0,1,1"),
    Case(
        "least_loaded",
        1,
        (0, 1, 0, 0),
        heartbeat="load",
        figures=(0.9, 0.2, 0.7, 0.4),
        note="loads 0.9,0.2,0.7,0.4",
    ),
    Case(
        "latency",
        1,
        _latency_shares((40, 10, 20, 10)),
        heartbeat="latency_ms",
        figures=(40, 10, 20, 10),
        note="latency 40,10,20,10 ms",
    ),
]


def setup(case: Case, ttl: int) -> list[tuple[str, str, dict[str, object]]]:
    calls: list[tuple[str, str, dict[str, object]]] = [
        (
            "PUT",
            f"/v1/services/web/instances/web-{n}",
            {"address": a, "port": 80, "weight": w, "priority": case.priorities[n - 1]},
        )
        for n, (a, w) in enumerate(WEIGHTS.items(), start=1)
    ]
    calls.append(
        (
            "PUT",
            "/v1/services/web",
            {"policy": case.policy, "max_answers": case.max_answers, "ttl": ttl},
        )
    )
    for n, figure in enumerate(case.figures, start=1):
        calls.append(
            ("POST", f"/v1/services/web/instances/web-{n}/heartbeat", {case.heartbeat: figure})
        )
    return calls


def direct(server: DnsdiscProcess, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        msg = server.query("web.svc.internal", "A")
        counts[msg.answer[0][0].to_text()] += 1
    return counts


def via_unbound(tmp: Path, server: DnsdiscProcess, n: int, cache: bool, tag: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    with unbound(tmp, server, name=f"unbound-{tag}", cache=cache) as resolver:
        for _ in range(n):
            msg = resolver.query("web.svc.internal.", "A")
            counts[msg.answer[0][0].to_text()] += 1
    return counts


def row(case: Case, client: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    shares = [counts.get(a, 0) / total for a in WEIGHTS]
    error = max(abs(s - t) for s, t in zip(shares, case.expected, strict=True))
    cells = " | ".join(f"{s:.3f}" for s in shares)
    target = "/".join(f"{t:.2f}" for t in case.expected)
    verdict = "as intended" if error < 0.03 else "off"
    policy = f"{case.policy} ({case.note})" if case.note else case.policy
    return (
        f"| {policy} | {case.max_answers or 'all'} | {client} | {cells} | {target} | {error:.3f} "
        f"| {verdict} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    n = args.queries
    lines = [
        f"Measured {datetime.date.today()} with `bench/balance_shares.py --queries {n}`; "
        "share of lookups whose first address was each instance (weights 1:2:3:4).",
        "",
        "| policy | max_answers | client | 10.9.0.1 (w1) | 10.9.0.2 (w2) | 10.9.0.3 (w3) "
        "| 10.9.0.4 (w4) | intended | max error | verdict |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for i, case in enumerate(CASES):
            case_dir = tmp / f"case{i}"
            case_dir.mkdir()
            server = DnsdiscProcess(case_dir / "node", extra_args=["--storage", "memory"]).start()
            try:
                for method, path, body in setup(case, 0):
                    server.http(method, path, body)
                lines.append(row(case, "dnspython → dnsdisc", direct(server, n)))
                lines.append(
                    row(
                        case,
                        "unbound (TTL 0) → dnsdisc",
                        via_unbound(case_dir, server, n, False, "nocache"),
                    )
                )
                if case.policy == "weighted" and case.max_answers == 1:
                    for method, path, body in setup(case, 5):
                        server.http(method, path, body)
                    lines.append(
                        row(
                            case,
                            "unbound caching, TTL 5",
                            via_unbound(case_dir, server, n, True, "cache"),
                        )
                    )
            finally:
                server.stop()
            if os.geteuid() == 0:
                with contextlib.ExitStack() as stack:
                    ns = stack.enter_context(namespace())
                    stack.enter_context(dnsdisc_in(ns, case_dir, setup(case, 0)))
                    lines.append(row(case, "getaddrinfo() → dnsdisc", getaddrinfo_firsts(ns, n)))
            print(lines[-1], file=sys.stderr)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
