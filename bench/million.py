"""A million instances (#25): 100,000 services x 10 on one node, SQLite store.

    .venv/bin/python bench/million.py [--services 100000] [--per-service 10] [--workers 2]
                                      [--seconds 5] [--rounds 3] [--tree DIR]

Starts two dnsdisc servers (SQLite, ``--workers`` DNS workers each, ``transfer.allow`` on
loopback, limits raised to fit): a *small* one holding one service of ``--per-service``
instances and nothing else, and a *big* one into which ``--services`` x ``--per-service``
instances are registered through ``POST /v1/batch`` (batches of 128, four keep-alive clients;
the big server's first service is the same as the small one's). Then, on the big one:

1. Memory: the resident set (VmRSS) and its peak (VmHWM) of the main process and of each DNS
   worker, and their sum, once every worker answers for the last service and its RSS has
   stopped growing.
2. Query cost: the same query mix (A and SRV of the first service, a NXDOMAIN in ten) sent by
   dnsperf (max mode, ``--seconds`` s) to the small and to the big server in turn, ``--rounds``
   times, alternating; each server's CPU time (user + system of all its processes) per
   completed query, and queries/s. Medians, and big/small.
3. AXFR of ``svc.internal.`` over TCP, read to its last message by a raw client (records
   counted, nothing kept); every DNS worker's VmRSS sampled every 20 ms meanwhile: its growth
   against the zone's size on the wire says whether the transfer streams.
4. Restart from the store: the big server is stopped (SIGTERM, by its PID) and started again on
   the same data directory; the time until ``/readyz`` answers 200, then that the last
   service answers its A query; and the memory again.

``--tree DIR`` runs the servers from another checkout (with its own ``.venv``, e.g. a
``git worktree`` of the commit before a change), for before/after figures.

Loopback only; both servers are stopped by their PIDs and the data directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import dns.exception
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import _dnsperf_once, cpu_seconds  # noqa: E402
from transfer import read_axfr  # noqa: E402

from tests.support.helpers import DnsdiscProcess  # noqa: E402


def status_mib(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory(server: DnsdiscProcess) -> str:
    """``main R (peak P), workers R1 (P1), R2 (P2): total T MiB`` (RSS and VmHWM)."""
    assert server.proc is not None
    main = server.proc.pid
    workers = server.children()
    rss = {pid: status_mib(pid) for pid in [main, *workers]}
    hwm = {pid: status_mib(pid, "VmHWM") for pid in [main, *workers]}
    parts = ", ".join(f"{rss[w]:,.0f} (peak {hwm[w]:,.0f})" for w in workers)
    return (
        f"main {rss[main]:,.0f} (peak {hwm[main]:,.0f}), workers {parts}: "
        f"total **{sum(rss.values()):,.0f} MiB** RSS (sum of peaks {sum(hwm.values()):,.0f})"
    )


def address(n: int) -> str:
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


async def register(url: str, services: int, per: int, first: int = 0) -> float:
    """Services ``svc<first>`` .. ``svc<services-1>``, ``per`` instances each, in batches of 128
    (made as they are sent, so the client does not hold a million operations)."""
    total = (services - first) * per

    def chunks(k: int, clients: int):  # type: ignore[no-untyped-def]
        batch: list[dict[str, object]] = []
        for n in range(first * per + k * 128, services * per, 128 * clients):
            batch = [
                {
                    "op": "register",
                    "service": f"svc{m // per}",
                    "id": f"i{m % per}",
                    "body": {"address": address(m), "port": 80},
                }
                for m in range(n, min(n + 128, services * per))
            ]
            yield batch

    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client(k: int) -> None:
            for batch in chunks(k, 4):
                async with session.post(f"{url}/v1/batch", json={"ops": batch}) as resp:
                    assert resp.status == 200, await resp.text()

        await asyncio.gather(*(client(k) for k in range(4)))
    took = time.perf_counter() - started
    if total > 1000:
        print(f"registered {total:,} instances in {took:.1f} s: {total / took:,.0f}/s", flush=True)
    return took


def wait_settled(server: DnsdiscProcess, name: str, timeout: float = 300) -> float:
    """Until ``name`` answers (every worker: a few queries from different source ports) and the
    workers' RSS has stopped growing; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            if all(server.addresses(name, timeout=10) for _ in range(8)):
                break
        except dns.exception.Timeout:
            pass  # a worker busy applying
        time.sleep(0.5)
    held = -10.0
    while time.monotonic() < deadline:
        now = sum(status_mib(pid) for pid in server.children())
        if abs(now - held) < 2:
            break
        held = now
        time.sleep(2)
    return time.monotonic() - started


def query_file(path: Path) -> Path:
    lines = ["svc0.svc.internal A"] * 5 + ["_svc0._tcp.svc.internal SRV"] * 4
    lines.append("missing.svc.internal A")
    path.write_text("\n".join(lines * 100) + "\n")
    return path


