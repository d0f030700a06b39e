"""Query cost against service size (#16 item 3): queries/s of a 5,000-instance service against
a 5-instance one, per policy (weighted, round_robin, latency), before and after a change.

    .venv/bin/python bench/draw.py --before /tmp/dbefore [--rounds 3] [--queries 20000]
                                   [--dnsperf SECONDS]

``--before`` is another checkout of dnsdisc with its own ``.venv`` (``git worktree add
/tmp/dbefore 0a37a5e``, then ``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``
there); without it only this tree is measured. Trees alternate within each round.

In-process (always): each tree's responder, wired as ``tests/support/world.py`` wires it from a
zone file, with the server's default UDP cap where the tree has one, answers one UDP query
(EDNS, 1232 bytes) ``--queries`` times per name; queries/s from the thread's CPU time, so other
load on the machine counts less. With ``--dnsperf N``: the same zone served by ``dnsdisc serve
--workers 0`` of each tree, dnsperf for N seconds per name (-c 32 -q 100). The latency services
get a heartbeat with a latency from every 50th instance (the others count as the median).
Printed: the median over rounds per tree, policy and size, and the 5,000 / 5 ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("weighted", "round_robin", "latency")
SIZES = (5, 5000)


def name(policy: str, size: int) -> str:
    return f"{policy.replace('_', '')}{size}"


def write_zone(directory: Path) -> None:
    import yaml

    services = {}
    for s, policy in enumerate(POLICIES):
        for size in SIZES:
            services[name(policy, size)] = {
                "policy": policy,
                "ttl": 0,
                "instances": {
                    f"i{i}": {
                        "address": f"10.{s * 2 + (size > 5)}.{i // 250}.{i % 250 + 1}",
                        "port": 80,
                        "weight": 1 + i % 5,
                    }
                    for i in range(size)
                },
            }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.yaml").write_text(yaml.safe_dump({"services": services}))


def heartbeats(size: int) -> list[tuple[str, float]]:
    return [(f"i{i}", 1.0 + i % 40) for i in range(0, size, 50 if size > 5 else 1)]


def child_inprocess(tree: Path, queries: int) -> dict[str, float]:
    """Runs in the tree's own interpreter: queries/s (thread CPU) per service name."""
    sys.path.insert(0, str(tree))
    import random

    import dns.message

    from dnsdisc.dnsserver.answer import Responder
    from dnsdisc.registry.model import HeartbeatReport
    from tests.support.world import World

    zones = Path(tempfile.mkdtemp()) / "zones"
    write_zone(zones)
    world = World(zones)
    for size in SIZES:
        for iid, ms in heartbeats(size):
            world.registry.heartbeat(name("latency", size), iid, HeartbeatReport(latency_ms=ms))
    try:  # the server's default UDP cap, where this tree has one
        responder = Responder(world.index, random.Random(1), udp_answer_limit=16)  # type: ignore[call-arg]
    except TypeError:
        responder = Responder(world.index, random.Random(1))
    out = {}
    for policy in POLICIES:
        for size in SIZES:
            n = name(policy, size)
            query = dns.message.make_query(f"{n}.svc.internal", "A", use_edns=0, payload=1232)
            data = query.to_wire()
            for _ in range(200):  # warm: tables, pools, the reply cache
                responder.respond(data)
            start = time.thread_time()
            for _ in range(queries):
                responder.respond(data)
            out[n] = queries / (time.thread_time() - start)
    return out


def child_dnsperf(tree: Path, seconds: int) -> dict[str, float]:
    """Runs in the tree's own interpreter: dnsperf queries/s per name against its server."""
    sys.path.insert(0, str(tree))
    from tests.support.helpers import DnsdiscProcess

    tmp = Path(tempfile.mkdtemp())
    write_zone(tmp / "zones")
    server = DnsdiscProcess(tmp / "data", extra_args=["--zones", str(tmp / "zones"),
                                                      "--workers", "0"])  # fmt: skip
    server.start(timeout=120)
    out = {}
    try:
        for size in SIZES:
            for iid, ms in heartbeats(size):
                path = f"/v1/services/{name('latency', size)}/instances/{iid}/heartbeat"
                server.http("POST", path, {"latency_ms": ms})
        for policy in POLICIES:
            for size in SIZES:
                n = name(policy, size)
                qfile = tmp / f"{n}.txt"
                qfile.write_text(f"{n}.svc.internal A\n")
                res = subprocess.run(
                    ["dnsperf", "-s", "127.0.0.1", "-p", str(server.dns_port), "-d", str(qfile),
                     "-l", str(seconds), "-c", "32", "-q", "100", "-t", "1", "-e", "-D"],
                    capture_output=True, text=True, timeout=seconds + 30, check=True,
                ).stdout  # fmt: skip
                out[n] = float(
                    next(ln.split()[-1] for ln in res.splitlines() if "Queries per second" in ln)
                )
    finally:
        server.stop()
    return out


def run_child(tree: Path, mode: str, amount: int) -> dict[str, float]:
    python = tree / ".venv" / "bin" / "python"
    cmd = [str(python), __file__, "--child", mode, "--tree", str(tree), "--amount", str(amount)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", type=Path, help="a checkout to compare with, with its own .venv")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--queries", type=int, default=20000)
    p.add_argument("--dnsperf", type=int, default=0, metavar="SECONDS")
    p.add_argument("--child", choices=("inprocess", "dnsperf"), help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--amount", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fn = child_inprocess if args.child == "inprocess" else child_dnsperf
        print(json.dumps(fn(args.tree, args.amount)))
        return
    trees = {"after": ROOT}
    if args.before:
        trees = {"before": args.before.resolve(), "after": ROOT}
    modes = [("inprocess", args.queries)] + ([("dnsperf", args.dnsperf)] if args.dnsperf else [])
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for mode, amount in modes:
            for label, tree in trees.items():
                got = run_child(tree, mode, amount)
                results.setdefault((mode, label), []).append(got)
                print(f"round {r + 1} {mode} {label}: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in got.items()), flush=True)  # fmt: skip
    print()
    print("| mode | tree | policy | 5 instances q/s | 5,000 instances q/s | ratio |")
    print("|---|---|---|---|---|---|")
    for (mode, label), runs in results.items():
        for policy in POLICIES:
            small = statistics.median(run[name(policy, 5)] for run in runs)
            big = statistics.median(run[name(policy, 5000)] for run in runs)
            print(f"| {mode} | {label} | {policy} | {small:.0f} | {big:.0f} | {big / small:.2f}x |")


if __name__ == "__main__":
    main()
