"""Registration throughput and latency over HTTP, with and without DNS query load.

    .venv/bin/python bench/writes.py [--count 6000] [--clients 32] [--workers 2] [--qps 20000]
                                     [--client python|wrk] [--wrk-seconds 10]

Starts dnsdisc (SQLite store, durable commits) on loopback ports, registers ``--count``
instances (10 per service) with ``--clients`` concurrent keep-alive HTTP clients, and prints
registrations/s and the latency percentiles of the PUTs. It does so for four setups: DNS answered
in the main process (``--workers 0``: a write waits for nothing but the store) and by
``--workers`` processes (a write also waits until no worker can answer from an older state),
each idle and under dnsperf at ``--qps`` queries/s. What the workers add to each write is read
from the server's own ``dnsdisc_worker_confirm_seconds`` histogram, and how many writes the
workers' fences did not cover (they waited for an acknowledgement) from
``dnsdisc_worker_ack_waits_total``. Use ``--clients 1`` for latency without queueing, the default
32 for throughput. ``--client wrk`` loads the server with wrk (C, one thread, ``bench/reg.lua``: a
new instance per PUT) for ``--wrk-seconds`` instead of the Python client, which takes about as
much CPU as the server. Every server is stopped by PID; data goes to a temporary directory.
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
sys.path.insert(0, str(ROOT))

from tests.support.helpers import DnsdiscProcess  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def register_all(
    port: int, count: int, clients: int, tag: str, per_service: int = 10
) -> tuple[float, list[float]]:
    """``count`` instances, ``per_service`` to a service (``<tag>0``, ``<tag>1``, ...)."""
    latencies: list[float] = []
    todo = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in todo:
            body = {"address": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", "port": 80}
            service, iid = divmod(n, per_service)
            url = f"http://127.0.0.1:{port}/v1/services/{tag}{service}/instances/i{iid}"
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


def register_wrk(port: int, clients: int, seconds: int) -> tuple[float, float, float, float]:
    """Registrations/s and the p50, p99 and max latency (s) of wrk's PUTs over ``seconds``."""
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds}s", "--latency",
         "-s", str(ROOT / "bench" / "reg.lua"), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw failed registrations:\n{out}")
    rate = float(next(ln.split()[-1] for ln in out.splitlines() if "Requests/sec" in ln))
    dist = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%"):
            dist[parts[0]] = _wrk_seconds(parts[1])
    stats = next(ln.split() for ln in out.splitlines() if ln.strip().startswith("Latency "))
    return rate, dist["50%"], dist["99%"], _wrk_seconds(stats[3])


def _wrk_seconds(text: str) -> float:
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(f"unexpected wrk duration {text!r}")


def measure(args: argparse.Namespace, workers: int, qps: int, base: Path) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(dir=base))
    server = DnsdiscProcess(directory / "node", extra_args=["--workers", str(workers)]).start()
    try:
        with dns_load(server, qps, args.load_seconds, directory) as load:
            if args.client == "wrk":
                rate, p50, p99, worst = register_wrk(
                    server.http_port, args.clients, args.wrk_seconds
                )
            else:
                elapsed, lat = asyncio.run(
                    register_all(server.http_port, args.count, args.clients, "svc")
                )
                rate, p50, p99 = args.count / elapsed, percentile(lat, 50), percentile(lat, 99)
                worst = max(lat)
            answered = ""
            if load is not None:
                out, _ = load.communicate(timeout=args.load_seconds + 10)
                answered = next(
                    (ln.split()[-1] for ln in out.splitlines() if "Queries per second" in ln), "?"
                )
        metrics = server.http("GET", "/metrics").raw.decode()
        confirm = confirm_p99(metrics)
        ack_waits = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("dnsdisc_worker_ack_waits_total")
        )
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "workers": workers,
        "qps": qps,
        "answered_qps": float(answered) if answered not in ("", "?") else 0.0,
        "regs_per_s": rate,
        "p50_ms": p50 * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": worst * 1000,
        "confirm_p99_ms": confirm[0],
        "confirm_under_5ms": confirm[1],
        "ack_waits": int(ack_waits),
    }


def confirm_p99(metrics: str) -> tuple[float, float]:
    """From the server's dnsdisc_worker_confirm_seconds histogram: the upper bound of the bucket
    holding the 99th percentile of what writes waited for the workers (ms), and the share of
    writes that waited at most 5 ms. (0, 1) without workers: nothing to wait for."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith("dnsdisc_worker_confirm_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            upper = float("inf") if bound == "+Inf" else float(bound)
            buckets.append((upper, float(line.split()[-1])))
    if not buckets or buckets[-1][1] == 0:
        return 0.0, 1.0
    total = buckets[-1][1]
    p99 = next(b for b, n in buckets if n >= 0.99 * total)
    under5 = next(n for b, n in buckets if b >= 0.005) / total
    return p99 * 1000, under5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=6000)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--qps", type=int, default=20000)
    p.add_argument("--load-seconds", type=int, default=15)
    p.add_argument("--client", choices=("python", "wrk"), default="python")
    p.add_argument("--wrk-seconds", type=int, default=10)
    args = p.parse_args()
    for tool in ("dnsperf", "wrk") if args.client == "wrk" else ("dnsperf",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
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
    wrk = args.client == "wrk"
    what = f"wrk for {args.wrk_seconds} s" if wrk else f"{args.count} registrations"
    print(f"\n{what}, {args.clients} clients, SQLite store\n")
    print(
        "| DNS workers | DNS load offered | DNS answered/s | registrations/s "
        "| p50 ms | p99 ms | max ms | confirm p99 ms (bucket) | confirmed in 5 ms "
        "| waited for an ACK |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        confirm = f"≤ {r['confirm_p99_ms']:g}" if r["workers"] else "-"
        print(
            f"| {r['workers']:.0f} | {r['qps']:.0f} | {r['answered_qps']:.0f} | "
            f"{r['regs_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} "
            f"| {confirm} "
            f"| {r['confirm_under_5ms'] * 100:.1f}% | {r['ack_waits']} |"
        )


if __name__ == "__main__":
    main()
