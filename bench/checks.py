"""Active health checks at scale (#22): checks/s the main process sustains with 10,000 instances
checked over HTTP every 5 s, how late the runs start against their due time, and DNS queries/s
beside them.

    .venv/bin/python bench/checks.py [--instances 10000] [--services 100] [--interval 5]
                                     [--warmup 10] [--window 30] [--rounds 3] [--seconds 5]
                                     [--backends 2] [--targets 2] [--workers 1]

Starts ``--backends`` HTTP backend processes (this file with ``--backend``: a raw asyncio protocol
on uvloop answering every request ``200 OK`` with keep-alive) listening on ``--targets``
address:port pairs in all (127.2.B.N, a port per process), and dnsdisc (SQLite, ``--workers``
DNS workers, default 1; the main process runs the checks) with ``health: checks_per_second:
5000`` (``--rate``) and ``check_networks: [127.0.0.0/8]``. ``--instances`` instances over
``--services`` services (100 each by default: the per-service cap of 16 in flight is not what
limits), each at its own address in 127.1.0.0/16, their check's ``address``/``port`` one of the
targets (a target's keep-alive pool holds at most 16 connections). Then ``--rounds`` rounds,
each measured with and without checks, alternating which goes first:

* with: the instances are registered with an HTTP check (``GET /health`` every ``--interval``
  s) through ``POST /v1/batch`` (128 ops a batch), paced over one interval so that their phases
  spread (the checks of a batch start together); ``--warmup`` s, then a ``--window`` s window read
  from ``/metrics`` before and after: checks/s (``dnsdisc_health_checks_total``), skipped runs,
  the delay of runs against their due time (``dnsdisc_health_check_delay_seconds``: the bucket
  holding the p99, and a linear estimate within it), CPU of the main process, its DNS worker(s)
  and the backends (``/proc/PID/stat``). Then dnsperf over UDP for ``--seconds`` (A queries of 10
  services) with the checks going on, the checks read over that time too.
* without: the same instances re-registered without a check (every check task ends), then the
  same dnsperf.

Prints a line per phase, then a Markdown table and the ratios. Every process is ended by its PID;
data goes to a temporary directory. Bounded: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf, dnsperf_parser  # noqa: E402
from tests.support.helpers import DnsdiscProcess, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


# -- the backend processes ---------------------------------------------------------------------


class _Answer(asyncio.Protocol):
    """Answers every request (no body: a GET) with 200 and no body, keeping the connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        n = self.buffer.count(b"\r\n\r\n")
        if n:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * n)


async def _serve(addresses: list[str], port: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(_Answer, address, port, backlog=1024) for address in addresses
    ]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # Until the bench closes our stdin (or ends us by PID); at most an hour.
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), 3600)
    for server in servers:
        server.close()


def backend_main(spec: str) -> None:
    addresses, port = spec.rsplit(":", 1)
    try:
        import uvloop

        uvloop.run(_serve(addresses.split(","), int(port)))
    except ImportError:
        asyncio.run(_serve(addresses.split(","), int(port)))


