"""The answer index: every name we answer for, with its records already encoded.

When the registry reports that a service changed, the index rebuilds that service's names
(`rebuild`) from its current instances. The responder then only looks a lower-cased wire name up
in ``nodes`` and splices pre-encoded record bodies behind compression pointers; a per-query policy
only chooses the order of the items of a balanced RRset.

Names come from three layers: static records from zone files (they win a collision), the names of
each service, and PTR names for registered addresses. Ancestors of every name are counted so that
empty non-terminals answer NODATA instead of NXDOMAIN. The index owns the responder's reply cache
and empties it on every change of a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.build import PtrEntry, ptr_rrset, service_nodes
from dnsdisc.dnsserver.cache import ReplyCache
from dnsdisc.dnsserver.names import Naming, serves_ptr
from dnsdisc.dnsserver.view import InstanceView, MemberView, ServiceView
from dnsdisc.dnsserver.zone import (
    IndexSettings,
    Node,
    StaticRecord,
    Zone,
    make_zones,
    static_rrsets,
)


class AnswerIndex:
    """The name table (``nodes``, ``zones``, ``ents``) of one DNS view, kept current by
    ``rebuild``, with the reply cache answers from it may be kept in."""

    def __init__(self, settings: IndexSettings, static: Iterable[StaticRecord] = ()) -> None:
        self.settings = settings
        self.static_records = tuple(static)  # kept to build the same index in a worker
        # Invariant: emptied whenever a name changes (``rebuild``, ``_install``, ``_uninstall``).
        self.cache = ReplyCache()
        self.naming = Naming(settings.domain, settings.ns_label)
        self.nodes: dict[bytes, Node] = {}
        self.zones: dict[bytes, Zone] = {}
        self.ents: dict[bytes, int] = {}  # name -> how many names lie below it
        self._static: set[bytes] = set()
        self._service_names: dict[str, list[bytes]] = {}
        # reverse name -> who points there, from every service, sorted; tuples, not dicts:
        # there is one per registered address.
        self._ptr: dict[bytes, tuple[PtrEntry, ...]] = {}
        self._service_ptrs: dict[str, tuple[bytes, ...]] = {}  # the reverse names of a service
        self._build_static()

    # -- lookup helpers used by the responder ------------------------------------------------

    def find_zone(self, name: bytes) -> Zone | None:
        zones = self.zones
        zone = zones.get(name)
        if zone is not None:
            return zone
        pos = 0
        while name[pos] != 0:
            pos += name[pos] + 1
            zone = zones.get(name[pos:])
            if zone is not None:
                return zone
        return None

    # -- building ----------------------------------------------------------------------------

    def _zone_for(self, name: bytes) -> Zone:
        return self.find_zone(name) or self.zones[self.settings.domain]

    def _build_static(self) -> None:
        ns_name = self.naming.nameserver()
        self.zones.update(make_zones(self.settings, ns_name))
        layer = static_rrsets(self.settings, self.zones, ns_name, self.static_records)
        for name, rrsets in layer.items():
            self._install(name, Node(self._zone_for(name), rrsets, name))
            self._static.add(name)

    def rebuild(
        self, service: str, settings: ServiceView | None, members: Sequence[MemberView]
    ) -> None:
        """Replace every name of ``service``; ``settings`` None means the service is gone."""
        naming = self.naming
        hosts = {m.instance.id: naming.instance(service, m.instance.id) for m in members}
        # Built before anything is removed: if building fails, the old answers stay.
        names = (
            service_nodes(naming, self.zones[self.settings.domain], settings, members, hosts)
            if settings is not None
            else {}
        )
        self.cache.forget()
        before = set(self._service_names.pop(service, ()))
        for name in before - names.keys():
            self._uninstall(name)
        if settings is not None:
            installed = []
            for name, node in names.items():
                if name in self._static:
                    continue  # the registry refuses such names; a zone file loaded later wins
                if name in before:
                    self.nodes[name] = node  # its ancestors are counted already
                else:
                    self._install(name, node)
                installed.append(name)
            self._service_names[service] = installed
        instances = [m.instance for m in members] if settings else []
        self._rebuild_ptrs(service, settings.ttl if settings else 0, instances, hosts)

    def _rebuild_ptrs(
        self, service: str, ttl: int, instances: Sequence[InstanceView], hosts: dict[str, bytes]
    ) -> None:
        wanted: dict[bytes, list[PtrEntry]] = {}
        reverse = self.naming.reverse
        for inst in instances:
            name = reverse(inst.address)
            if serves_ptr(inst.address, name, self.zones):
                wanted.setdefault(name, []).append((service, inst.id, ttl, hosts[inst.id]))
        before = self._service_ptrs.pop(service, ())
        if wanted:
            self._service_ptrs[service] = tuple(wanted)
        for name in wanted.keys() | before if before else wanted:
            old = self._ptr.get(name, ())
            mine = wanted.get(name, [])
            entries = tuple(sorted([e for e in old if e[0] != service] + mine))
            if entries == old:
                continue  # unchanged: most names, when one instance of many changes
            if entries:
                self._ptr[name] = entries
            else:
                del self._ptr[name]
            if name in self._static:
                continue
            if name in self.nodes:
                self._uninstall(name)
            if entries:
                node = Node(self._zone_for(name), {wire.PTR: ptr_rrset(entries)}, name)
                self._install(name, node)

    def _install(self, name: bytes, node: Node) -> None:
        self.cache.forget()
        if name in self.nodes:
            self._uninstall(name)
        self.nodes[name] = node
        ents = self.ents
        for parent in wire.parent_names(name):
            ents[parent] = ents.get(parent, 0) + 1

    def _uninstall(self, name: bytes) -> None:
        if self.nodes.pop(name, None) is None:
            return
        self.cache.forget()
        for parent in wire.parent_names(name):
            left = self.ents[parent] - 1
            if left:
                self.ents[parent] = left
            else:
                del self.ents[parent]
