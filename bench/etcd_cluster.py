"""etcd mode: registrations/s on three dnsdisc nodes sharing a three-member etcd, and how long a
change on one node takes to be answered by the others, beside the single-node figures.

    .venv/bin/python bench/etcd_cluster.py [--count 5000] [--clients 24] [--batch-instances 10000]
                                           [--changes 200] [--workers 1] [--etcd-dir /tmp]
                                           [--only sqlite|etcd1|etcd3]

Three setups, in this order, each started fresh on free loopback ports and stopped by PID:

1. one dnsdisc on SQLite (durable commits), the single-node reference;
2. one dnsdisc on a single-member etcd;
3. three dnsdisc nodes on a three-member etcd (one prefix, every node sees every change).

etcd is Debian's etcd-server (3.4: it has no ``--unsafe-no-fsync``), its members' data in
temporary directories under ``--etcd-dir``, so every commit is fsynced on a quorum of members
(``--etcd-dir /dev/shm`` puts them in memory, where fsync costs nothing, to see what fsync costs).
Each dnsdisc runs ``--workers`` DNS worker processes (1 by default: a change goes from the watch
through the main process to its worker, as in production, on a machine with two cores for
everything). For each setup:

* ``--count`` registrations (10 instances to a service), one ``PUT`` each, from ``--clients``
  concurrent keep-alive HTTP clients spread round-robin over the nodes: registrations/s,
  the PUTs' p50/p99, and the CPU seconds the dnsdisc and etcd processes used;
* ``--batch-instances`` registrations through ``POST /v1/batch`` (``--batch-size`` to a batch,
  each batch a new service) from ``--batch-clients`` clients: instances/s. 100, not the API's
  128: on etcd a batch is one transaction, and 128 registrations into a new service are 129
  operations, over etcd's default ``--max-txn-ops`` of 128;
* ``--changes`` changes (a registration of a fresh service ``p<n>``, then its deregistration,
  alternating), each sent to node ``n % nodes``; while the write is in flight every node's DNS is
  polled over UDP (one query to each node still showing the old answer, then a 0.2 ms sleep,
  at most 5 s), giving for each node the time from sending the write until its DNS answers the
  change: the writing node's own, and the others' (also counted from the writer's 2xx).

Prints Markdown tables. The client runs on the same two cores as everything it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import dns.message
import dns.rcode
import dns.rdatatype

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.etcdcluster import EtcdCluster  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402

PREFIX = "/dnsdisc-bench"
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def address(n: int) -> str:
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` and their live children (a dnsdisc's DNS workers)."""
    wanted = set(pids)
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(entry) in wanted or int(fields[1]) in wanted:  # fields[1]: the parent's pid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


@dataclass
class Setup:
    name: str
    nodes: list[DnsdiscProcess]
    etcd: EtcdCluster | None = None
    rows: dict[str, str] = field(default_factory=dict)

    def pids(self) -> tuple[list[int], list[int]]:
        nodes = [n.proc.pid for n in self.nodes if n.proc is not None]
        members = [m.proc.pid for m in (self.etcd.members if self.etcd else []) if m.proc]
        return nodes, members


@contextmanager
def setup(
    name: str, base: Path, etcd_dir: Path, members: int, nodes: int, workers: int
) -> Iterator[Setup]:
    """``nodes`` dnsdisc processes on ``members`` etcd members (0: SQLite), stopped by PID."""
    work = Path(tempfile.mkdtemp(dir=base))
    cluster = EtcdCluster(Path(tempfile.mkdtemp(dir=etcd_dir)), size=members) if members else None
    started: list[DnsdiscProcess] = []
    try:
        extra = ["--workers", str(workers)]
        if cluster is not None:
            cluster.start()
            extra += ["--storage", "etcd", "--etcd-endpoints", cluster.endpoints,
                      "--etcd-prefix", PREFIX]  # fmt: skip
        for i in range(nodes):
            started.append(DnsdiscProcess(work / f"node{i}", extra_args=list(extra)).start())
        yield Setup(name, started, cluster)
    finally:
        for node in started:
            node.stop()
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


