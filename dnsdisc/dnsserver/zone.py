"""Zones and the names they hold: what the index is keyed by, and its static layer.

``IndexSettings`` says which zones we are authoritative for and how their SOA and NS records
read; ``Zone`` is one apex with its SOA; ``Node`` is one name with its RRsets. The static layer
(SOA, NS and glue of every apex, and the records of zone files as ``StaticRecord``) is built here
once per index (``static_rrsets``); services add their names on top (see build.py).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.rrset import NAME_TARGET, Item, RRSet


@dataclass(frozen=True, slots=True)
class IndexSettings:
    domain: bytes
    ns_label: str = "ns"
    ns_addresses: tuple[str, ...] = ("127.0.0.1",)
    hostmaster: str = "hostmaster"
    # The zone files' part of the SOA serial: it moves on a reload that changes them. The
    # registry's change index is added to it (``AnswerIndex.set_changes``).
    serial: int = 1
    negative_ttl: int = 5
    static_ttl: int = 300
    extra_zones: tuple[bytes, ...] = ()
    # ``locality.networks``: (zone, network) pairs, the networks as text (see locality.ZoneMap).
    networks: tuple[tuple[str, str], ...] = ()
    # The catalog zone (RFC 9432) among extra_zones, if one is served: its apex NS is "invalid."
    catalog: bytes | None = None
    # Keep a journal of differences for IXFR (when anyone may transfer at all).
    journal: bool = False


@dataclass(frozen=True, slots=True)
class StaticRecord:
    """A record from a zone file, with its rdata already in wire form."""

    owner: bytes
    rtype: int
    ttl: int
    rdata: bytes


@dataclass(slots=True)
class Zone:
    apex: bytes
    soa: bytes  # SOA record body; its TTL is the negative-caching TTL (RFC 2308)


class Node:
    __slots__ = ("name", "rrsets", "zone")

    def __init__(self, zone: Zone, rrsets: dict[int, RRSet], name: bytes) -> None:
        self.rrsets = rrsets
        self.zone = zone
        self.name = name

    @property
    def soa(self) -> bytes:
        """The zone's SOA with its owner encoded relative to this name, for NODATA answers.
        Made when asked (NODATA replies are cached) rather than kept for every name."""
        return wire.owner_pointer(self.zone.apex, self.name) + self.zone.soa

    def peek(self) -> dict[int, RRSet]:
        """The RRsets, for a reader that goes over every name (a transfer, the journal): a
        ``LazyNode`` makes them for it without keeping them."""
        return self.rrsets


class LazyNode(Node):
    """A name whose RRsets are made when first asked for (``make``) and kept from then on.

    Most names a service has are its instances' own names and their addresses' PTR names, one
    of each per instance, rarely queried: made ahead, each held a dict and one or two RRsets
    (~1 kB an instance, a million instances' worth in every DNS process). A lazy one holds only
    the records it is made of, which the service keeps anyway."""

    __slots__ = ("built",)

    def __init__(self, zone: Zone, name: bytes) -> None:
        # Not Node.__init__: ``rrsets`` is this class's property, not the slot.
        self.zone = zone
        self.name = name
        self.built: dict[int, RRSet] | None = None

    def make(self) -> dict[int, RRSet]:
        raise NotImplementedError

    @property
    def rrsets(self) -> dict[int, RRSet]:
        built = self.built
        if built is None:
            built = self.built = self.make()
        return built

    @rrsets.setter
    def rrsets(self, value: dict[int, RRSet]) -> None:
        self.built = value

    def peek(self) -> dict[int, RRSet]:
        built = self.built
        return built if built is not None else self.make()


class Unserved(Node):
    """A service's name whose members are all out of the hand-out (health): its NODATA for
    ``types``, those its members would answer, says "no healthy instance" (RFC 8914
    EXTRA-TEXT, see answer.py); for another type it is a plain NODATA."""

    __slots__ = ("types",)

    def __init__(
        self, zone: Zone, rrsets: dict[int, RRSet], name: bytes, types: frozenset[int]
    ) -> None:
        super().__init__(zone, rrsets, name)
        self.types = types


def make_zones(settings: IndexSettings, ns_name: bytes, serial: int) -> dict[bytes, Zone]:
    """The zones of ``settings`` (the domain first), each with its SOA at ``serial``."""
    return {
        apex: Zone(apex, soa_body(settings, ns_name, serial))
        for apex in (settings.domain, *settings.extra_zones)
    }


def soa_body(settings: IndexSettings, ns_name: bytes, serial: int) -> bytes:
    """Every zone's SOA (one for all: they change together). Refresh and retry are short: a
    secondary that missed a NOTIFY catches up within minutes, not hours."""
    s = settings
    hostmaster = wire.labels_to_wire((s.hostmaster,), s.domain)
    return wire.rr_body(
        wire.SOA,
        s.negative_ttl,
        wire.soa_rdata(ns_name, hostmaster, serial, 300, 60, 604800, s.negative_ttl),
    )


def static_rrsets(
    settings: IndexSettings,
    zones: dict[bytes, Zone],
    ns_name: bytes,
    records: Iterable[StaticRecord],
) -> dict[bytes, dict[int, RRSet]]:
    """The static layer by name: the nameserver's addresses, each apex's SOA and NS (with the
    addresses as glue), and the zone files' records."""
    s = settings
    ns_glue = []
    grouped: dict[bytes, dict[int, list[Item]]] = defaultdict(lambda: defaultdict(list))
    for address in s.ns_addresses:
        rtype, rdata = wire.address_rdata(address)
        body = wire.rr_body(rtype, s.static_ttl, rdata)
        ns_glue.append(body)
        grouped[ns_name][rtype].append(Item(body))
    for apex, zone in zones.items():
        grouped[apex][wire.SOA].append(Item(zone.soa))
        if apex == s.catalog:
            # RFC 9432 4.1: a catalog's NS is "invalid." alone; it is never queried for data.
            grouped[apex][wire.NS].append(
                Item(wire.rr_body(wire.NS, s.static_ttl, b"\x07invalid\x00"))
            )
            continue
        grouped[apex][wire.NS].append(
            Item(
                wire.rr_body(wire.NS, s.static_ttl, ns_name),
                target_off=NAME_TARGET,
                target=ns_name,
                glue=tuple(ns_glue),
            )
        )
    records = list(records)
    # One RRset has one TTL (RFC 2181 5.2; its RRSIG says it, RFC 4034 3): records of one name
    # and type given different TTLs all take the smallest, as PTR shared by services does.
    ttls: dict[tuple[bytes, int], int] = {}
    for rec in records:
        key = (rec.owner, rec.rtype)
        ttls[key] = min(ttls.get(key, rec.ttl), rec.ttl)
    for rec in records:
        target = rec.rdata if rec.rtype == wire.CNAME else b""
        grouped[rec.owner][rec.rtype].append(
            Item(
                wire.rr_body(rec.rtype, ttls[rec.owner, rec.rtype], rec.rdata),
                target_off=NAME_TARGET if target else -1,
                target=target,
            )
        )
    return {
        name: {rtype: RRSet(rtype, items) for rtype, items in types.items()}
        for name, types in grouped.items()
    }


def catalog_records(apex: bytes, members: Sequence[bytes], ttl: int) -> list[StaticRecord]:
    """The catalog zone's records (RFC 9432) but its SOA and NS (the index adds those):
    ``version`` TXT "2", and a PTR per member zone under ``zones``, its label a hash of the
    member's name so that it stays the same across restarts and nodes."""
    out = [StaticRecord(b"\x07version" + apex, wire.TXT, ttl, wire.txt_rdata([b"2"]))]
    for member in members:
        label = hashlib.sha256(member.lower()).hexdigest()[:16].encode()
        owner = bytes([len(label)]) + label + b"\x05zones" + apex
        out.append(StaticRecord(owner, wire.PTR, ttl, member))
    return out
