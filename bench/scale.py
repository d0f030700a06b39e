"""Scale: 10k services x 10 instances registered; memory, query cost and start-up.

    .venv/bin/python bench/scale.py [--services 10000] [--per-service 10] [--workers 2]

1. Starts dnsdisc (SQLite store) with 1 service of ``--per-service`` instances and measures
   queries/s with dnsperf (max mode, ``--seconds``) on a mix of A, SRV and NXDOMAIN queries,
   and the server's CPU time per query (user + system of all its processes).
2. Registers the rest over HTTP (32 keep-alive clients) up to ``--services`` services, prints
   the rate, the memory of the server's processes (RSS of the main process and each worker)
   and measures queries/s again: the same queries, plus queries spread over every service.
3. Stops the server and starts it again on the same store: prints the time until /readyz
   answers 200 and checks that the last service answers.

Loopback only; the server is stopped by PID and the data directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from writes import register_all  # noqa: E402

from tests.support.helpers import DnsdiscProcess  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(server: DnsdiscProcess) -> float:
    """User + system CPU time of the server's processes so far (steal excluded)."""
    assert server.proc is not None
    total = 0
    for pid in [server.proc.pid, *server.children()]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def dnsperf_qps(server: DnsdiscProcess, queries: Path, seconds: int) -> tuple[float, float]:
    """Queries/s and the server's CPU microseconds per query, each the median of three runs:
    single runs on a shared VM differ by 30% or more in queries/s; CPU per query, which leaves
    out the time the hypervisor takes away, varies less."""
    runs = []
    for _ in range(3):
        before = cpu_seconds(server)
        qps, completed = _dnsperf_once(server.dns_port, queries, seconds)
        runs.append((qps, (cpu_seconds(server) - before) / completed * 1e6))
    return sorted(r[0] for r in runs)[1], sorted(r[1] for r in runs)[1]


def _dnsperf_once(port: int, queries: Path, seconds: int) -> tuple[float, int]:
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
         "-c", "32", "-q", "100", "-t", "1"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    qps = float(next(ln.split()[-1] for ln in out.splitlines() if "Queries per second" in ln))
    completed = int(next(ln.split()[2] for ln in out.splitlines() if "Queries completed" in ln))
    return qps, completed


def query_file(path: Path, services: list[str], rng: random.Random) -> Path:
    lines = []
    for _ in range(1000):
        svc = rng.choice(services)
        lines += [f"{svc}.svc.internal A"] * 5 + [f"_{svc}._tcp.svc.internal SRV"] * 4
        lines.append(f"missing-{rng.randrange(10)}.svc.internal A")
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--per-service", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=int, default=10)
    args = p.parse_args()
    rng = random.Random(1)
    tmp = Path(tempfile.mkdtemp())
    server = DnsdiscProcess(tmp / "node", extra_args=["--workers", str(args.workers)])
    try:
        server.start()
        per = args.per_service
        asyncio.run(register_all(server.http_port, per, 8, "svc", per))
        one = query_file(tmp / "one.txt", ["svc0"], rng)
        small_qps, small_cpu = dnsperf_qps(server, one, args.seconds)
        print(
            f"1 service x {per} instances: {small_qps:.0f} queries/s, "
            f"{small_cpu:.1f} CPU µs per query",
            flush=True,
        )

        total = args.services * per
        elapsed, _ = asyncio.run(register_all(server.http_port, total, 32, "svc", per))
        print(f"registered {total} instances in {elapsed:.1f} s: {total / elapsed:.0f}/s")
        assert server.proc is not None
        main_rss = rss_mib(server.proc.pid)
        workers = [rss_mib(pid) for pid in server.children()]
        print(
            f"memory (RSS): main {main_rss:.0f} MiB, workers "
            f"{', '.join(f'{w:.0f}' for w in workers)} MiB, total {main_rss + sum(workers):.0f} MiB"
        )
        big_qps, big_cpu = dnsperf_qps(server, one, args.seconds)
        spread = query_file(tmp / "all.txt", [f"svc{n}" for n in range(args.services)], rng)
        spread_qps, spread_cpu = dnsperf_qps(server, spread, args.seconds)
        after = [rss_mib(pid) for pid in server.children()]
        print(
            f"memory after the queries: workers {', '.join(f'{w:.0f}' for w in after)} MiB, "
            f"total {rss_mib(server.proc.pid) + sum(after):.0f} MiB"
        )
        print(
            f"{args.services} services x {per}: {big_qps:.0f} queries/s on the same queries "
            f"({big_qps / small_qps:.2f}x), {spread_qps:.0f} queries/s spread over all services "
            f"({spread_qps / small_qps:.2f}x)"
        )
        print(
            f"CPU µs per query: {big_cpu:.1f} on the same queries ({big_cpu / small_cpu:.2f}x), "
            f"{spread_cpu:.1f} spread over all services ({spread_cpu / small_cpu:.2f}x)"
        )

        server.stop()
        server.proc = None
        started = time.monotonic()
        server.start(timeout=120)
        startup = time.monotonic() - started
        last = f"svc{args.services - 1}.svc.internal"
        answered = len(server.addresses(last))
        print(f"restart from the store: ready in {startup:.2f} s; {last} answers {answered} A")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
