"""The answer index: every name we answer for, with its records already encoded.

When the registry reports that a service changed, the index patches that service's names
(`rebuild` with every member, `patch` with the changed ones; see ``servicenames``): the cost is
that of the members that changed, not of the service. The responder then only looks a
lower-cased wire name up in ``nodes`` and splices pre-encoded record bodies behind compression
pointers; a per-query policy only chooses the order of the items of a balanced RRset.

Names come from three layers: static records from zone files (they win a collision), the names of
each service, and PTR names for registered addresses. Ancestors of every name are counted so that
empty non-terminals answer NODATA instead of NXDOMAIN. The index owns the responder's reply cache
and, on every change of a name, drops the replies made from that name (``ReplyCache.forget_name``:
the name's own, those whose CNAME chain went through it); a name that starts or stops being an
empty non-terminal counts as changed (its NODATA was NXDOMAIN, or the reverse). A new SOA serial
drops the replies that carry it (negative ones) and the apexes'; what may change any reply (a
reload of the zone files, keys) empties the cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.build import PtrEntry, PtrNode
from dnsdisc.dnsserver.cache import ReplyCache
from dnsdisc.dnsserver.dnssd import Browse
from dnsdisc.dnsserver.dnssec import CDNSKEY, CDS, DNSKEY, Signer
from dnsdisc.dnsserver.journal import Journal, journal_records
from dnsdisc.dnsserver.locality import ZoneMap
from dnsdisc.dnsserver.names import Naming, is_query_key, serves_ptr
from dnsdisc.dnsserver.rrset import Item, RRSet
from dnsdisc.dnsserver.servicenames import ServiceNames, build_service, settings_key
from dnsdisc.dnsserver.view import MemberView, ServiceView
from dnsdisc.dnsserver.zone import (
    IndexSettings,
    Node,
    StaticRecord,
    Zone,
    make_zones,
    soa_body,
    static_rrsets,
)


class AnswerIndex:
    """The name table (``nodes``, ``zones``, ``ents``) of one DNS view, kept current by
    ``rebuild``, with the reply cache answers from it may be kept in."""

    def __init__(self, settings: IndexSettings, static: Iterable[StaticRecord] = ()) -> None:
        self.settings = settings
        self.static_records = tuple(static)  # kept to build the same index in a worker
        # Invariant: holds no reply made from a name as it was before a change (``_changed``,
        # ``_install``, ``_uninstall``) nor with an SOA serial before the current one.
        self.cache = ReplyCache()
        self.naming = Naming(settings.domain, settings.ns_label)
        # Which zone a client is in, for the services that answer by it.
        self.locality = ZoneMap(settings.networks)
        self.nodes: dict[bytes, Node] = {}
        self.zones: dict[bytes, Zone] = {}
        self.ents: dict[bytes, int] = {}  # name -> how many names lie below it
        self._static: set[bytes] = set()
        self._services: dict[str, ServiceNames] = {}
        # reverse name -> who points there, from every service, sorted; tuples, not dicts:
        # there is one per registered address.
        self._ptr: dict[bytes, tuple[PtrEntry, ...]] = {}
        # service -> instance id -> the reverse name of its address
        self._service_ptrs: dict[str, dict[str, bytes]] = {}
        # DNS-SD's names across services (``_services._dns-sd._udp.D``, browse domains).
        self._browse = Browse(self.naming, settings.extra_zones, settings.static_ttl)
        # The registry's change index as last told (``set_changes``): with the zone files'
        # serial, it makes every zone's SOA serial.
        self.changes = 0
        # Names added, replaced or removed since the journal last looked, each with its records
        # as they were before (None: not tracked; see journal.py, which turns them into the
        # differences IXFR sends). Taken when a name is first touched: memory for what changed,
        # not a second copy of the zone.
        self.touched: dict[bytes, frozenset[bytes]] | None = None
        self._keys: tuple[Signer | None, int] = (None, 0)  # what publish_keys was last given
        self.journal: Journal | None = None
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

    def apex_of(self, name: bytes) -> bytes | None:
        """The apex of the zone ``name`` is in (None: not ours)."""
        zone = self.find_zone(name)
        return zone.apex if zone is not None else None

    # -- building ----------------------------------------------------------------------------

    def _zone_for(self, name: bytes) -> Zone:
        return self.find_zone(name) or self.zones[self.settings.domain]

    @property
    def serial(self) -> int:
        """Every zone's SOA serial: the zone files' part and the registry's change index, so
        that it moves with every change (RFC 1982 arithmetic: a step stays under 2**31), and,
        with etcd, is the same on every node (the index is the store's revision)."""
        return (self.settings.serial + self.changes) % 2**32

    def set_changes(self, changes: int) -> None:
        """The registry's change index is now ``changes``: the SOA serial follows it. Sent after
        the changes it covers, so a serial never names content older than it."""
        if changes == self.changes and (self.journal is not None or not self.settings.journal):
            return
        before = self.serial
        self.changes = changes
        soa = soa_body(self.settings, self.naming.nameserver(), self.serial)
        for apex, zone in self.zones.items():
            zone.soa = soa
            node = self.nodes.get(apex)
            if node is not None and wire.SOA in node.rrsets:
                node.rrsets[wire.SOA] = RRSet(wire.SOA, [Item(soa)])
            self.cache.forget_name(apex)
        # Negative replies carry the zone's SOA: they go, the others stay (every write moves
        # the serial: emptying the cache here would empty it on every write).
        self.cache.forget_negative()
        self._journal_step(before)

    @property
    def signer(self) -> Signer | None:
        """The signer whose keys this index publishes (``publish_keys``; None: unsigned): what
        signs its zone transfers, so that they carry the DNSKEY RRset their signatures need."""
        return self._keys[0]

    def publish_keys(self, signer: Signer | None, ttl: int) -> None:
        """DNSKEY at every apex, and CDS/CDNSKEY saying what the parent's DS should be (RFC
        7344); None: none (unsigned). Kept across ``restatic`` (see _build_static)."""
        self._keys = (signer, ttl)
        for apex in self.zones:
            node = self.nodes.get(apex)
            if node is None:
                continue
            self._touch(apex)
            for rtype in (DNSKEY, CDS, CDNSKEY):
                node.rrsets.pop(rtype, None)
            if signer is None:
                continue
            node.rrsets[DNSKEY] = RRSet(DNSKEY, [Item(b) for b in signer.dnskey_bodies(ttl)])
            cds, cdnskey = signer.cds_bodies(apex, ttl)
            if cds:
                node.rrsets[CDS] = RRSet(CDS, [Item(b) for b in cds])
                node.rrsets[CDNSKEY] = RRSet(CDNSKEY, [Item(b) for b in cdnskey])
        self.cache.forget()

    def _journal_step(self, before: int) -> None:
        """Note in the journal what the step from serial ``before`` changed; the first step
        starts it (from the names as they are: the whole zone is what an IXFR from before
        gets)."""
        if not self.settings.journal:
            return
        if self.journal is None or self.touched is None:
            self.journal = Journal(self)
            self.touched = {}
        elif self.serial != before:
            self.journal.step(before, self.serial, self.touched)
            self.touched.clear()

    def start_journal(self) -> None:
        """Start the journal again from the names as they are now. For an index built while
        not answered (a reload's, until its swap): what it was filled with meanwhile is no step
        a secondary saw, and kept as one it would hide every later removal of those names."""
        if self.settings.journal:
            self.journal = Journal(self)
            self.touched = {}

    def _build_static(self) -> None:
        ns_name = self.naming.nameserver()
        for apex, zone in make_zones(self.settings, ns_name, self.serial).items():
            held = self.zones.get(apex)
            if held is None:
                self.zones[apex] = zone
            else:
                held.soa = zone.soa  # every name's node points at it: a new serial reaches all
        layer = static_rrsets(self.settings, self.zones, ns_name, self.static_records)
        for name, rrsets in layer.items():
            self._install(name, Node(self._zone_for(name), rrsets, name))
            self._static.add(name)
        if self._keys[0] is not None:
            self.publish_keys(*self._keys)  # the apexes were built again

    def restatic(self, settings: IndexSettings, records: Iterable[StaticRecord]) -> None:
        """A reload that changed only the zone files' records (and the SOA serial): the static
        layer is replaced in place, and the names it no longer holds get back the service or
        PTR records it shadowed. The services' names are not built again, so this costs the
        zone records, not the registry. ``settings`` may differ from ours in the serial only;
        anything else (zones, nameserver, TTLs) needs a new index."""
        if replace(settings, serial=self.settings.serial) != self.settings:
            raise ValueError("only the serial may change in place; build a new index")
        before = self.serial
        self.cache.forget()  # a reload of the zone files: rare, and may change any reply
        self.settings = settings
        self.static_records = tuple(records)
        before_names = self._static
        for name in before_names:
            self._uninstall(name)
        self._static = set()
        self._build_static()
        freed = before_names - self._static
        if not freed:
            self._journal_step(before)
            return
        for names in self._services.values():
            for name in names.nodes.keys() & freed:
                self._install(name, names.nodes[name])
        browse = self._browse.current()
        for name in freed & browse.keys():
            self._install(name, Node(self._zone_for(name), browse[name], name))
        for name in freed & self._ptr.keys():
            if name not in self.nodes:
                self._install(name, PtrNode(self._zone_for(name), name, self._ptr[name]))
        self._journal_step(before)

    def rebuild(
        self, service: str, settings: ServiceView | None, members: Sequence[MemberView]
    ) -> None:
        """Make ``service``'s names those of ``settings`` and ``members``; ``settings`` None
        means the service is gone. Only the members that differ from those the index holds
        (registration, weight, priority, role) are encoded again, and only the RRsets of the
        groups they are in are rebuilt; the others just take the new member objects."""
        current = self._services.get(service)
        if settings is None:
            if current is not None:
                self._replace(service, current, None)
            return
        if current is None or current.key != settings_key(settings):
            # Built before anything is removed: if building fails, the old answers stay.
            zone = self.zones[self.settings.domain]
            fresh = build_service(self.naming, zone, settings, members, is_query_key(service))
            self._replace(service, current, fresh)
            return
        old = current.members
        changed = []
        for member in members:
            before = old.get(member.instance.id)
            if before is not None and _same(before, member):
                current.refresh(member)
            else:
                changed.append(member)
        ids = {m.instance.id for m in members}
        removed = [iid for iid in old if iid not in ids]
        if changed or removed:
            self._patch(service, current, changed, removed)

    def patch(self, service: str, changed: Sequence[MemberView], removed: Sequence[str]) -> bool:
        """Replace or add the ``changed`` members of ``service``, drop the ``removed`` ids:
        the work is that of the members named, not of the service. False, with nothing done,
        when the index does not hold ``service``."""
        current = self._services.get(service)
        if current is None:
            return False
        self._patch(service, current, changed, removed)
        return True

    def members_of(self, service: str) -> dict[str, MemberView]:
        """The members the answers of ``service`` are built from, by instance id."""
        current = self._services.get(service)
        return current.members if current is not None else {}

    def service_names(self, service: str) -> ServiceNames | None:
        return self._services.get(service)

    def _patch(
        self,
        service: str,
        current: ServiceNames,
        changed: Sequence[MemberView],
        removed: Sequence[str],
    ) -> None:
        touched = current.apply(changed, removed)
        nodes = current.nodes
        for name in touched:
            if name in self._static:
                continue  # the registry refuses such names; a zone file loaded later wins
            node = nodes.get(name)
            if node is None:
                self._uninstall(name)
            elif name in self.nodes:
                self._changed(name)
                self.nodes[name] = node  # its ancestors are counted already
            else:
                self._install(name, node)
        ids = [m.instance.id for m in changed]
        ids.extend(removed)
        self._update_ptrs(service, current, ids)
        self._sync_browse(service, current)

    def _replace(self, service: str, old: ServiceNames | None, new: ServiceNames | None) -> None:
        before = old.nodes if old is not None else {}
        after = new.nodes if new is not None else {}
        for name in before.keys() - after.keys():
            if name not in self._static:
                self._uninstall(name)
        for name, node in after.items():
            if name in self._static:
                continue
            if name in before:
                self._changed(name)
                self.nodes[name] = node
            else:
                self._install(name, node)
        if new is None:
            self._services.pop(service, None)
        else:
            self._services[service] = new
        ids = list(old.members) if old is not None else []
        if new is not None:
            ids.extend(new.members)
        self._update_ptrs(service, new, ids)
        self._sync_browse(service, new)

    def _update_ptrs(self, service: str, names: ServiceNames | None, ids: Sequence[str]) -> None:
        """Bring the PTR entries of the instances ``ids`` of ``service`` up to date."""
        if is_query_key(service):
            return  # a query's instances have their PTR from their own service
        mine = self._service_ptrs.setdefault(service, {})
        members = names.members if names is not None else {}
        ttl = names.settings.ttl if names is not None else 0
        drop: dict[bytes, set[str]] = {}
        add: dict[bytes, list[PtrEntry]] = {}
        reverse = self.naming.reverse
        for iid in dict.fromkeys(ids):
            old = mine.pop(iid, None)
            if old is not None:
                drop.setdefault(old, set()).add(iid)
            member = members.get(iid)
            if member is not None and names is not None:
                address = member.instance.address
                name = reverse(address)
                if not serves_ptr(address, name, self.zones):
                    continue  # a public address outside our reverse zones is not ours to name
                mine[iid] = name
                add.setdefault(name, []).append((service, iid, ttl, names.hosts[iid]))
                drop.setdefault(name, set()).add(iid)
        if not mine:
            del self._service_ptrs[service]
        for name, gone in drop.items():
            old_entries = self._ptr.get(name, ())
            kept = [e for e in old_entries if e[0] != service or e[1] not in gone]
            entries = tuple(sorted(kept + add.get(name, [])))
            if entries == old_entries:
                continue
            if entries:
                self._ptr[name] = entries
            else:
                del self._ptr[name]
            if name in self._static:
                continue
            if name in self.nodes:
                self._uninstall(name)
            if entries:
                self._install(name, PtrNode(self._zone_for(name), name, entries))

    def _sync_browse(self, service: str, names: ServiceNames | None) -> None:
        """Bring DNS-SD's names across services up to date with ``service`` (see dnssd.py)."""
        protocols = names.browsable if names is not None else frozenset()
        ttl = names.settings.ttl if names is not None else 0
        for name, rrsets in self._browse.update(service, protocols, ttl).items():
            if name in self._static:
                continue  # a zone file's records win, as everywhere
            if rrsets is None:
                self._uninstall(name)
            else:
                self._install(name, Node(self._zone_for(name), rrsets, name))

    def _touch(self, name: bytes) -> None:
        """Before ``name`` changes: keep its records as they were, for the journal."""
        touched = self.touched
        if touched is not None and name not in touched:
            touched[name] = journal_records(self.nodes.get(name))

    def _changed(self, name: bytes) -> None:
        """Before ``name``'s node is replaced: its cached replies go, and the journal keeps its
        records as they were."""
        self.cache.forget_name(name)
        self._touch(name)

    def _install(self, name: bytes, node: Node) -> None:
        self._changed(name)
        if name in self.nodes:
            self._uninstall(name)
        self.nodes[name] = node
        ents = self.ents
        for parent in wire.parent_names(name):
            held = ents.get(parent, 0)
            if not held:
                self.cache.forget_name(parent)  # NXDOMAIN until now, an empty non-terminal now
            ents[parent] = held + 1

    def _uninstall(self, name: bytes) -> None:
        if name not in self.nodes:
            return
        self._changed(name)
        del self.nodes[name]
        for parent in wire.parent_names(name):
            left = self.ents[parent] - 1
            if left:
                self.ents[parent] = left
            else:
                del self.ents[parent]
                self.cache.forget_name(parent)  # an empty non-terminal no longer: NXDOMAIN


def _same(before: MemberView, after: MemberView) -> bool:
    """Whether ``after`` has the records of ``before`` (reported figures are read live)."""
    return (
        before.instance == after.instance
        and before.weight == after.weight
        and before.priority == after.priority
        and before.role == after.role
    )