def axfr(port: int, workers: list[int]) -> dict[str, float]:
    """One AXFR read to its end (records counted, nothing kept); each worker's RSS sampled
    every 20 ms: the largest growth of any worker."""
    query = dns.message.make_query("svc.internal.", "AXFR").to_wire()
    before = {pid: status_mib(pid) for pid in workers}
    peak = dict(before)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in workers:
                peak[pid] = max(peak[pid], status_mib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        records, size = read_axfr(port, query, 120)
    finally:
        done.set()
        sampler.join()
    took = time.perf_counter() - started
    growth = max(peak[pid] - before[pid] for pid in workers)
    return {"seconds": took, "records": records, "mb": size / 1e6, "growth": growth,
            "peak": max(peak.values()), "before": max(before.values())}  # fmt: skip


def profile(server: DnsdiscProcess, out: Path, spy: list[subprocess.Popen[bytes]]) -> None:
    """py-spy (raw, the workers too) on the server being started, from its first moment."""
    while server.proc is None:
        time.sleep(0.01)
    cmd = [str(ROOT / ".venv/bin/py-spy"), "record", "--nonblocking", "--subprocesses",
           "-r", "50", "-f", "raw", "-o", str(out), "-p", str(server.proc.pid)]  # fmt: skip
    spy.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=100_000)
    p.add_argument("--per-service", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tree", type=Path, help="run the servers from this checkout")
    p.add_argument("--profile-restart", type=Path, help="py-spy raw profile of the restart")
    args = p.parse_args()
    per = args.per_service
    total = args.services * per
    tmp = Path(tempfile.mkdtemp())
    conf = tmp / "million.yaml"
    conf.write_text(
        "transfer:\n  allow: ['127.0.0.0/8']\n"
        f"limits:\n  services: {args.services + 10}\n  instances: {total + 10}\n"
    )
    extra = ["--workers", str(args.workers), "--config", str(conf)]
    small = DnsdiscProcess(tmp / "small", extra_args=extra, tree=args.tree)
    big = DnsdiscProcess(tmp / "big", extra_args=extra, tree=args.tree)
    last = f"svc{args.services - 1}.svc.internal"
    try:
        small.start(timeout=60)
        big.start(timeout=60)
        asyncio.run(register(small.http_url, 1, per))
        asyncio.run(register(big.http_url, args.services, per))
        settled = wait_settled(big, last)
        print(f"workers settled {settled:.1f} s after the last write", flush=True)
        print(f"memory after registering: {memory(big)}", flush=True)

        queries = query_file(tmp / "queries.txt")
        runs: dict[str, list[tuple[float, float]]] = {"small": [], "big": []}
        for r in range(args.rounds):
            for name, server in (("small", small), ("big", big)):
                before = cpu_seconds(server)
                qps, completed = _dnsperf_once(server.dns_port, queries, args.seconds)
                cpu = (cpu_seconds(server) - before) / completed * 1e6
                runs[name].append((qps, cpu))
                print(f"round {r + 1} {name}: {qps:,.0f} q/s, {cpu:.1f} CPU µs/query", flush=True)
        med = {k: (statistics.median(q for q, _ in v), statistics.median(c for _, c in v))
               for k, v in runs.items()}  # fmt: skip
        print(
            f"query cost: 1 service x {per} alone {med['small'][1]:.1f} CPU µs/query "
            f"({med['small'][0]:,.0f} q/s); with {total:,} instances {med['big'][1]:.1f} "
            f"({med['big'][0]:,.0f} q/s): **{med['big'][1] / med['small'][1]:.2f}x** CPU per "
            f"query, {med['big'][0] / med['small'][0]:.2f}x q/s",
            flush=True,
        )
        print(f"memory after the queries: {memory(big)}", flush=True)

        log_before = len(big.log())
        try:
            assert big.proc is not None
            d = axfr(big.dns_port, big.children() or [big.proc.pid])  # --workers 0: the main
            print(
                f"AXFR: {d['seconds']:.1f} s, {d['records']:,.0f} records "
                f"({d['records'] / d['seconds']:,.0f}/s), {d['mb']:,.1f} MB on the wire; largest "
                f"worker RSS growth during it **+{d['growth']:.1f} MiB** (workers "
                f"{d['before']:,.0f} MiB before, peak {d['peak']:,.0f})",
                flush=True,
            )
        except OSError as exc:
            print(f"AXFR failed: {exc!r}", flush=True)
        # What the supervisor did meanwhile (a worker killed for not answering ends the transfer).
        for line in big.log()[log_before:].splitlines():
            if "supervisor" in line or "transfer" in line:
                print(f"  log: {line[:200]}", flush=True)
        small.stop()
        small.proc = None

        big.stop()
        big.proc = None
        spy: list[subprocess.Popen[bytes]] = []
        if args.profile_restart:
            threading.Thread(
                target=profile, args=(big, args.profile_restart, spy), daemon=True
            ).start()
        started = time.monotonic()
        big.start(timeout=600)
        ready = time.monotonic() - started
        for proc in spy:  # py-spy writes its profile when interrupted
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        answered = big.addresses(last)
        print(
            f"restart from the store: /readyz 200 in **{ready:.1f} s**; {last} answers "
            f"{len(answered)} A right after",
            flush=True,
        )
        settled = wait_settled(big, last)
        print(f"memory after the restart (+{settled:.0f} s): {memory(big)}", flush=True)
    finally:
        small.stop()
        big.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
