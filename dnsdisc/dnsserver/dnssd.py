"""The DNS-SD names (RFC 6763) that span services: the service type enumeration and the
browse domains.

Each service with ``dnssd`` has its own DNS-SD names, built with its other names
(``servicenames``): a PTR at ``_<service>._<proto>.D`` to each instance handed out, and the
instances' ``<id>._<service>._<proto>.D`` (SRV, TXT). What no one service owns is kept here and
installed by the index: ``_services._dns-sd._udp.D`` (RFC 6763 9), a PTR to each service type
that has a browsable instance now, and, while there is any, the browse domain records
``b._dns-sd._udp`` and ``lb._dns-sd._udp`` (RFC 6763 11) under each reverse zone we answer
for, pointing at D: a client looks for those in the reverse zone of its own address to learn
where to browse.
"""

from __future__ import annotations

from collections.abc import Iterable

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.names import Naming
from dnsdisc.dnsserver.rrset import Item, RRSet

# RFC 6763 11: "b" browse domains, "lb" the legacy browse domain (the one to browse when the
# user picked none). "db"/"r"/"dr" are about registering, which happens over the HTTP API.
BROWSE_LABELS = ("b", "lb")
_REVERSE = (b"\x07in-addr\x04arpa\x00", b"\x03ip6\x04arpa\x00")


def reverse_apexes(zones: Iterable[bytes]) -> list[bytes]:
    """The zones (wire names) among ``zones`` that are reverse zones: ``reverse_zones``, and
    zone files whose origin lies under in-addr.arpa or ip6.arpa."""
    return [z for z in zones if z.endswith(_REVERSE)]


class Browse:
    """The service types browsable now, by service, and the names they make."""

    def __init__(self, naming: Naming, reverse_zones: Iterable[bytes], ttl: int) -> None:
        self.naming = naming
        self.ttl = ttl  # of the browse domain records, which change with the config only
        self.browse_names = [
            wire.labels_to_wire((label, "_dns-sd", "_udp"), apex)
            for apex in reverse_apexes(reverse_zones)
            for label in BROWSE_LABELS
        ]
        self._types: dict[str, tuple[frozenset[str], int]] = {}  # service -> (protos, TTL)
        self._current: dict[bytes, dict[int, RRSet]] = {}

    def update(
        self, service: str, protocols: frozenset[str], ttl: int
    ) -> dict[bytes, dict[int, RRSet] | None]:
        """``service`` has browsable instances under ``protocols`` (none: it is not browsable,
        or gone), with records of ``ttl``: the names that changed, with their new RRsets (None:
        the name is gone)."""
        before = self._types.get(service)
        if protocols:
            if before == (protocols, ttl):
                return {}
            self._types[service] = (protocols, ttl)
        elif before is None:
            return {}
        else:
            del self._types[service]
        old = self._current
        self._current = self._names()
        changed: dict[bytes, dict[int, RRSet] | None] = {
            name: None for name in old if name not in self._current
        }
        changed.update(self._current)
        return changed

    def current(self) -> dict[bytes, dict[int, RRSet]]:
        return self._current

    def _names(self) -> dict[bytes, dict[int, RRSet]]:
        if not self._types:
            return {}
        naming = self.naming
        # One RRset has one TTL (RFC 2181 5.2): the shortest of the services listed.
        ttl = min(t for _, t in self._types.values())
        types = [
            Item(wire.rr_body(wire.PTR, ttl, naming.srv(service, proto)))
            for service, (protos, _) in sorted(self._types.items())
            for proto in sorted(protos)
        ]
        out = {naming.dnssd_services(): {wire.PTR: RRSet(wire.PTR, types)}}
        domain = Item(wire.rr_body(wire.PTR, self.ttl, naming.domain))
        for name in self.browse_names:
            out[name] = {wire.PTR: RRSet(wire.PTR, [domain])}
        return out
