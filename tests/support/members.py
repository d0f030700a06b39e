"""Members as health hands them out, and an answer index's name table as answers see it, for
tests that compare indexes built different ways."""

from __future__ import annotations

import random
from typing import Any

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.zone import IndexSettings
from dnsdisc.policies.roles import IN
from dnsdisc.registry.model import Instance


class Member:
    """A ``MemberView`` as health hands it out."""

    def __init__(self, instance: Instance, weight: int = 1, priority: int = 0, role: int = IN):
        self.instance, self.weight, self.priority, self.role = instance, weight, priority, role
        self.load: float | None = None
        self.latency_ms: float | None = None

    def handed_out(self) -> None:
        pass


def names(index: AnswerIndex) -> object:
    """The name table as answers see it: each name's RRsets with their records in order."""
    table = {}
    for name, node in index.nodes.items():
        table[name] = {
            rtype: (
                [i.body for i in r.items],
                [i.body for i in r.tail],
                r.policy,
                r.limit,
                [(i.weight, i.priority, i.glue, i.target) for i in r.members],
            )
            for rtype, r in node.rrsets.items()
        }
    return table, dict(index.ents), dict(index._ptr)


DOMAIN = wire.text_to_wire("svc.internal.")
TAGS = [f"t{n}" for n in range(32)]


def make_index() -> AnswerIndex:
    return AnswerIndex(
        IndexSettings(
            domain=DOMAIN,
            ns_label="ns",
            ns_addresses=("127.0.0.1",),
            hostmaster="hostmaster",
            serial=1,
            negative_ttl=30,
            extra_zones=(wire.text_to_wire("10.in-addr.arpa."),),
        )
    )


def instance(iid: str, rng: random.Random, tags: int = 3, **body: Any) -> Instance:
    v6 = rng.random() < 0.2
    address = f"fd00::{rng.randrange(1, 60000):x}" if v6 else f"10.{rng.randrange(256)}.0.1"
    return Instance.from_json(
        "big",
        iid,
        {
            "address": address,
            "port": rng.randrange(1, 65536),
            "tags": rng.sample(TAGS, rng.randrange(tags + 1)),
            "protocol": rng.choice(["tcp", "udp"]),
            **body,
        },
    )
