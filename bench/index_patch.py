"""Per write, in process: what one changed instance of a large service costs an answer index.

One service of N instances (``--instances``), tagged one of three ways: every instance with the
same 32 tags (``all32``), 4 of 32 distinct tags each (``4of32``), no tags (``none``). Then
``--changes`` times, one instance (a random one, fixed seed) is changed (a new port, every
other time a new weight) and ``AnswerIndex.patch`` applies it; after each change the first
answer of the service's name and of one tag's name is drawn (A and SRV, UDP cap 16), which is
where an RRset rebuilt without its draw state would pay for it. Prints the median and the
largest of each, in ms.

    .venv/bin/python bench/index_patch.py [--instances 10000] [--changes 30] [--modes all32 ...]

Runs against whatever ``dnsdisc`` is importable: copy it into an older tree to compare.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.zone import IndexSettings
from dnsdisc.policies.roles import IN
from dnsdisc.registry.model import Instance, ServiceSettings

DOMAIN = wire.text_to_wire("svc.internal.")
TAGS = [f"t{n}" for n in range(32)]


class Member:
    def __init__(self, instance: Instance, weight: int = 1) -> None:
        self.instance, self.weight, self.priority, self.role = instance, weight, 0, IN
        self.load: float | None = None
        self.latency_ms: float | None = None

    def handed_out(self) -> None:
        pass


def make_index() -> AnswerIndex:
    return AnswerIndex(
        IndexSettings(
            domain=DOMAIN,
            ns_label="ns",
            ns_addresses=("127.0.0.1",),
            hostmaster="hostmaster",
            serial=1,
            negative_ttl=30,
        )
    )


def tags_for(mode: str, rng: random.Random) -> list[str]:
    if mode == "all32":
        return list(TAGS)
    if mode == "4of32":
        return rng.sample(TAGS, 4)
    return []


def instance(iid: str, mode: str, rng: random.Random, port: int) -> Instance:
    return Instance.from_json(
        "big",
        iid,
        {
            "address": f"10.{rng.randrange(256)}.{rng.randrange(256)}.1",
            "port": port,
            "tags": tags_for(mode, rng),
        },
    )


def run(mode: str, n: int, changes: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    settings = ServiceSettings.from_json("big", {})
    members = [Member(instance(f"i{k}", mode, rng, 1000 + k % 50000)) for k in range(n)]
    index = make_index()
    t0 = time.perf_counter()
    index.rebuild("big", settings, members)
    build = time.perf_counter() - t0
    names = [wire.text_to_wire("big.svc.internal.")]
    if mode != "none":
        names.append(wire.text_to_wire("t7.big.svc.internal."))
    draw_rng = random.Random(seed + 1)

    def first_draws() -> float:
        start = time.perf_counter()
        for name in names:
            node = index.nodes[name]
            for rtype in (wire.A, wire.SRV):
                rrset = node.rrsets.get(rtype)
                if rrset is not None:
                    rrset.next_order(draw_rng, 16, False)
        return time.perf_counter() - start

    first_draws()
    patch_ms, draw_ms = [], []
    for c in range(changes):
        k = rng.randrange(n)
        old = members[k]
        weight = 1 + (c % 2) * rng.randrange(1, 5)
        new = Member(instance(old.instance.id, mode, rng, 1 + rng.randrange(65535)), weight)
        members[k] = new
        t0 = time.perf_counter()
        index.patch("big", [new], [])
        patch_ms.append((time.perf_counter() - t0) * 1000)
        draw_ms.append(first_draws() * 1000)
    return {
        "build_s": build,
        "patch_p50": statistics.median(patch_ms),
        "patch_max": max(patch_ms),
        "draw_p50": statistics.median(draw_ms),
        "draw_max": max(draw_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--modes", nargs="*", default=["all32", "4of32", "none"])
    args = parser.parse_args()
    for mode in args.modes:
        r = run(mode, args.instances, args.changes, args.seed)
        print(
            f"{mode:6} N={args.instances}: build {r['build_s']:.2f} s; per change: patch "
            f"p50 {r['patch_p50']:.2f} ms max {r['patch_max']:.2f} ms; first draws after it "
            f"p50 {r['draw_p50']:.2f} ms max {r['draw_max']:.2f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
