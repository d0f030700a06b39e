"""Members as health hands them out, and an answer index's name table as answers see it, for
tests that compare indexes built different ways."""

from __future__ import annotations

from dnsdisc.dnsserver.index import AnswerIndex
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