class Backends:
    """``count`` processes, ``targets`` listening addresses:ports in all (127.2.B.N, a port per
    process: Linux answers on all of 127.0.0.0/8)."""

    def __init__(self, count: int, targets: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.targets = [
            (f"127.2.{t % count}.{1 + t // count}", self.ports[t % count]) for t in range(targets)
        ]
        self.procs = []
        for port in self.ports:
            mine = ",".join(a for a, p in self.targets if p == port)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--backend", f"{mine}:{port}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the child fails fast or says ready
            if line.strip() != "ready":
                raise RuntimeError(f"a backend did not start: {line!r}")

    def end(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()  # by its PID
                proc.wait(5)


# -- measuring ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


_SAMPLE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+|\+Inf|NaN)$")


def scrape(server: DnsdiscProcess) -> dict[str, Any]:
    """The check figures of /metrics: runs, skipped, the delay histogram (cumulative)."""
    text = server.http("GET", "/metrics").raw.decode()
    out: dict[str, Any] = {"runs": 0.0, "failed": 0.0, "skipped": 0.0, "buckets": {}, "sum": 0.0}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "dnsdisc_health_checks_total":
            out["runs"] += value
            if 'result="failure"' in labels:
                out["failed"] += value
        elif name == "dnsdisc_health_checks_skipped_total":
            out["skipped"] = value
        elif name == "dnsdisc_health_check_delay_seconds_bucket":
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            out["buckets"][float(le)] = value
        elif name == "dnsdisc_health_check_delay_seconds_sum":
            out["sum"] = value
    return out


def delay_quantile(before: dict[str, Any], after: dict[str, Any], q: float) -> tuple[float, float]:
    """The ``q`` quantile of the runs' delays between two scrapes: the upper bound of the bucket
    holding it, and a linear estimate inside that bucket (seconds)."""
    bounds = sorted(after["buckets"])
    counts = [after["buckets"][b] - before["buckets"].get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan"), float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank:
            if bound == float("inf"):
                return bound, lower
            inside = cum - below
            return bound, lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cum
    return float("inf"), lower


class Taken:
    """Check figures and CPU between ``__init__`` and ``done``."""

    def __init__(self, server: DnsdiscProcess, backends: Backends) -> None:
        assert server.proc is not None
        self.server = server
        self.pids = {
            "main": [server.proc.pid],
            "workers": server.children(),
            "backends": [p.pid for p in backends.procs],
        }
        self.metrics = scrape(server)
        self.cpu = {k: sum(cpu_seconds(p) for p in v) for k, v in self.pids.items()}
        self.at = time.monotonic()

    def done(self) -> dict[str, float]:
        after = scrape(self.server)
        took = time.monotonic() - self.at
        cpu = {k: sum(cpu_seconds(p) for p in v) for k, v in self.pids.items()}
        runs = after["runs"] - self.metrics["runs"]
        bound, estimate = delay_quantile(self.metrics, after, 0.99)
        b50, e50 = delay_quantile(self.metrics, after, 0.5)
        counts = after["buckets"].get(float("inf"), 0.0) - self.metrics["buckets"].get(
            float("inf"), 0.0
        )
        mean = (after["sum"] - self.metrics["sum"]) / counts if counts else float("nan")
        late = counts - (after["buckets"].get(0.1, 0.0) - self.metrics["buckets"].get(0.1, 0.0))
        return {
            "seconds": took,
            "checks_s": runs / took,
            "failed": after["failed"] - self.metrics["failed"],
            "skipped": after["skipped"] - self.metrics["skipped"],
            "p99_bucket_ms": bound * 1000,
            "p99_est_ms": estimate * 1000,
            "p50_bucket_ms": b50 * 1000,
            "p50_est_ms": e50 * 1000,
            "mean_ms": mean * 1000,
            "over_100ms": late / counts if counts else float("nan"),
            **{f"cpu_{k}": (cpu[k] - self.cpu[k]) / took for k in cpu},
        }


# -- registering -------------------------------------------------------------------------------


def service_name(n: int) -> str:
    return f"chk-{n}"


def ops(
    args: argparse.Namespace, targets: list[tuple[str, int]], checks: bool
) -> list[dict[str, Any]]:
    out = []
    for n in range(args.instances):
        body: dict[str, Any] = {"address": f"127.1.{n // 250}.{1 + n % 250}", "port": 8080}
        if checks:
            address, port = targets[n % len(targets)]
            body["check"] = {
                "type": "http",
                "address": address,
                "port": port,
                "path": "/health",
                "interval": args.interval,
                "timeout": 2,
            }
        service = service_name(n % args.services)
        out.append({"op": "register", "service": service, "id": f"i{n}", "body": body})
    return out


async def register(url: str, all_ops: list[dict[str, Any]], over: float) -> float:
    """Every op in batches of 128, the batches spread evenly over ``over`` seconds (0: as fast
    as 4 clients go); the seconds it took."""
    chunks = [all_ops[i : i + 128] for i in range(0, len(all_ops), 128)]
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def send(chunk: list[dict[str, Any]]) -> None:
            async with session.post(f"{url}/v1/batch", json={"ops": chunk}) as resp:
                assert resp.status == 200, await resp.text()

        if over <= 0:

            async def worker(mine: list[list[dict[str, Any]]]) -> None:
                for chunk in mine:
                    await send(chunk)

            await asyncio.gather(*(worker(chunks[k::4]) for k in range(4)))
        else:
            gap = over / len(chunks)
            for k, chunk in enumerate(chunks):
                await asyncio.sleep(max(0.0, started + k * gap - time.monotonic()))
                await send(chunk)
    return time.monotonic() - started


# -- the bench ---------------------------------------------------------------------------------


def show(r: int, mode: str, what: str, d: dict[str, float]) -> None:
    print(
        f"round {r + 1} {mode} {what}: {d['checks_s']:,.0f} checks/s over {d['seconds']:.1f} s,"
        f" delay p50 {d['p50_est_ms']:.1f} ms (≤{d['p50_bucket_ms']:g}), p99"
        f" {d['p99_est_ms']:.1f} ms (≤{d['p99_bucket_ms']:g}), mean {d['mean_ms']:.1f} ms,"
        f" {d['over_100ms']:.2%} over 100 ms, skipped {d['skipped']:.0f}, failed"
        f" {d['failed']:.0f}; CPU main {d['cpu_main']:.0%}, workers {d['cpu_workers']:.0%},"
        f" backends {d['cpu_backends']:.0%}",
        flush=True,
    )


def report(args: argparse.Namespace, windows: list[dict[str, float]],
           beside: list[dict[str, float]], qps: dict[str, list[float]],
           qpc: dict[str, list[float]]) -> None:  # fmt: skip
    print(
        f"\n{args.instances:,} instances over {args.services} services, an HTTP check each every"
        f" {args.interval:g} s, {args.targets} targets in {args.backends} backends,"
        f" --workers {args.workers},"
        f" {args.window:g} s windows after {args.warmup:g} s, dnsperf {args.seconds} s,"
        f" {args.rounds} rounds\n"
    )
    print(
        "| round | checks/s | delay p50 ms | delay p99 ms (bucket) | > 100 ms | skipped |"
        " CPU main | CPU worker | CPU backends |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for name, rows in (("", windows), (" + dnsperf", beside)):
        for r, d in enumerate(rows):
            print(
                f"| {r + 1}{name} | {d['checks_s']:,.0f} | {d['p50_est_ms']:.1f} |"
                f" {d['p99_est_ms']:.1f} (≤ {d['p99_bucket_ms']:g}) | {d['over_100ms']:.2%} |"
                f" {d['skipped']:.0f} | {d['cpu_main']:.0%} | {d['cpu_workers']:.0%} |"
                f" {d['cpu_backends']:.0%} |"
            )
    print(
        "\n| round | DNS q/s with checks | without | with / without | q per worker CPU-s with"
        " | without | with / without |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for r in range(len(qps["with"])):
        w, wo = qps["with"][r], qps["without"][r]
        cw, cwo = qpc["with"][r], qpc["without"][r]
        print(
            f"| {r + 1} | {w:,.0f} | {wo:,.0f} | {w / wo:.2f}x | {cw:,.0f} | {cwo:,.0f} |"
            f" {cw / cwo:.2f}x |"
        )
    mw, mwo = statistics.median(qps["with"]), statistics.median(qps["without"])
    cw, cwo = statistics.median(qpc["with"]), statistics.median(qpc["without"])
    print(
        f"| median | {mw:,.0f} | {mwo:,.0f} | **{mw / mwo:.2f}x** | {cw:,.0f} | {cwo:,.0f} |"
        f" **{cw / cwo:.2f}x** |"
    )
    checks = statistics.median(d["checks_s"] for d in windows)
    p99 = max(d["p99_est_ms"] for d in windows)
    print(
        f"\nchecks/s (median of the windows) {checks:,.0f}, worst window's delay p99"
        f" {p99:.1f} ms; DNS with / without {mw / mwo:.2f}x, per worker CPU-second"
        f" {cw / cwo:.2f}x"
    )


def main() -> None:
    p = dnsperf_parser(__doc__, workers="1", seconds=5, rounds=3)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--instances", type=int, default=10000)
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--backends", type=int, default=2, help="backend processes")
    p.add_argument(
        "--targets", type=int, default=2, help="check targets (address:port) over the backends"
    )
    p.add_argument("--rate", type=float, default=5000, help="health.checks_per_second")
    args = p.parse_args()
    if args.backend:
        backend_main(args.backend)
        return
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "bench.yaml").write_text(
        f"health:\n  checks_per_second: {args.rate:g}\n  check_networks: ['127.0.0.0/8']\n"
    )
    server = DnsdiscProcess(
        tmp / "node",
        extra_args=["--workers", args.workers, "--config", str(tmp / "bench.yaml")],
    )
    qfile = tmp / "queries.txt"
    qfile.write_text("".join(f"{service_name(n)}.svc.internal A\n" for n in range(10)))
    backends: Backends | None = None
    windows: list[dict[str, float]] = []
    beside: list[dict[str, float]] = []
    qps: dict[str, list[float]] = {"with": [], "without": []}
    # Queries per CPU-second of the DNS worker(s): what a query costs them, apart from how
    # much of the 2 cores the checks leave them.
    qpc: dict[str, list[float]] = {"with": [], "without": []}
    try:
        backends = Backends(args.backends, args.targets)
        server.start()
        assert server.proc is not None
        print(
            f"dnsdisc pid {server.proc.pid}, workers {server.children()}, backends"
            f" {[p.pid for p in backends.procs]} on ports {backends.ports},"
            f" {len(backends.targets)} targets",
            flush=True,
        )
        plain = ops(args, backends.targets, checks=False)
        checked = ops(args, backends.targets, checks=True)
        took = asyncio.run(register(server.http_url, plain, 0))
        print(f"{args.instances:,} instances registered in {took:.1f} s", flush=True)
        now = "without"
        for r in range(args.rounds):
            for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
                if mode == "with":
                    if now != mode:
                        took = asyncio.run(register(server.http_url, checked, args.interval))
                        print(f"checks registered in {took:.1f} s", flush=True)
                        time.sleep(args.warmup)
                    taken = Taken(server, backends)
                    time.sleep(args.window)
                    windows.append(taken.done())
                    show(r, mode, "window", windows[-1])
                elif now != mode:
                    took = asyncio.run(register(server.http_url, plain, 0))
                    print(f"checks removed in {took:.1f} s", flush=True)
                    time.sleep(2.0)
                now = mode
                taken = Taken(server, backends)
                qps[mode].append(float(dnsperf(server.dns_port, qfile, args, "udp")["qps"]))
                d = taken.done()
                qpc[mode].append(qps[mode][-1] / max(d["cpu_workers"], 1e-9))
                if mode == "with":
                    beside.append(d)
                    show(r, mode, "beside dnsperf", d)
                print(
                    f"round {r + 1} {mode}: {qps[mode][-1]:,.0f} q/s (CPU main {d['cpu_main']:.0%},"
                    f" workers {d['cpu_workers']:.0%})",
                    flush=True,
                )
    finally:
        server.stop()
        if backends is not None:
            backends.end()
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, windows, beside, qps, qpc)


if __name__ == "__main__":
    main()