async def put_all(
    ports: list[int], count: int, clients: int, tag: str
) -> tuple[float, list[float]]:
    """``count`` single PUTs, client ``k`` always on node ``k % len(ports)``."""
    latencies: list[float] = []
    todo = iter(range(count))

    async def client(session: aiohttp.ClientSession, port: int) -> None:
        for n in todo:
            service, iid = divmod(n, 10)
            url = f"http://127.0.0.1:{port}/v1/services/{tag}{service}/instances/i{iid}"
            started = time.perf_counter()
            async with session.put(url, json={"address": address(n), "port": 80}) as resp:
                await resp.read()
                if resp.status not in (200, 201):
                    raise RuntimeError(f"PUT {url}: {resp.status} {await resp.text()}")
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, ports[k % len(ports)]) for k in range(clients)))
        return time.perf_counter() - started, latencies


async def batch_all(ports: list[int], count: int, clients: int, size: int, tag: str) -> float:
    """``count`` registrations in batches of ``size``, each batch one service of its own."""
    todo = iter(range(0, count, size))

    async def client(session: aiohttp.ClientSession, port: int) -> None:
        for first in todo:
            ops = [
                {"op": "register", "service": f"{tag}{first}", "id": f"i{n}",
                 "body": {"address": address(n), "port": 80}}
                for n in range(first, min(first + size, count))
            ]  # fmt: skip
            async with session.post(f"http://127.0.0.1:{port}/v1/batch", json={"ops": ops}) as r:
                if r.status != 200:
                    raise RuntimeError(f"POST /v1/batch: {r.status} {await r.text()}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, ports[k % len(ports)]) for k in range(clients)))
        return count / (time.perf_counter() - started)


def writes(s: Setup, args: argparse.Namespace) -> None:
    ports = [n.http_port for n in s.nodes]
    node_pids, etcd_pids = s.pids()
    before = (cpu_seconds(node_pids), cpu_seconds(etcd_pids), time.process_time())
    elapsed, lat = asyncio.run(put_all(ports, args.count, args.clients, "w"))
    after = (cpu_seconds(node_pids), cpu_seconds(etcd_pids), time.process_time())
    cpu = [b - a for a, b in zip(before, after, strict=True)]
    s.rows["regs"] = f"{args.count / elapsed:,.0f}"
    s.rows["put_p50"] = f"{percentile(lat, 50) * 1000:.1f}"
    s.rows["put_p99"] = f"{percentile(lat, 99) * 1000:.1f}"
    s.rows["cpu_nodes"] = f"{cpu[0] / elapsed:.2f}"
    s.rows["cpu_etcd"] = f"{cpu[1] / elapsed:.2f}" if etcd_pids else "-"
    s.rows["cpu_client"] = f"{cpu[2] / elapsed:.2f}"
    rate = asyncio.run(
        batch_all(ports, args.batch_instances, args.batch_clients, args.batch_size, "b")
    )
    s.rows["batch"] = f"{rate:,.0f}"


class Writer(threading.Thread):
    """One HTTP write on a kept-alive connection; ``done`` is when its 2xx arrived."""

    def __init__(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes
    ) -> None:
        super().__init__(daemon=True)
        self.conn, self.method, self.path, self.body = conn, method, path, body
        self.done = 0.0
        self.error = ""

    def run(self) -> None:
        self.conn.request(self.method, self.path, self.body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        text = resp.read()
        self.done = time.perf_counter()
        if resp.status not in (200, 201, 204):
            self.error = f"{self.method} {self.path}: {resp.status} {text[:200]!r}"


def shows(wire: bytes, ip: str, present: bool) -> bool:
    reply = dns.message.from_wire(wire)
    if reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return False
    found = any(
        rr.address == ip
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.A
        for rr in rrset
    )
    return found == present


def propagation(s: Setup, changes: int) -> None:
    """Each change written on node ``k % nodes``; every node's DNS polled until it shows it."""
    nodes = s.nodes
    conns = [http.client.HTTPConnection("127.0.0.1", n.http_port, timeout=10) for n in nodes]
    socks = []
    for n in nodes:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", n.dns_port))
        socks.append(sock)
    own: list[float] = []
    others: list[float] = []
    after_2xx: list[float] = []
    missed = 0
    try:
        for k in range(changes):
            m, deregister = divmod(k, 2)
            writer_index = (m if not deregister else m + 1) % len(nodes)
            ip = address(m + 1)
            path = f"/v1/services/p{m}/instances/i0"
            if deregister:
                writer = Writer(conns[writer_index], "DELETE", path, b"")
            else:
                body = json.dumps({"address": ip, "port": 80}).encode()
                writer = Writer(conns[writer_index], "PUT", path, body)
            query = dns.message.make_query(f"p{m}.svc.internal", "A")
            query.id = k % 65536
            wire = query.to_wire()
            seen: dict[int, float] = {}
            sent = time.perf_counter()
            writer.start()
            deadline = sent + 5.0
            while len(seen) < len(nodes) and time.perf_counter() < deadline:
                pending = [i for i in range(len(nodes)) if i not in seen]
                for i in pending:
                    socks[i].send(wire)
                for i in pending:
                    ready, _, _ = select.select([socks[i]], [], [], 1.0)
                    if not ready:
                        continue
                    reply = socks[i].recv(4096)
                    if shows(reply, ip, not deregister):
                        seen[i] = time.perf_counter()
                time.sleep(0.0002)
            writer.join(10)
            if writer.error:
                raise RuntimeError(writer.error)
            for i in range(len(nodes)):
                if i not in seen:
                    missed += 1
                    continue
                if i == writer_index:
                    own.append(seen[i] - sent)
                else:
                    others.append(seen[i] - sent)
                    after_2xx.append(seen[i] - writer.done)
    finally:
        for sock in socks:
            sock.close()
        for conn in conns:
            conn.close()

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        ms = [v * 1000 for v in values]
        return f"{percentile(ms, 50):.1f} / {percentile(ms, 99):.1f} / {max(ms):.1f}"

    s.rows["own"] = spread(own)
    s.rows["others"] = spread(others)
    s.rows["after_2xx"] = spread(after_2xx)
    s.rows["missed"] = str(missed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--clients", type=int, default=24)
    p.add_argument("--batch-instances", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--batch-clients", type=int, default=6)
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--etcd-dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--only", choices=("sqlite", "etcd1", "etcd3"), action="append")
    args = p.parse_args()
    plans = [
        ("sqlite", "1 node, SQLite", 0, 1),
        ("etcd1", "1 node, 1-member etcd", 1, 1),
        ("etcd3", "3 nodes, 3-member etcd", 3, 3),
    ]
    results: list[Setup] = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, name, members, count in plans:
            if args.only and key not in args.only:
                continue
            with setup(name, Path(tmp), args.etcd_dir, members, count, args.workers) as s:
                writes(s, args)
                propagation(s, args.changes)
                results.append(s)
                print(f"{name}: {s.rows}", file=sys.stderr, flush=True)
    print(
        f"\n{args.count} PUTs and {args.batch_instances} instances in batches of "
        f"{args.batch_size} ({args.batch_clients} clients), {args.clients} clients for the PUTs, "
        f"spread over the nodes; {args.changes} changes; "
        f"{args.workers} DNS worker(s) a node; etcd data under {args.etcd_dir}\n"
    )
    print(
        "| setup | PUTs/s | PUT p50 ms | PUT p99 ms | CPU of dnsdisc / etcd / client (cores) "
        "| batch instances/s | own DNS after send p50/p99/max ms "
        "| other nodes' DNS after send p50/p99/max ms | other nodes after the writer's 2xx "
        "| changes never seen |"
    )
    print("|---|---:|---:|---:|---|---:|---|---|---|---:|")
    for s in results:
        r = s.rows
        print(
            f"| {s.name} | {r['regs']} | {r['put_p50']} | {r['put_p99']} "
            f"| {r['cpu_nodes']} / {r['cpu_etcd']} / {r['cpu_client']} | {r['batch']} "
            f"| {r['own']} | {r['others']} | {r['after_2xx']} | {r['missed']} |"
        )


if __name__ == "__main__":
    main()
