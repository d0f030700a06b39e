"""Watchers (#20): 1,000 blocking queries and 1,000 event streams on one server; how soon a change
reaches them, and what they cost writes and DNS queries.

    .venv/bin/python bench/watchers.py [--blocking 1000] [--sse 1000] [--services 50]
                                       [--changes 50] [--writes 300] [--rounds 3] [--seconds 5]

Starts dnsdisc (SQLite, ``--workers 1``, on loopback ports, with ``http.max_connections`` and
``http.max_connections_per_client`` set to hold every watcher: they all come from 127.0.0.1) and
registers ``--services`` services of one instance each. Then ``--rounds`` rounds, each measured
with and without watchers, alternating which goes first:

* with: ``--procs`` client processes (aiohttp, this file with ``--client``) open ``--blocking``
  blocking GETs (``/v1/services/{s}?index=<current>&wait=5m``, spread over the services, each
  asking again with the index it got, as consul-template does) and ``--sse`` streams
  (``/v1/events``; ``--unfiltered`` of them, default half, without ``?service=``, so every
  change goes to them, the others with one service's name); then ``--changes`` changes,
  ``--gap`` apart, each a POST /v1/batch re-registering one service's instance (its ``index``
  names the change).
  Each watcher's wake (a blocking GET's response headers, an SSE event's ``id:``) is timed
  against the write's response (negative: the watcher knew before the writer) and against its
  request; watchers that never saw a change of theirs are counted as missed.
* both: ``--writes`` PUTs of instances one after the other (latency p50/p99; to the watched
  services, or with ``--unwatched`` to one nobody watches), and dnsperf over UDP for
  ``--seconds`` (A queries over the services).

Prints the wake delays, the write latency and QPS with and without watchers, and the ratios.
The clients and the server are ended by their PIDs; data goes to a temporary directory. Bounded:
every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
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
from tests.support.helpers import DnsdiscProcess  # noqa: E402

INDEX = "X-Dnsdisc-Index"
FOREVER = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)


def service_name(n: int) -> str:
    return f"watch-{n}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the client processes ----------------------------------------------------------------------


def raise_descriptors(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


async def blocking_watcher(
    session: aiohttp.ClientSession, url: str, service: str, seen: list[tuple[str, str, int, float]]
) -> None:
    async with session.get(f"{url}/v1/services/{service}") as resp:
        await resp.read()
        index = int(resp.headers[INDEX])
    while True:
        path = f"{url}/v1/services/{service}?index={index}&wait=5m"
        async with session.get(path) as resp:
            woke = time.monotonic()
            await resp.read()
            index = int(resp.headers[INDEX])
        seen.append(("b", service, index, woke))


async def sse_watcher(
    session: aiohttp.ClientSession,
    url: str,
    service: str | None,
    seen: list[tuple[str, str, int, float]],
    connected: asyncio.Event,
) -> None:
    query = f"?service={service}" if service else ""
    async with session.get(f"{url}/v1/events{query}") as resp:
        assert resp.status == 200, resp.status
        buffer = b""
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if event.startswith(b"id: "):
                    index = int(event[4 : event.index(b"\n")])
                    seen.append(("s", service or "", index, now))
                elif event.startswith(b": connected"):
                    connected.set()


async def client(url: str, blocking: list[str], sse: list[str | None]) -> None:
    """Open the watchers, say ``ready`` on stdout, and on ``stop`` from stdin print what each
    saw (one JSON line) and the CPU time this process used."""
    seen: list[tuple[str, str, int, float]] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=FOREVER) as session:
        events = [asyncio.Event() for _ in sse]
        tasks = [
            asyncio.create_task(sse_watcher(session, url, s, seen, e))
            for s, e in zip(sse, events, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
        # The blocking ones in groups: each first GETs its service's index.
        for start in range(0, len(blocking), 100):
            group = [
                asyncio.create_task(blocking_watcher(session, url, s, seen))
                for s in blocking[start : start + 100]
            ]
            tasks += group
            await asyncio.sleep(0.05)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"a watcher failed: {task.exception()!r}")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 600)
        failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "seen": seen,
        "cpu": usage.ru_utime + usage.ru_stime,
        "failed": [repr(f) for f in failed],
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def client_main(args: argparse.Namespace) -> None:
    spec = json.loads(args.client)
    raise_descriptors(len(spec["blocking"]) + len(spec["sse"]) + 256)
    asyncio.run(client(spec["url"], spec["blocking"], spec["sse"]))


# -- the bench ---------------------------------------------------------------------------------


class Watchers:
    """The client processes, with every watcher open."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.blocking = [service_name(n % args.services) for n in range(args.blocking)]
        # ``--unfiltered`` of the streams take every change, the others one service each.
        everything = round(args.sse * args.unfiltered)
        self.sse: list[str | None] = [
            None if n < everything else service_name(n % args.services) for n in range(args.sse)
        ]
        for k in range(args.procs):
            spec = {
                "url": url,
                "blocking": self.blocking[k :: args.procs],
                "sse": self.sse[k :: args.procs],
            }
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--client", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )

    def ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the child's own deadlines bound this
            if line.strip() != "ready" or time.monotonic() > deadline:
                raise RuntimeError(f"a client process did not get ready: {line!r}")

    def stop(self) -> tuple[list[tuple[str, str, int, float]], float, list[str]]:
        seen: list[tuple[str, str, int, float]] = []
        cpu = 0.0
        failed: list[str] = []
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc in self.procs:
            assert proc.stdout is not None
            out = json.loads(proc.stdout.readline())
            seen += [(k, s, int(i), float(t)) for k, s, i, t in out["seen"]]
            cpu += out["cpu"]
            failed += out["failed"]
            proc.wait(30)
        return seen, cpu, failed

    def end(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()  # by its PID
                proc.wait(5)


def connections(server: DnsdiscProcess) -> int:
    text = server.http("GET", "/metrics").raw.decode()
    for line in text.splitlines():
        if line.startswith("dnsdisc_http_connections "):
            return int(float(line.split()[-1]))
    return 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def make_changes(
    url: str, services: int, count: int, gap: float
) -> list[tuple[int, str, float, float]]:
    """``count`` changes, ``gap`` s apart: (index, service, sent, answered) each."""
    made = []
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            service = service_name(n % services)
            op = {"op": "register", "service": service, "id": "i0",
                  "body": {"address": "10.0.0.1", "port": 80, "weight": 1 + n % 200}}  # fmt: skip
            sent = time.monotonic()
            async with session.post(f"{url}/v1/batch", json={"ops": [op]}) as resp:
                got = await resp.json()
                answered = time.monotonic()
                assert resp.status == 200, got
            made.append((int(got["index"]), service, sent, answered))
            await asyncio.sleep(gap)
    return made


async def write_latency(
    url: str, services: int, count: int, tag: str, unwatched: bool = False
) -> list[float]:
    """``count`` PUTs of instances one after the other: each one's latency in ms. To the watched
    services, or (``unwatched``) to one no blocking query or filtered stream follows."""
    took = []
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            service = "unwatched" if unwatched else service_name(n % services)
            path = f"{url}/v1/services/{service}/instances/{tag}-{n}"
            body = {"address": f"10.1.{n // 250}.{1 + n % 250}", "port": 80}
            started = time.perf_counter()
            async with session.put(path, json=body) as resp:
                await resp.read()
                assert resp.status in (200, 201), resp.status
            took.append((time.perf_counter() - started) * 1000)
    return took


def wake_delays(
    made: list[tuple[int, str, float, float]],
    seen: list[tuple[str, str, int, float]],
    watchers: Watchers,
) -> dict[str, Any]:
    by_index = {index: (service, sent, answered) for index, service, sent, answered in made}
    after_answer: list[float] = []
    after_sent: list[float] = []
    got = {"b": 0, "s": 0}
    for kind, _service, index, at in seen:
        if index in by_index:
            _, sent, answered = by_index[index]
            after_answer.append((at - answered) * 1000)
            after_sent.append((at - sent) * 1000)
            got[kind] += 1
    expected = {"b": 0, "s": 0}
    for _index, service, _sent, _answered in made:
        expected["b"] += watchers.blocking.count(service)
        expected["s"] += sum(1 for s in watchers.sse if s is None or s == service)
    return {
        "after_answer": after_answer,
        "after_sent": after_sent,
        "got": got,
        "expected": expected,
    }


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, list[float]]],
    delays: list[dict[str, Any]],
) -> None:
    print(
        f"\n{args.blocking} blocking watchers + {args.sse} SSE streams ({args.unfiltered:.0%} of"
        f" them unfiltered) over {args.services} services, {args.changes} changes"
        f" {args.gap * 1000:.0f} ms apart per round,"
        f" {args.rounds} rounds, --workers {args.workers}\n"
    )
    print("| wake of a watcher, ms | p50 | p99 | max |\n|---|---:|---:|---:|")
    for key, name in (("after_answer", "after the write's answer"),
                      ("after_sent", "after the write was sent")):  # fmt: skip
        every = [x for d in delays for x in d[key]]
        print(
            f"| {name} | {percentile(every, 0.5):.1f} | {percentile(every, 0.99):.1f} |"
            f" {max(every, default=float('nan')):.1f} |"
        )
    got = sum(sum(d["got"].values()) for d in delays)
    expected = sum(sum(d["expected"].values()) for d in delays)
    print(f"\nwakes seen: {got:,} of {expected:,} expected\n")
    print("| | writes p50 ms | writes p99 ms | DNS q/s |\n|---|---:|---:|---:|")
    row = {}
    for mode in ("without", "with"):
        m = results[mode]
        row[mode] = (
            percentile(m["writes"], 0.5),
            percentile(m["writes"], 0.99),
            statistics.median(m["qps"]),
        )
        p50, p99, qps = row[mode]
        print(f"| {mode} watchers | {p50:.2f} | {p99:.2f} | {qps:,.0f} |")
    ratios = [row["with"][k] / row["without"][k] for k in range(3)]
    print(
        f"| with / without | {ratios[0]:.2f}x | {ratios[1]:.2f}x | {ratios[2]:.2f}x |\n"
        "(writes: over every round's writes; q/s: median of the rounds)"
    )


