"""Many services and many named queries (#25): queries spread uniformly over every service (or
every named query) against the same mix on one, alternating in one run.

    .venv/bin/python bench/spread.py [--services 10000] [--per-service 5] [--workers 2]
                                     [--seconds 6] [--rounds 3] [--tree PATH ...]

One dnsdisc (SQLite store) per ``--tree`` (a checkout to run with its own ``.venv``, e.g. a
``git worktree`` of an older commit with a link to this one's; default: this one), with
``--services`` services of ``--per-service`` instances (registered over HTTP, weights left at
their default) and a named query ``q<N>`` on each service ``svc<N>`` (``PUT /v1/queries/q<N>
{"service": "svc<N>"}``). Four mixes, each half A and half SRV, no RD, EDNS 1232:

- ``one``: ``svc0.D A`` and ``_svc0._tcp.D SRV``;
- ``uniform``: every service's A and SRV once (20,000 questions for 10,000 services), shuffled;
- ``named-one``: ``q0.query.D A`` and ``_q0._tcp.query.D SRV``;
- ``named-uniform``: every named query's A and SRV once, shuffled.

dnsperf cycles through a file, so in the uniform mixes each question comes back once per pass of
20,000 queries. Each round runs every mix once (dnsperf max mode, 32 clients, ``--seconds``),
for every tree in turn; the figures are the medians over the rounds of queries/s and of the
server's CPU time per query (user + system of all its processes: steal left out). The target:
uniform >= 0.8x one in queries/s (and named-uniform >= 0.8x named-one). Every server is stopped
by PID; data goes to temporary directories.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import _dnsperf_once, cpu_seconds, rss_mib  # noqa: E402
from writes import register_all  # noqa: E402

from tests.support.helpers import DnsdiscProcess  # noqa: E402

MIXES = ("one", "uniform", "named-one", "named-uniform")


def write_mix(path: Path, names: list[tuple[str, str]], rng: random.Random) -> Path:
    lines = [f"{a} A\n{s} SRV" for a, s in names]
    rng.shuffle(lines)
    path.write_text("\n".join(lines * max(1, 2000 // len(lines))) + "\n")
    return path


def mixes(directory: Path, services: int, rng: random.Random) -> dict[str, Path]:
    plain = [(f"svc{n}.svc.internal", f"_svc{n}._tcp.svc.internal") for n in range(services)]
    named = [
        (f"q{n}.query.svc.internal", f"_q{n}._tcp.query.svc.internal") for n in range(services)
    ]
    return {
        "one": write_mix(directory / "one.txt", plain[:1], rng),
        "uniform": write_mix(directory / "uniform.txt", plain, rng),
        "named-one": write_mix(directory / "named-one.txt", named[:1], rng),
        "named-uniform": write_mix(directory / "named-uniform.txt", named, rng),
    }


async def define_queries(port: int, count: int, clients: int = 16) -> None:
    todo = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in todo:
            url = f"http://127.0.0.1:{port}/v1/queries/q{n}"
            async with session.put(url, json={"service": f"svc{n}"}) as resp:
                await resp.read()
                if resp.status not in (200, 201):
                    raise RuntimeError(f"PUT {url}: {resp.status}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


def start(tree: Path, directory: Path, args: argparse.Namespace) -> DnsdiscProcess:
    server = DnsdiscProcess(
        directory, extra_args=["--workers", str(args.workers)], tree=None if tree == ROOT else tree
    )
    server.start(timeout=60)
    asyncio.run(
        register_all(
            server.http_port, args.services * args.per_service, 32, "svc", args.per_service
        )
    )
    asyncio.run(define_queries(server.http_port, args.services))
    return server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--per-service", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tree", type=Path, action="append", help="a checkout to run (repeatable)")
    args = p.parse_args()
    trees = args.tree or [ROOT]
    tmp = Path(tempfile.mkdtemp())
    files = mixes(tmp, args.services, random.Random(1))
    servers: list[DnsdiscProcess] = []
    runs: dict[tuple[int, str], list[tuple[float, float]]] = {}
    try:
        for t, tree in enumerate(trees):
            servers.append(start(tree, tmp / f"node{t}", args))
            print(
                f"tree {t} ({tree}): {args.services} services and named queries ready", flush=True
            )
        for r in range(args.rounds):
            for t, server in enumerate(servers):
                for mix in MIXES:
                    before = cpu_seconds(server)
                    qps, completed = _dnsperf_once(server.dns_port, files[mix], args.seconds)
                    cpu = (cpu_seconds(server) - before) / completed * 1e6
                    runs.setdefault((t, mix), []).append((qps, cpu))
                    print(
                        f"round {r + 1} tree {t} {mix}: {qps:.0f} q/s, {cpu:.2f} CPU µs/q",
                        flush=True,
                    )
        print("\n| tree | mix | q/s (median) | CPU µs/q (median) | q/s vs one | CPU vs one |")
        print("|---|---|---:|---:|---:|---:|")
        for t in range(len(servers)):
            for mix in MIXES:
                base = "named-one" if mix.startswith("named") else "one"
                qps = statistics.median(q for q, _ in runs[(t, mix)])
                cpu = statistics.median(c for _, c in runs[(t, mix)])
                bq = statistics.median(q for q, _ in runs[(t, base)])
                bc = statistics.median(c for _, c in runs[(t, base)])
                print(
                    f"| {t} | {mix} | {qps:,.0f} | {cpu:.2f} | {qps / bq:.2f}x | {cpu / bc:.2f}x |"
                )
        for t, server in enumerate(servers):
            assert server.proc is not None
            rss = [rss_mib(pid) for pid in [server.proc.pid, *server.children()]]
            evicted = next(
                (
                    line.split()[-1]
                    for line in server.http("GET", "/metrics").raw.decode().splitlines()
                    if line.startswith("dnsdisc_dns_reply_cache_evictions")
                ),
                "?",
            )
            print(
                f"tree {t} RSS MiB (main, workers): {', '.join(f'{m:.0f}' for m in rss)}; "
                f"reply cache evictions: {evicted}"
            )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    subprocess.run(["dnsperf", "-h"], capture_output=True, check=False)  # fails early if missing
    main()
