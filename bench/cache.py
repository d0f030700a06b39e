"""The reply cache (#16 item 2): its cost per query in-process, and a worker's memory under the
random letter case (DNS 0x20) that resolvers send, before and after a change.

    .venv/bin/python bench/cache.py --before /tmp/cbefore [--rounds 5] [--queries 40000]
    .venv/bin/python bench/cache.py --attack 60 [--before /tmp/cbefore] [--stop-mib 1024]

``--before`` is another checkout of dnsdisc with its own ``.venv`` (``git worktree add
/tmp/cbefore 0a37a5e``, then ``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``
there); without it only this tree is measured. Trees alternate within each round.

In-process (default): each tree's responder, wired as ``tests/support/world.py`` wires it, with
the peer benchmark's data set (``web``: 5 instances, weighted, max_answers 5) answers its query
mix (50% A, 40% SRV, 10% NXDOMAIN over 10 names, no EDNS, as dnsperf sends it) ``--queries``
times; the thread's CPU time per query, best of ``--rounds`` (other load on the machine counts
less). Twice: with the mix's names as written, and with every query's letters in a random case
(a pool of 4,096 spellings per name, as a 0x20 resolver sends them).

``--attack SECONDS``: each tree's ``dnsdisc serve --workers 1`` with one round_robin service of
5,000 instances (``big``), then SECONDS of A queries for ``big.svc.internal`` in a random case
each (EDNS 1232, as a resolver sends them), from 4 sockets with up to 64 queries in flight each;
the worker's RSS every 5 s, its growth, queries answered and the reply cache's bytes
(``dnsdisc_dns_reply_cache_bytes``, where the tree has it). A tree whose worker grows past
``--stop-mib`` is stopped there.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIG = 5000


def random_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def mix_names() -> list[tuple[str, str]]:
    """The peer benchmark's 100 queries (../shared/bench/dataset.py queries_text)."""
    out = []
    nx = 0
    for i in range(100):
        k = i % 10
        if k == 9:
            out.append((f"missing-{nx % 10}.svc.internal.", "A"))
            nx += 1
        elif k % 2 == 0:
            out.append(("web.svc.internal.", "A"))
        else:
            out.append(("_web._tcp.svc.internal.", "SRV"))
    return out


def child_inprocess(tree: Path, queries: int) -> dict[str, float]:
    """Runs in the tree's own interpreter: thread CPU µs per query, and the share of misses."""
    sys.path.insert(0, str(tree))
    import dns.message

    from tests.support.world import World

    world = World()
    world.settings("web", policy="weighted", max_answers=5)
    for i in range(1, 6):
        world.add("web", f"web-{i}", address=f"10.0.0.{i}", port=8080, weight=10 * i)
    responder = world.responder
    rng = random.Random(5)
    out: dict[str, float] = {}
    for label, spellings in (("mix", 1), ("mix_0x20", 4096)):
        wires = []
        for j, (name, rdtype) in enumerate(mix_names() * 41):
            spelled = random_case(name, rng) if spellings > 1 else name
            q = dns.message.make_query(spelled, rdtype, use_edns=False)
            q.id = j & 0xFFFF
            wires.append(q.to_wire())
        rng.shuffle(wires)
        for data in wires[:2000]:  # warm: tables, pools, the reply cache
            responder.respond(data)
        best = float("inf")
        n = len(wires)
        for _ in range(3):
            start = time.thread_time()
            for i in range(queries):
                responder.respond(wires[i % n])
            best = min(best, (time.thread_time() - start) / queries * 1e6)
        out[label] = best
    return out


