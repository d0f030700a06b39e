"""The differences IXFR sends (RFC 1995): what each serial step removed and added, for a bounded
number of recent steps.

The index notes the names it installs, replaces or removes (``AnswerIndex.touched``), with
their records as they were before the first change of a step; at each serial step the journal
compares those with the names' records now and keeps the difference. Only what changed is held
twice (the bodies are shared with the index, not copied).
An IXFR from a serial still in the journal gets the steps since, condensed into one difference
(RFC 1995 5: a server may condense); older serials get the whole zone.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.zone import Node

if TYPE_CHECKING:
    from dnsdisc.dnsserver.index import AnswerIndex

# Records (removed plus added) the journal keeps in all; the oldest steps go first.
MAX_RECORDS = 200_000

Record = tuple[bytes, bytes]  # (owner name, record body)


@dataclass(slots=True)
class Step:
    start: int  # the serial before
    end: int  # the serial after
    removed: dict[bytes, list[Record]]  # by zone apex
    added: dict[bytes, list[Record]]

    @property
    def size(self) -> int:
        return sum(map(len, self.removed.values())) + sum(map(len, self.added.values()))


class Journal:
    def __init__(self, index: AnswerIndex) -> None:
        self.index = index
        self.steps: deque[Step] = deque()
        self.records = 0

    def step(self, start: int, end: int, touched: dict[bytes, frozenset[bytes]]) -> None:
        """The index went from serial ``start`` to ``end`` changing the ``touched`` names,
        given with their records before."""
        index = self.index
        removed: dict[bytes, list[Record]] = {}
        added: dict[bytes, list[Record]] = {}
        for name, before in touched.items():
            now = journal_records(index.nodes.get(name))
            if now == before:
                continue
            apex = index.apex_of(name)
            if apex is None:
                continue
            for body in before - now:
                removed.setdefault(apex, []).append((name, body))
            for body in now - before:
                added.setdefault(apex, []).append((name, body))
        entry = Step(start, end, removed, added)
        self.steps.append(entry)
        self.records += entry.size
        while self.records > MAX_RECORDS and len(self.steps) > 1:
            self.records -= self.steps.popleft().size

    def since(self, apex: bytes, serial: int) -> tuple[list[Record], list[Record]] | None:
        """What zone ``apex`` removed and added from ``serial`` to now, condensed; None when
        the journal does not reach back to ``serial``."""
        steps = list(self.steps)
        starts = [entry.start for entry in steps]
        if serial not in starts:
            return None
        removed: dict[Record, None] = {}
        added: dict[Record, None] = {}
        for entry in steps[starts.index(serial) :]:
            for record in entry.removed.get(apex, ()):
                if record in added:
                    del added[record]  # added since, removed again: never there
                else:
                    removed[record] = None
            for record in entry.added.get(apex, ()):
                if record in removed:
                    del removed[record]  # removed since, back again: unchanged
                else:
                    added[record] = None
        return list(removed), list(added)


def journal_records(node: object) -> frozenset[bytes]:
    """A name's records as the journal compares them (no SOA: it changes every step)."""
    # peek: a lazy name's records without keeping them (see zone.LazyNode).
    rrsets = node.peek() if isinstance(node, Node) else {}
    return frozenset(
        item.body for rtype, rrset in rrsets.items() if rtype != wire.SOA for item in rrset.members
    )