def main() -> None:
    p = dnsperf_parser(__doc__, workers="1", seconds=5, rounds=3)
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--blocking", type=int, default=1000)
    p.add_argument("--sse", type=int, default=1000)
    p.add_argument("--services", type=int, default=50)
    p.add_argument("--changes", type=int, default=50)
    p.add_argument("--gap", type=float, default=0.1, help="seconds between changes")
    p.add_argument("--writes", type=int, default=300)
    p.add_argument(
        "--unfiltered", type=float, default=0.5, help="share of streams without ?service="
    )
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument(
        "--unwatched",
        action="store_true",
        help="the timed writes go to a service nobody watches (with --unfiltered 0, they wake "
        "no one: what idle watchers cost a write)",
    )
    args = p.parse_args()
    if args.client:
        client_main(args)
        return
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    total = args.blocking + args.sse
    tmp = Path(tempfile.mkdtemp())
    # Every watcher comes from 127.0.0.1: both caps must hold them, and the bench's own requests.
    cap = total + 200
    (tmp / "bench.yaml").write_text(
        f"http:\n  max_connections: {cap}\n  max_connections_per_client: {cap}\n"
    )
    server = DnsdiscProcess(
        tmp / "node", extra_args=["--workers", args.workers, "--config", str(tmp / "bench.yaml")]
    )
    qfile = tmp / "queries.txt"
    qfile.write_text("".join(f"{service_name(n)}.svc.internal A\n" for n in range(args.services)))
    results: dict[str, dict[str, list[float]]] = {
        mode: {"p50": [], "p99": [], "qps": [], "writes": []} for mode in ("with", "without")
    }
    delays: list[dict[str, Any]] = []
    watchers: Watchers | None = None
    try:
        server.start()
        assert server.proc is not None
        print(f"dnsdisc pid {server.proc.pid}", flush=True)
        for n in range(args.services):
            server.register(service_name(n), "i0", address="10.0.0.1", port=80)
        idle_rss = rss_mib(server.proc.pid)
        for r in range(args.rounds):
            modes = ["with", "without"] if r % 2 == 0 else ["without", "with"]
            for mode in modes:
                if mode == "with":
                    opened = time.monotonic()
                    watchers = Watchers(server.http_url, args)
                    watchers.ready()
                    deadline = time.monotonic() + 60
                    while connections(server) < total and time.monotonic() < deadline:
                        time.sleep(0.2)
                    open_s = time.monotonic() - opened
                    time.sleep(1.0)  # every blocking GET parked
                    held = connections(server)
                    rss = rss_mib(server.proc.pid)
                    made = asyncio.run(
                        make_changes(server.http_url, args.services, args.changes, args.gap)
                    )
                    time.sleep(0.5)
                took = asyncio.run(write_latency(server.http_url, args.services, args.writes,
                                                 f"r{r}{mode}", args.unwatched))  # fmt: skip
                qps = float(dnsperf(server.dns_port, qfile, args, "udp")["qps"])
                results[mode]["p50"].append(percentile(took, 0.5))
                results[mode]["p99"].append(percentile(took, 0.99))
                results[mode]["qps"].append(qps)
                results[mode]["writes"] += took
                line = f"round {r + 1} {mode}: writes p50 {percentile(took, 0.5):.2f} ms"
                line += f" p99 {percentile(took, 0.99):.2f} ms, {qps:,.0f} q/s"
                if mode == "with":
                    assert watchers is not None
                    seen, cpu, failed = watchers.stop()
                    d = wake_delays(made, seen, watchers)
                    watchers.end()
                    watchers = None
                    d.update(cpu=cpu, failed=failed, open_s=open_s, held=held, rss=rss)
                    delays.append(d)
                    a = d["after_answer"]
                    line += (
                        f"; {held} connections held (opened in {open_s:.1f} s), RSS {rss:.0f} MiB"
                        f" (idle {idle_rss:.0f}); wakes after the write's answer p50"
                        f" {percentile(a, 0.5):.1f} p99 {percentile(a, 0.99):.1f} max"
                        f" {max(a, default=float('nan')):.1f} ms; got {d['got']} of"
                        f" {d['expected']}; clients' CPU {cpu:.1f} s"
                    )
                    if failed:
                        line += f"; {len(failed)} watchers failed: {failed[:3]}"
                print(line, flush=True)
    finally:
        if watchers is not None:
            watchers.end()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, results, delays)


if __name__ == "__main__":
    main()
