"""Writes under load: paced registrations beside a fixed DNS query rate, and how soon each write
is seen in DNS.

    .venv/bin/python bench/writes_load.py [--services 1000] [--per-service 5] [--rate 500]
                                          [--qps 20000] [--seconds 10] [--rounds 2]
                                          [--before /tmp/wl-before]

For each round: starts dnsdisc (SQLite store, its default DNS workers) on loopback ports,
registers ``--services`` x ``--per-service`` instances, then runs dnsperf at ``--qps`` queries/s
(rate mode, ``-v``: every reply's latency) over a mix spread across every service (per service:
A of the service, SRV of ``_svc._tcp``, A of an instance; 1 in 20 a missing name), twice: alone
("idle"), then while the bench offers ``--rate`` writes/s for ``--seconds`` s ("writes").

A write gives an existing instance a new address (the services in turn, so that writes spread
over all of them and no two in flight touch one instance): a real change of its service's A
and SRV RRsets, of the instance's own name and of two PTR names. The bench then asks for the
instance's A record over UDP (from one of 16 sockets, so that every worker is asked) until the
new address comes back (every 0.5 ms for 10 ms, then every 5 ms), at most 2 s. Writes are paced
open-loop (the n-th goes at start + n/rate whatever came back) with at most 64 in flight (past
that a write waits: counted as "late"). Printed per round: DNS answered/s, loss, p50/p99 of
dnsperf's latencies, the server's CPU per query (all its processes, writes included) and its
main process's CPU (% of a core, over the phase: HTTP, the store, feeding the workers), write
latency p50/p99 (PUT sent to its reply), visible p50/p99 (PUT sent to the first DNS reply
with the new address; "unseen": not within 2 s), and the CPU the bench's own writer and poller
took (% of a core: it shares the machine with the server and dnsperf).

``--before DIR`` alternates with another checkout of the project (a git worktree) run with
this checkout's ``.venv`` (its package is imported from DIR: the server runs in DIR); rounds
go before, after, before, after, ... Every server is stopped by PID; data goes to a temporary
directory; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import cpu_seconds  # noqa: E402
from writes import percentile, register_all  # noqa: E402

from tests.support.helpers import DnsdiscProcess  # noqa: E402

DOMAIN = "svc.internal"
MAX_IN_FLIGHT = 64
POLL_SOCKETS = 16
VISIBLE_TIMEOUT = 2.0


def query_file(path: Path, services: int, per: int, rng: random.Random) -> Path:
    lines = []
    for _ in range(20000):
        svc = rng.randrange(services)
        pick = rng.random()
        if pick < 0.4:
            lines.append(f"svc{svc}.{DOMAIN} A")
        elif pick < 0.7:
            lines.append(f"_svc{svc}._tcp.{DOMAIN} SRV")
        elif pick < 0.95:
            lines.append(f"i{rng.randrange(per)}.svc{svc}.{DOMAIN} A")
        else:
            lines.append(f"missing-{rng.randrange(100)}.{DOMAIN} A")
    path.write_text("\n".join(lines) + "\n")
    return path


def start_dnsperf(port: int, queries: Path, qps: int, seconds: int, out: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    with open(out, "w") as sink:
        return subprocess.Popen(
            ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
             "-l", str(seconds), "-Q", str(qps), "-c", "8", "-q", "1000", "-t", "1", "-v"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def dnsperf_figures(path: Path) -> dict[str, float]:
    """Answered/s, lost %, and p50/p99 (ms) of the replies' latencies, from dnsperf -v."""
    lat: list[float] = []
    qps = lost = 0.0
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                parts = line.split()
                if parts[1] != "T":
                    with contextlib.suppress(ValueError):
                        lat.append(float(parts[-1]))
            elif "Queries per second" in line:
                qps = float(line.split()[-1])
            elif "Queries lost" in line:
                lost = float(line.split("(")[1].split("%")[0])
    lat.sort()
    return {
        "qps": qps,
        "lost": lost,
        "p50": percentile(lat, 50) * 1000 if lat else 0.0,
        "p99": percentile(lat, 99) * 1000 if lat else 0.0,
        "completed": float(len(lat)),
    }


