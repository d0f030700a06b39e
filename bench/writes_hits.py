"""How many queries the reply cache answers while writes come in: in-process, no timing.

    .venv/bin/python bench/writes_hits.py [--services 1000] [--per-service 5]
                                          [--queries-per-write 20] [--writes 2000]

Registers ``--services`` x ``--per-service`` instances in one process (tests.support.world),
then puts queries to the responder, the mix of bench/writes_load.py (A of a service, SRV of
``_svc._tcp``, A of an instance, 1 in 20 a missing name), with a write every
``--queries-per-write`` queries (an instance's new address, the services in turn): 500 writes/s
beside 10k queries/s, what each of two workers gets of 20k, is 20. Prints the share of queries
answered without encoding (from a kept reply, or put together from a layout). Counts only: it
runs the checkout it is started from (run the copy in a worktree for the commit before).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dnsdisc.registry.model import Instance  # noqa: E402
from tests.support.world import World  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--per-service", type=int, default=5)
    p.add_argument("--queries-per-write", type=int, default=20)
    p.add_argument("--writes", type=int, default=2000)
    args = p.parse_args()
    services, per = args.services, args.per_service
    w = World()

    async def register() -> None:
        for s in range(services):
            for i in range(per):
                body = {"address": f"10.{s // 250}.{s % 250}.{i + 1}", "port": 80}
                await w.registry.put_instance(Instance.from_json(f"svc{s}", f"i{i}", body))

    asyncio.run(register())
    rng = random.Random(1)
    queries = []
    for _ in range(20000):
        s = rng.randrange(services)
        pick = rng.random()
        if pick < 0.4:
            name, rdtype = f"svc{s}.svc.internal.", "A"
        elif pick < 0.7:
            name, rdtype = f"_svc{s}._tcp.svc.internal.", "SRV"
        elif pick < 0.95:
            name, rdtype = f"i{rng.randrange(per)}.svc{s}.svc.internal.", "A"
        else:
            name, rdtype = f"missing-{rng.randrange(100)}.svc.internal.", "A"
        queries.append(dns.message.make_query(name, rdtype).to_wire())
    encoded = [0]
    encode = w.responder._encode

    def counted(*a, **kw):  # type: ignore[no-untyped-def]
        encoded[0] += 1
        return encode(*a, **kw)

    w.responder._encode = counted  # type: ignore[method-assign]
    for q in queries:  # warm: every key once
        w.raw(q)
    encoded[0] = 0
    asked = 0
    for n in range(args.writes):
        svc, iid = n % services, n // services % per
        address = f"10.{128 + n // 65536 % 128}.{n // 256 % 256}.{n % 256}"
        w.add(f"svc{svc}", f"i{iid}", address=address, port=80)
        for _ in range(args.queries_per_write):
            w.raw(queries[asked % len(queries)])
            asked += 1
    hits = asked - encoded[0]
    print(
        f"{services} services x {per}, a write every {args.queries_per_write} queries: "
        f"{asked} queries, {encoded[0]} encoded, {hits / asked:.1%} answered from the cache"
    )


if __name__ == "__main__":
    main()