def query(name: str, qid: int) -> bytes:
    """An A query with EDNS (1232 bytes, DO clear), RD set, as a resolver sends it."""
    labels = b"".join(bytes([len(x)]) + x.encode() for x in name.rstrip(".").split("."))
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
        + labels
        + b"\x00\x00\x01\x00\x01"
        + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cache_bytes(metrics: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith("dnsdisc_dns_reply_cache_bytes "):
            return float(line.split()[1])
    return None


def child_attack(tree: Path, seconds: int, stop_mib: float) -> dict[str, object]:
    """Runs in the tree's own interpreter: the worker's RSS under the 0x20 flood."""
    sys.path.insert(0, str(tree))
    import yaml

    from tests.support.helpers import DnsdiscProcess

    tmp = Path(tempfile.mkdtemp())
    zones = tmp / "zones"
    zones.mkdir()
    instances = {
        f"i{i}": {"address": f"10.1.{i // 250}.{i % 250 + 1}", "port": 80} for i in range(BIG)
    }
    services = {"big": {"policy": "round_robin", "ttl": 0, "instances": instances}}
    (zones / "bench.yaml").write_text(yaml.safe_dump({"services": services}))
    server = DnsdiscProcess(tmp / "data", extra_args=["--zones", str(zones), "--workers", "1"])
    server.start(timeout=120)
    rng = random.Random(20)
    samples: list[tuple[float, float]] = []
    sent = answered = wrong = 0
    try:
        deadline = time.monotonic() + 30
        while not server.children() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = server.children()[0]
        time.sleep(1)
        socks = []
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", server.dns_port))
            s.setblocking(False)
            socks.append(s)
        inflight = [0] * len(socks)
        spelled: dict[int, bytes] = {}
        start = time.monotonic()
        base = rss_mib(worker)
        samples.append((0.0, base))
        next_sample = start + 5
        stopped = False
        while True:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - start, 1), rss_mib(worker)))
                next_sample += 5
                if samples[-1][1] - base > stop_mib:
                    stopped = True
                    break
            if now - start >= seconds:
                break
            for k, s in enumerate(socks):
                while inflight[k] < 64:
                    name = random_case("big.svc.internal", rng)
                    data = query(name, sent & 0xFFFF)
                    spelled[sent & 0xFFFF] = data[12:30]
                    try:
                        s.send(data)
                    except BlockingIOError:
                        break
                    sent += 1
                    inflight[k] += 1
                while True:
                    try:
                        reply = s.recv(65535)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        break
                    inflight[k] = max(0, inflight[k] - 1)
                    answered += 1
                    # The question comes back as it was spelled (a 0x20 resolver checks it); IDs
                    # are reused, so only the latest query of an ID is known.
                    if reply[12:30] != spelled.get(struct.unpack_from("!H", reply)[0]):
                        wrong += 1
                if inflight[k] >= 64:
                    inflight[k] = 0  # lost replies: send again rather than stall
            time.sleep(0.0005)
        took = time.monotonic() - start
        samples.append((round(took, 1), rss_mib(worker)))
        metric = cache_bytes(server.http("GET", "/metrics").raw.decode())
    finally:
        server.stop()
    return {
        "seconds": round(took, 1),
        "stopped": stopped,
        "base_mib": round(base, 1),
        "growth_mib": round(max(r for _, r in samples) - base, 1),
        "samples": samples,
        "queries_sent": sent,
        "answered": answered,
        "answered_per_s": round(answered / took),
        "question_unlike_last_of_its_id": wrong,
        "cache_bytes": metric,
    }


def run_child(tree: Path, mode: str, amount: int, stop_mib: float) -> dict[str, object]:
    python = tree / ".venv" / "bin" / "python"
    cmd = [str(python), __file__, "--child", mode, "--tree", str(tree), "--amount", str(amount),
           "--stop-mib", str(stop_mib)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", type=Path, help="a checkout to compare with, with its own .venv")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--queries", type=int, default=40000)
    p.add_argument("--attack", type=int, default=0, metavar="SECONDS")
    p.add_argument("--stop-mib", type=float, default=1024)
    p.add_argument("--child", choices=("inprocess", "attack"), help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--amount", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "inprocess":
        print(json.dumps(child_inprocess(args.tree, args.amount)))
        return
    if args.child == "attack":
        print(json.dumps(child_attack(args.tree, args.amount, args.stop_mib)))
        return
    trees = {"after": ROOT}
    if args.before:
        trees = {"before": args.before.resolve(), "after": ROOT}
    if args.attack:
        for label, tree in trees.items():
            got = run_child(tree, "attack", args.attack, args.stop_mib)
            print(f"{label}: {json.dumps(got)}", flush=True)
        return
    results: dict[str, list[dict[str, object]]] = {}
    for r in range(args.rounds):
        for label, tree in trees.items():
            got = run_child(tree, "inprocess", args.queries, args.stop_mib)
            results.setdefault(label, []).append(got)
            print(f"round {r + 1} {label}: {got}", flush=True)
    print()
    print("| tree | mix µs/query (best) | mix, random case µs/query (best) |")
    print("|---|---|---|")
    for label, runs in results.items():
        mix = min(float(str(run["mix"])) for run in runs)
        x20 = min(float(str(run["mix_0x20"])) for run in runs)
        print(f"| {label} | {mix:.2f} | {x20:.2f} |")


if __name__ == "__main__":
    main()
