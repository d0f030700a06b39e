"""Writes to a large tagged service while another name is queried (issue #16, item 1).

    .venv/bin/python bench/large_service.py [--instances 10000] [--tags 32] [--per-instance 4]
                                            [--writes 20] [--qps 50] [--seconds 20] [--workers 2]

Starts dnsdisc on loopback (memory store, ``--workers`` DNS workers), registers ``--instances``
instances of one service ``big``, each with ``--per-instance`` of ``--tags`` distinct tags, and
one instance of ``other``. Then, for ``--seconds``, rewrites one instance of ``big`` (a new port
each time) ``--writes`` times a second, one PUT after the other, while it sends ``--qps`` UDP
queries a second for ``other``'s A record; a query not answered within 1 s counts as lost.
Prints the loss and the p50/p99 of ``other``'s answers, the writes done and their p99, and how
many workers were replaced meanwhile. The "before" figure: check out the old commit in its own
worktree with its own venv, copy this file there and run it with that venv's python. The server
is stopped by PID; data goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.helpers import DnsdiscProcess  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def populate(base: str, args: argparse.Namespace) -> float:
    rng = random.Random(16)
    tags = [f"t{n}" for n in range(args.tags)]
    start = time.monotonic()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(args.instances):
        queue.put_nowait(n)
    async with aiohttp.ClientSession() as http:
        await http.put(f"{base}/other/instances/o1", json={"address": "10.200.0.1", "port": 80})

        async def client() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                body = {
                    "address": f"10.{n // 250}.{n % 250}.1",
                    "port": 8000 + n % 1000,
                    "tags": rng.sample(tags, args.per_instance),
                }
                async with http.put(f"{base}/big/instances/i{n}", json=body) as r:
                    assert r.status in (200, 201), await r.text()

        await asyncio.gather(*(client() for _ in range(64)))
    return time.monotonic() - start


async def writer(base: str, args: argparse.Namespace, until: float) -> list[float]:
    took: list[float] = []
    n = 0
    async with aiohttp.ClientSession() as http:
        next_at = time.monotonic()
        while time.monotonic() < until:
            n += 1
            body = {"address": "10.0.0.7", "port": 9000 + n % 500, "tags": ["t1", "t2"]}
            t = time.monotonic()
            async with http.put(f"{base}/big/instances/i7", json=body) as r:
                assert r.status in (200, 201), await r.text()
            took.append(time.monotonic() - t)
            next_at += 1 / args.writes
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return took


async def prober(port: int, args: argparse.Namespace, until: float) -> tuple[int, list[float]]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", port))
    wire = bytearray(dns.message.make_query("other.svc.internal.", "A").to_wire())
    sent: dict[int, float] = {}
    latencies: list[float] = []

    def readable() -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            t = sent.pop(struct.unpack_from("!H", data)[0], None)
            if t is not None:
                latencies.append(time.monotonic() - t)

    loop.add_reader(sock.fileno(), readable)
    qid, total = 0, 0
    next_at = time.monotonic()
    while time.monotonic() < until:
        qid = (qid + 1) % 65536
        struct.pack_into("!H", wire, 0, qid)
        sent[qid] = time.monotonic()
        sock.send(wire)
        total += 1
        next_at += 1 / args.qps
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.sleep(1.0)  # the last ones get their second
    loop.remove_reader(sock.fileno())
    sock.close()
    late = sum(1 for v in latencies if v > 1.0)
    return total - len(latencies) + late, [v for v in latencies if v <= 1.0]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = DnsdiscProcess(
            Path(tmp) / "node", extra_args=["--workers", str(args.workers), "--storage", "memory"]
        ).start(timeout=60)
        try:
            base = f"http://127.0.0.1:{server.http_port}/v1/services"
            filled = await populate(base, args)
            await asyncio.sleep(2)
            workers = set(server.children())
            until = time.monotonic() + args.seconds
            took, (lost, lat) = await asyncio.gather(
                writer(base, args, until), prober(server.dns_port, args, until)
            )
            replaced = len(workers - set(server.children()))
        finally:
            server.stop()
    total = lost + len(lat)
    print(
        f"{args.instances} instances x {args.tags} tags ({args.per_instance} each), "
        f"{args.workers} workers: registered in {filled:.1f} s; "
        f"{len(took)} writes in {args.seconds} s (p99 {percentile(took, 0.99) * 1000:.0f} ms); "
        f"other name: {lost}/{total} lost, p50 {percentile(lat, 0.5) * 1000:.2f} ms, "
        f"p99 {percentile(lat, 0.99) * 1000:.2f} ms; workers replaced: {replaced}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=32)
    parser.add_argument("--per-instance", type=int, default=4)
    parser.add_argument("--writes", type=float, default=20)
    parser.add_argument("--qps", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
