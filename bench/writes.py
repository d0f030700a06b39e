"""Registration throughput and latency over HTTP, with and without DNS query load.

    .venv/bin/python bench/writes.py [--count 6000] [--clients 32] [--workers 2] [--qps 20000]

Starts dnsdisc (SQLite store, durable commits) on loopback ports, registers ``--count``
instances (10 per service) with ``--clients`` concurrent keep-alive HTTP clients, and prints
registrations/s and the latency percentiles of the PUTs. It does so for four setups: DNS answered
in the main process (``--workers 0``: a write waits for nothing but the store) and by
``--workers`` processes (a write also waits for every worker to confirm), each idle and under
dnsperf at ``--qps`` queries/s. The difference between the two p99 figures under load is what the
workers' confirmation adds. Every server is stopped by PID; data goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import DnsdiscProcess  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def register_all(port: int, count: int, clients: int, tag: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    todo = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in todo:
            body = {"address": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", "port": 80}
            url = f"http://127.0.0.1:{port}/v1/services/{tag}{n // 10}/instances/i{n % 10}"
            started = time.perf_counter()
            async with session.put(url, json=body) as resp:
                await resp.read()
                if resp.status not in (200, 201):
                    raise RuntimeError(f"PUT {url}: {resp.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies


def queries_file(directory: Path) -> Path:
    path = directory / "queries.txt"
    lines = ["load0.svc.internal A", "_load0._tcp.svc.internal SRV", "missing.svc.internal A"]
    path.write_text("\n".join(lines * 10) + "\n")
    return path


@contextlib.contextmanager
def dns_load(server: DnsdiscProcess, qps: int, seconds: int, directory: Path):  # type: ignore[no-untyped-def]
    """dnsperf at a fixed rate for at most ``seconds`` (it stops by itself)."""
    if not qps:
        yield None
        return
    for n in range(5):
        server.register("load0", f"i{n}", address=f"10.200.0.{n + 1}", port=80)
    proc = subprocess.Popen(
        [
            "dnsperf",
            "-s", "127.0.0.1",
            "-p", str(server.dns_port),
            "-d", str(queries_file(directory)),
            "-l", str(seconds),
            "-Q", str(qps),
            "-c", "8",
            "-q", "500",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # let the load settle before measuring
        yield proc
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(seconds + 5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def measure(args: argparse.Namespace, workers: int, qps: int, base: Path) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(dir=base))
    server = DnsdiscProcess(directory / "node", extra_args=["--workers", str(workers)]).start()
    try:
        with dns_load(server, qps, args.load_seconds, directory) as load:
            elapsed, lat = asyncio.run(
                register_all(server.http_port, args.count, args.clients, "svc")
            )
            answered = ""
            if load is not None:
                out, _ = load.communicate(timeout=args.load_seconds + 10)
                answered = next(
                    (ln.split()[-1] for ln in out.splitlines() if "Queries per second" in ln), "?"
                )
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "workers": workers,
        "qps": qps,
        "answered_qps": float(answered) if answered not in ("", "?") else 0.0,
        "regs_per_s": args.count / elapsed,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=6000)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--qps", type=int, default=20000)
    p.add_argument("--load-seconds", type=int, default=15)
    args = p.parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (0, args.workers):
            for qps in (0, args.qps):
                rows.append(measure(args, workers, qps, Path(tmp)))
                r = rows[-1]
                print(
                    f"workers {r['workers']:.0f}, DNS load {r['qps']:.0f}/s: "
                    f"{r['regs_per_s']:.0f} registrations/s, p50 {r['p50_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms",
                    file=sys.stderr,
                )
    print(f"\n{args.count} registrations, {args.clients} clients, SQLite store\n")
    print(
        "| DNS workers | DNS load offered | DNS answered/s | registrations/s "
        "| p50 ms | p99 ms | max ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']:.0f} | {r['qps']:.0f} | {r['answered_qps']:.0f} | "
            f"{r['regs_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} |"
        )
    loaded = {r["workers"]: r for r in rows if r["qps"]}
    if len(loaded) == 2:
        added = loaded[args.workers]["p99_ms"] - loaded[0]["p99_ms"]
        print(f"\np99 added by waiting for {args.workers} workers under load: {added:.2f} ms")


if __name__ == "__main__":
    main()