async def writes(
    http_port: int, dns_port: int, services: int, per: int, rate: int, seconds: float
) -> dict[str, float]:
    """``rate`` address changes a second for ``seconds``; each one's latency and the time until
    DNS shows it."""
    count = int(rate * seconds)
    write_lat: list[float] = []
    visible: list[float] = []
    unseen = late = 0
    socks: asyncio.Queue[socket.socket] = asyncio.Queue()
    for _ in range(POLL_SOCKETS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect(("127.0.0.1", dns_port))
        socks.put_nowait(s)
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def seen(name: str, address: str, deadline: float) -> bool:
        """Whether a DNS reply for ``name`` A carried ``address`` before ``deadline``. The
        query is made once and the reply looked at as bytes (the address as the last 4 bytes of
        an A record's rdata): the bench's own CPU is taken from the two cores the server has."""
        q = dns.message.make_query(name, "A", use_edns=0)
        q.flags = 0
        query = q.to_wire()
        rdata = b"\x00\x04" + socket.inet_aton(address)
        started = time.perf_counter()
        sock = await socks.get()
        try:
            while time.perf_counter() < deadline:
                sock.send(query)
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 1232), 0.05)
                except TimeoutError:
                    continue
                if data[:2] == query[:2] and rdata in data:
                    return True
                # Every 0.5 ms for the first 10 ms (the target is 5 ms), then less often: a
                # late write must not make the bench take the CPU the server needs.
                late = time.perf_counter() - started > 0.01
                await asyncio.sleep(0.005 if late else 0.0005)
            return False
        finally:
            socks.put_nowait(sock)

    async def put(session: aiohttp.ClientSession, url: str, address: str) -> float:
        async with session.put(url, json={"address": address, "port": 80}) as resp:
            await resp.read()
            if resp.status not in (200, 201):
                raise RuntimeError(f"PUT {url}: {resp.status}")
        return time.perf_counter()

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal unseen
        try:
            svc, iid = n % services, n // services % per  # never two at once on one
            address = f"10.{128 + n // 65536 % 128}.{n // 256 % 256}.{n % 256}"
            url = f"http://127.0.0.1:{http_port}/v1/services/svc{svc}/instances/i{iid}"
            sent = time.perf_counter()
            done = asyncio.ensure_future(put(session, url, address))
            ok = await seen(f"i{iid}.svc{svc}.{DOMAIN}", address, sent + VISIBLE_TIMEOUT)
            shown = time.perf_counter()
            write_lat.append(await done - sent)
            if ok:
                visible.append(shown - sent)
            else:
                unseen += 1
        finally:
            slots.release()

    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        cpu = time.process_time()
        tasks = []
        for n in range(count):
            wait = started + n / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if slots.locked():
                late += 1
            await slots.acquire()
            tasks.append(asyncio.ensure_future(one(session, n)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        own_cpu = time.process_time() - cpu
    while not socks.empty():
        socks.get_nowait().close()
    return {
        "writes_per_s": count / elapsed,
        "write_p50": percentile(write_lat, 50) * 1000,
        "write_p99": percentile(write_lat, 99) * 1000,
        "visible_p50": percentile(visible, 50) * 1000 if visible else 0.0,
        "visible_p99": percentile(visible, 99) * 1000 if visible else 0.0,
        "unseen": float(unseen),
        "late": float(late),
        "bench_cpu": own_cpu / elapsed * 100,
    }


def one_round(args: argparse.Namespace, tree: Path | None, base: Path) -> list[dict[str, float]]:
    directory = Path(tempfile.mkdtemp(dir=base))
    server = DnsdiscProcess(directory / "node", tree=tree)
    rows = []
    try:
        server.start(timeout=60)
        per = args.per_service
        asyncio.run(register_all(server.http_port, args.services * per, 32, "svc", per))
        queries = query_file(directory / "q.txt", args.services, per, random.Random(1))
        for phase in ("idle", "writes"):
            out = directory / f"dnsperf-{phase}.txt"
            cpu, main_cpu, began = cpu_seconds(server), _main_cpu(server), time.monotonic()
            perf = start_dnsperf(server.dns_port, queries, args.qps, args.seconds + 1, out)
            try:
                time.sleep(0.5)  # dnsperf under way
                row: dict[str, float] = {}
                if phase == "writes":
                    row = asyncio.run(
                        writes(server.http_port, server.dns_port, args.services, per,
                               args.rate, args.seconds)
                    )  # fmt: skip
                perf.wait(args.seconds + 15)
            finally:
                if perf.poll() is None:
                    perf.kill()
                    perf.wait()
            row.update(dnsperf_figures(out))
            row["cpu_us"] = (cpu_seconds(server) - cpu) / max(row["completed"], 1) * 1e6
            row["main_cpu"] = (_main_cpu(server) - main_cpu) / (time.monotonic() - began) * 100
            row["phase"] = 0.0 if phase == "idle" else 1.0
            rows.append(row)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def _main_cpu(server: DnsdiscProcess) -> float:
    """User + system CPU seconds of the server's main process (HTTP, store, feeding workers)."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--per-service", type=int, default=5)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--qps", type=int, default=20000)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--before", type=Path, help="another checkout to alternate with")
    args = p.parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    before = args.before.resolve() if args.before else None
    if before is not None and not (before / ".venv").exists():
        os.symlink(ROOT / ".venv", before / ".venv")  # this checkout's packages, its code
    trees: list[tuple[str, Path | None]] = [("after", None)]
    if before is not None:
        trees.insert(0, ("before", before))
    print(
        "| round | code | phase | DNS answered/s | lost % | DNS p50 ms | DNS p99 ms "
        "| CPU µs/query | main process CPU % | writes/s | write p50 ms | write p99 ms "
        "| visible p50 ms | visible p99 ms | unseen | late | bench CPU % |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(1, args.rounds + 1):
            for label, tree in trees:
                for r in one_round(args, tree, Path(tmp)):
                    phase = "writes" if r["phase"] else "idle"
                    w = (
                        f"{r['writes_per_s']:.0f} | {r['write_p50']:.2f} | {r['write_p99']:.2f} | "
                        f"{r['visible_p50']:.2f} | {r['visible_p99']:.2f} | {r['unseen']:.0f} | "
                        f"{r['late']:.0f} | {r['bench_cpu']:.0f}"
                        if r["phase"]
                        else "- | - | - | - | - | - | - | -"
                    )
                    print(
                        f"| {rnd} | {label} | {phase} | {r['qps']:.0f} | {r['lost']:.2f} | "
                        f"{r['p50']:.3f} | {r['p99']:.3f} | {r['cpu_us']:.1f} | "
                        f"{r['main_cpu']:.0f} | {w} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
