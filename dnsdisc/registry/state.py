"""What the registry holds in memory, and the only code that changes it.

``InstanceState`` is an instance plus what changes without a re-registration (heartbeats, reported
figures, health status) and keeps its own status bookkeeping: flap history, recovery time, history
for people. ``Memory`` holds the services by name, and the named queries; its methods are the only
writes to them, and each announces what it changed on ``Events``. ``Memory`` trusts its callers: the
Registry has checked a write against reserved names and static services and committed it to the
store; the Follower has applied a shared store's rules.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from dnsdisc.errors import ValidationError
from dnsdisc.registry import changes as kinds
from dnsdisc.registry.events import Events
from dnsdisc.registry.limits import tag_counts
from dnsdisc.registry.model import (
    CRITICAL,
    INSTANCE_FIELDS,
    MAINTENANCE,
    PASSING,
    SERVICE_FIELDS,
    WARNING,
    Instance,
    ServiceSettings,
    known_fields,
)
from dnsdisc.registry.queries import QUERY_FIELDS, STEP_FIELDS, QueryDef
from dnsdisc.registry.settings import RegistrySettings
from dnsdisc.store.base import Snapshot

log = logging.getLogger(__name__)

# Status changes kept per instance for people (InstanceState.history).
HISTORY_LEN = 20
# Times of status changes kept per instance for flap damping (InstanceState.changes).
CHANGES_LEN = 32


@dataclass(slots=True)
class CheckState:
    """The latest run of one of an instance's checks, for people (the API, the dashboard): its
    judged status (after rise/fall), the run's output and response time, and since when."""

    status: str
    output: str
    latency_ms: float | None
    since: str  # ISO 8601, when the status last changed

    def to_json(self, spec_id: str, kind: str) -> dict[str, object]:
        return {
            "id": spec_id,
            "type": kind,
            "status": self.status,
            "output": self.output,
            "latency_ms": self.latency_ms,
            "since": self.since,
        }


@dataclass(slots=True)
class InstanceState:
    """An instance plus what changes without a re-registration: heartbeats, reported figures and
    health. Times are the registry clock's (monotonic); ``wall_since`` is for people."""

    instance: Instance
    registered_at: float
    last_heartbeat: float
    load: float | None = None
    latency_ms: float | None = None
    status: str = PASSING
    since: float = 0.0
    wall_since: float = field(default_factory=time.time)
    output: str = ""
    maintenance: str | None = None  # the reason, while in maintenance
    # When the status last changed (for flap damping) and when it last left critical (slow start).
    # Made at the first change: most instances never change, and an empty deque is not small.
    changes: deque[float] | tuple[float, ...] = ()
    recovered_at: float | None = None
    # How often the DNS answers handed this instance out first in its service's balanced A/AAAA
    # answers (counted by the answer index), and the latest effective status changes as
    # (wall time ISO 8601, status), for people (the dashboard).
    answers: int = 0
    history: deque[tuple[str, str]] | tuple[tuple[str, str], ...] = ()
    # Each active check's latest run by the check's id (only on the node that runs them).
    check_states: dict[str, CheckState] = field(default_factory=dict)

    @classmethod
    def registered(
        cls,
        inst: Instance,
        now: float,
        prev: InstanceState | None,
        start: tuple[str, str] | None = None,
    ) -> InstanceState:
        """The state of an instance (re-)registered at ``now``; ``prev`` is the one it replaces;
        ``start``, the status and output a new one starts in (not a change: no flap counted)."""
        state = cls(inst, prev.registered_at if prev else now, now, since=now)
        if prev is not None:
            state.carry_health(prev)
        elif start is not None:
            state.status, state.output = start
        elif inst.check is not None:
            # Not handed out before its check has passed once: it may not be listening yet.
            state.status, state.output = CRITICAL, "awaiting the first check"
        return state

    @property
    def effective_status(self) -> str:
        return MAINTENANCE if self.maintenance is not None else self.status

    def carry_health(self, prev: InstanceState) -> None:
        """A re-registration keeps what was learnt about the instance's health."""
        self.load, self.latency_ms = prev.load, prev.latency_ms
        self.status, self.since, self.wall_since = prev.status, prev.since, prev.wall_since
        self.output, self.maintenance = prev.output, prev.maintenance
        self.changes, self.recovered_at = prev.changes, prev.recovered_at
        self.answers, self.history = prev.answers, prev.history
        # Only of the checks it still has (an id reused for another check starts afresh).
        kept = {c.id: c for c in self.instance.checks}
        old = {c.id: c for c in prev.instance.checks}
        self.check_states = {
            k: v for k, v in prev.check_states.items() if k in kept and kept[k] == old.get(k)
        }

    def take_status(self, status: str, output: str, clock: Callable[[], float]) -> str | None:
        """Take a verdict. When it changes the status: the effective status before, else None."""
        self.output = output
        if status == self.status:
            return None
        before = self.effective_status
        now = clock()
        if self.status == CRITICAL:
            self.recovered_at = now
        wall = time.time()
        self.status, self.since, self.wall_since = status, now, wall
        if not isinstance(self.changes, deque):
            self.changes = deque(maxlen=CHANGES_LEN)
        self.changes.append(now)
        if self.effective_status != before:
            self.record(wall)
        return before

    def take_maintenance(self, reason: str | None) -> str | None:
        """Enter maintenance (a reason), change its reason, or leave it (None). When that changes
        anything: the effective status before, else None."""
        if self.maintenance == reason:
            return None
        before = self.effective_status
        self.maintenance = reason
        if self.effective_status != before:
            self.record(time.time())
        return before

    def record(self, wall: float) -> None:
        """Note the effective status in ``history`` (after it changed at ``wall``)."""
        when = datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")
        if not isinstance(self.history, deque):
            self.history = deque(maxlen=HISTORY_LEN)
        self.history.append((when, self.effective_status))


@dataclass(slots=True)
class Service:
    settings: ServiceSettings
    instances: dict[str, InstanceState] = field(default_factory=dict)
    static: bool = False
    # How many instances carry each tag (for limits.tags_per_service): counted when first asked
    # for, then kept by ``put`` and ``drop``; any other change to ``instances`` drops it.
    _tags: Counter[str] | None = field(default=None, repr=False, compare=False)

    def put(self, state: InstanceState) -> InstanceState | None:
        """Add or replace an instance; the one it replaced."""
        iid = state.instance.id
        prev = self.instances.get(iid)
        self.instances[iid] = state
        if self._tags is not None:
            if prev is not None:
                self._untag(prev)
            self._tags.update(state.instance.tags)
        return prev

    def drop(self, instance_id: str) -> InstanceState | None:
        state = self.instances.pop(instance_id, None)
        if state is not None and self._tags is not None:
            self._untag(state)
        return state

    def keep(self, instances: dict[str, InstanceState]) -> None:
        """Hold exactly ``instances`` from now on."""
        self.instances = instances
        self._tags = None

    def tag_counts(self) -> Counter[str]:
        """Tag -> how many instances carry it (none with 0)."""
        if self._tags is None:
            self._tags = tag_counts(s.instance for s in self.instances.values())
        return self._tags

    def _untag(self, state: InstanceState) -> None:
        tags = self._tags
        assert tags is not None
        for tag in state.instance.tags:
            left = tags[tag] - 1
            if left > 0:
                tags[tag] = left
            else:
                del tags[tag]


class Tally:
    """Registrations, replacements and deregistrations counted instead of logged, and of which
    services (``Memory.quiet``)."""

    __slots__ = ("deregistered", "registered", "replaced", "services")

    def __init__(self) -> None:
        # A list each, so that ``note`` takes the one to count in without a lookup by name.
        self.registered = [0]
        self.replaced = [0]
        self.deregistered = [0]
        self.services: dict[str, None] = {}  # in the order first touched

    def note(self, counter: list[int], service: str) -> None:
        counter[0] += 1
        self.services[service] = None

    def __bool__(self) -> bool:
        return bool(self.services)

    def summary(self, most: int = 5) -> str:
        """E.g. ``registered 120, replaced 8 instances of web``."""
        counts = [
            f"{what} {n[0]}"
            for what, n in (
                ("registered", self.registered),
                ("replaced", self.replaced),
                ("deregistered", self.deregistered),
            )
            if n[0]
        ]
        names = list(self.services)
        shown = ", ".join(names[:most])
        if len(names) > most:
            shown += f" and {len(names) - most} more services"
        return f"{', '.join(counts)} instances of {shown}"


class Memory:
    """The services in memory, by name. ``settings`` (what the config says) is replaced whole on
    reload, never changed in place."""

    def __init__(
        self, settings: RegistrySettings, events: Events, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.events = events
        self.clock = clock
        self._services: dict[str, Service] = {}
        # Stored values skipped because they do not validate (dnsdisc_store_skipped_keys).
        self.skipped = 0
        # Set while a batch is applied (``quiet``): registrations are counted, not logged.
        self._tally: Tally | None = None
        # Named queries: those defined over the API (and stored), the config's (static), and
        # the effective ones, by name: a static query shadows a stored one of its name.
        self._stored_queries: dict[str, QueryDef] = {}
        self._static_queries: dict[str, QueryDef] = {}
        self._queries: dict[str, QueryDef] = {}
        self.queries: Mapping[str, QueryDef] = MappingProxyType(self._queries)
        self.stored_queries: Mapping[str, QueryDef] = MappingProxyType(self._stored_queries)

    # -- reading -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Service]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    def names(self) -> list[str]:
        return list(self._services)

    def get(self, name: str) -> Service | None:
        return self._services.get(name)

    def find(self, service: str, instance_id: str) -> InstanceState | None:
        svc = self._services.get(service)
        return svc.instances.get(instance_id) if svc else None

    @contextmanager
    def quiet(self) -> Iterator[Tally]:
        """Within it, registrations and deregistrations are counted in the tally it gives
        instead of logged one line each: the caller logs the tally once."""
        tally = self._tally = Tally()
        try:
            yield tally
        finally:
            self._tally = None

    # -- registrations -----------------------------------------------------------------------

    def load(self, snap: Snapshot) -> None:
        """Take what a store holds (at start, before anything else), then add the services the
        config names. Announces the health verdicts it finds, not the services. A stored value
        that does not validate is logged, counted and skipped, as the watch does: one bad key
        must not keep every node from starting. Fields this version does not know are dropped
        (a newer node may have written them)."""
        now = self.clock()
        for name, data in snap.services.items():
            settings = self.stored_settings(name, data)
            if settings is not None:
                self._services[name] = Service(settings)
        for (service, iid), data in snap.instances.items():
            inst = self.stored_instance(service, iid, data)
            if inst is None:
                continue
            svc = self._service_or_new(service)
            # After a restart each lease starts afresh and checks start from passing: the
            # restart must not expire or hide anything; the checks resume at once.
            svc.put(InstanceState(inst, now, now, since=now))
        for (service, iid), data in snap.statuses.items():
            self.take_verdict(service, iid, data)
        for name, settings in self.settings.configured.items():
            self._services.setdefault(name, Service(settings))
        for name, data in snap.queries.items():
            query = self.stored_query(name, data)
            if query is not None:
                self._stored_queries[query.name] = query
                self._settle_query(query.name)

    def skip(self, what: str, name: str, exc: ValidationError) -> None:
        self.skipped += 1
        log.warning("ignoring the stored %s %s: %s: %s", what, name, exc.field, exc.message)

    def stored_settings(self, name: str, data: dict[str, Any]) -> ServiceSettings | None:
        """A service's settings as a store holds them; None (logged, counted) when they do not
        validate. Fields this version does not know are dropped."""
        try:
            return ServiceSettings.from_json(
                name, known_fields(data, SERVICE_FIELDS), self.settings.for_service(name)
            )
        except ValidationError as exc:
            self.skip("service settings", name, exc)
            return None

    def stored_instance(self, service: str, iid: str, data: dict[str, Any]) -> Instance | None:
        """An instance as a store holds it; None (logged, counted) when it does not validate."""
        try:
            return Instance.from_json(service, iid, known_fields(data, INSTANCE_FIELDS))
        except ValidationError as exc:
            self.skip("instance", f"{service}/{iid}", exc)
            return None

    def put_instance(self, inst: Instance, start: tuple[str, str] | None = None) -> bool:
        """Put ``inst`` in memory, keeping what was learnt about its health; True when new.
        ``start``: the status and output a new instance starts in."""
        svc = self._service_or_new(inst.service)
        prev = svc.instances.get(inst.id)
        svc.put(InstanceState.registered(inst, self.clock(), prev, start))
        tally = self._tally
        if tally is not None:
            tally.note(tally.replaced if prev is not None else tally.registered, inst.service)
        else:
            log.info(
                "%s instance %s/%s at %s port %d",
                "registered" if prev is None else "replaced",
                inst.service,
                inst.id,
                inst.address,
                inst.port,
            )
        self.events.changes.record(kinds.REGISTER, inst.service, inst.id, inst.to_json())
        self.events.changed.emit(inst.service, inst.id)
        return prev is None

    def drop_instance(self, service: str, instance_id: str) -> None:
        svc = self._services.get(service)
        if svc is not None and svc.drop(instance_id) is not None:
            tally = self._tally
            if tally is not None:
                tally.note(tally.deregistered, service)
            else:
                log.info("deregistered instance %s/%s", service, instance_id)
            self.events.changes.record(kinds.DEREGISTER, service, instance_id)
            self.events.changed.emit(service, instance_id)

    def put_service(self, settings: ServiceSettings) -> None:
        svc = self._services.get(settings.name)
        if svc is None:
            svc = self._services[settings.name] = Service(settings)
        svc.settings = settings
        log.info("service %s settings: %s", settings.name, settings_data(settings))
        self.events.changes.record(kinds.SERVICE, settings.name, None, settings.to_json())
        self.events.changed.emit(settings.name, None)

    def drop_service(self, name: str) -> None:
        if self._services.pop(name, None) is not None:
            log.info("deleted service %s", name)
            self.events.changes.record(kinds.SERVICE_DELETED, name)
            self.events.changed.emit(name, None)

    def retain(self, instances: Container[tuple[str, str]], services: Container[str]) -> None:
        """Drop every instance not in ``instances``, then every service left empty that is not
        in ``services``; static ones stay. Each service changed is announced once."""
        touched: set[str] = set()
        for name, svc in list(self._services.items()):
            for iid, state in list(svc.instances.items()):
                if not state.instance.static and (name, iid) not in instances:
                    svc.drop(iid)
                    self.events.changes.record(kinds.DEREGISTER, name, iid)
                    touched.add(name)
            if not svc.static and not svc.instances and name not in services:
                del self._services[name]
                self.events.changes.record(kinds.SERVICE_DELETED, name)
                touched.add(name)
        for name in touched:
            self.events.changed.emit(name, None)

    def _service_or_new(self, name: str) -> Service:
        # Not setdefault: that would build default settings for every instance loaded.
        svc = self._services.get(name)
        if svc is None:
            svc = self._services[name] = Service(self.settings.for_service(name))
        return svc

    # -- static services ---------------------------------------------------------------------

    def add_static(self, settings: ServiceSettings, instances: Iterable[Instance]) -> None:
        """A service from a zone file: never stored, never changed over HTTP."""
        now = self.clock()
        svc = Service(settings, static=True)
        for inst in instances:
            svc.instances[inst.id] = InstanceState(inst, now, now, since=now)
        old = self._services.get(settings.name)
        if old is not None:
            for iid, state in old.instances.items():
                if not state.instance.static:  # registered before the zone file claimed it
                    svc.instances.setdefault(iid, state)
                elif iid in svc.instances and state.instance == svc.instances[iid].instance:
                    svc.instances[iid] = state  # unchanged by a reload: keep its health
        self._services[settings.name] = svc
        self.events.changes.record(kinds.SERVICE, settings.name, None, settings.to_json())
        self.events.changed.emit(settings.name, None)

    def replace_static(self, services: list[tuple[ServiceSettings, list[Instance]]]) -> None:
        """Make the zone files' services exactly ``services`` (a reload)."""
        wanted = {settings.name for settings, _ in services}
        for svc in [s for s in self._services.values() if s.static]:
            name = svc.settings.name
            if name not in wanted:
                kept = {i: st for i, st in svc.instances.items() if not st.instance.static}
                if kept:
                    svc.static = False
                    svc.keep(kept)
                else:
                    del self._services[name]
                self.events.changes.record(kinds.SERVICE if kept else kinds.SERVICE_DELETED, name)
                self.events.changed.emit(name, None)
        for settings, instances in services:
            old = self._services.get(settings.name)
            if (
                old is not None
                and old.static
                and old.settings == settings
                and {i: st.instance for i, st in old.instances.items() if st.instance.static}
                == {inst.id: inst for inst in instances}
            ):
                continue  # unchanged by the reload: nothing to rebuild
            self.add_static(settings, instances)

    # -- named queries -----------------------------------------------------------------------

    def stored_query(self, name: str, data: object) -> QueryDef | None:
        """A named query as a store holds it; None (logged, counted) when it does not validate.
        Fields this version does not know are dropped, as for services and instances."""
        try:
            return QueryDef.from_json(name, query_fields(data))
        except ValidationError as exc:
            self.skip("query", name, exc)
            return None

    def is_static_query(self, name: str) -> bool:
        return name in self._static_queries

    def put_query(self, query: QueryDef) -> bool:
        """Define or replace a query defined over the API (committed); True when new. While a
        static query of its name exists it is kept but not effective."""
        name = query.name
        new = name not in self._stored_queries
        self._stored_queries[name] = query
        shadowed = name in self._static_queries
        log.info(
            "query %s %s%s: %s",
            name,
            "defined" if new else "replaced",
            " (shadowed by the config's)" if shadowed else "",
            query.definition(),
        )
        self._settle_query(name, changed=not shadowed)
        return new

    def drop_query(self, name: str) -> None:
        if self._stored_queries.pop(name, None) is not None:
            log.info("deleted query %s", name)
            self._settle_query(name)

    def replace_static_queries(self, queries: Iterable[QueryDef]) -> None:
        """Make the config's queries exactly ``queries`` (at start and on a reload)."""
        old = self._static_queries
        self._static_queries = {q.name: q for q in queries}
        for name in dict.fromkeys([*old, *self._static_queries]):
            self._settle_query(name)

    def retain_queries(self, stored: Mapping[str, QueryDef]) -> None:
        """Hold exactly ``stored`` as the queries defined over the API (a shared store's
        resync); those unchanged are not announced."""
        old = dict(self._stored_queries)
        self._stored_queries.clear()
        self._stored_queries.update(stored)
        for name in dict.fromkeys([*old, *stored]):
            self._settle_query(name)

    def _settle_query(self, name: str, changed: bool = False) -> None:
        """Make ``name``'s effective query the static one, else the stored one, else none, and
        announce it when that differs from before (or ``changed``)."""
        now = self._static_queries.get(name) or self._stored_queries.get(name)
        before = self._queries.get(name)
        if now is None:
            self._queries.pop(name, None)
        else:
            self._queries[name] = now
        if changed or before != now:
            self.events.queries.emit(name)

    # -- health status -----------------------------------------------------------------------

    def set_status(self, service: str, instance_id: str, status: str, output: str) -> bool:
        """A check, lease or heartbeat verdict; True when the status changed."""
        state = self.find(service, instance_id)
        if state is None:
            return False  # deregistered while its check was running
        before = state.take_status(status, output, self.clock)
        if before is None:
            return False
        log.info("instance %s/%s is %s: %s", service, instance_id, status, output)
        self._status_changed(service, instance_id, before, state, kinds.HEALTH)
        return True

    def set_maintenance(self, service: str, instance_id: str, reason: str | None) -> None:
        """Take a registered instance out of the answers (reason given) or put it back (None)."""
        state = self._services[service].instances[instance_id]
        before = state.take_maintenance(reason)
        if before is None:
            return
        log.info(
            "instance %s/%s %s",
            service,
            instance_id,
            f"in maintenance: {reason}" if reason is not None else "out of maintenance",
        )
        self._status_changed(service, instance_id, before, state, kinds.MAINTENANCE)

    def take_verdict(self, service: str, instance_id: str, data: dict[str, Any]) -> None:
        """A verdict and maintenance state read from a shared store. It comes from outside this
        process: an invalid one is logged and skipped."""
        status, output, reason = data.get("status"), data.get("output", ""), data.get("maintenance")
        if status not in (PASSING, WARNING, CRITICAL) or not isinstance(output, str):
            self.skipped += 1
            log.warning("ignoring the stored status of %s/%s: %r", service, instance_id, data)
            return
        if reason is not None and not isinstance(reason, str):
            reason = "maintenance"
        self.set_status(service, instance_id, status, output)
        if self.find(service, instance_id) is not None:
            self.set_maintenance(service, instance_id, reason)

    def heartbeat(
        self, service: str, state: InstanceState, load: float | None, latency_ms: float | None
    ) -> None:
        """Renew the lease and take the reported figures (announced whenever reported)."""
        state.last_heartbeat = self.clock()
        if load is not None:
            state.load = load
        if latency_ms is not None:
            state.latency_ms = latency_ms
        if load is not None or latency_ms is not None:
            self._figures(service, state)

    def measured(self, service: str, state: InstanceState, latency_ms: float) -> None:
        """An active check's response time (announced when it changed)."""
        if latency_ms != state.latency_ms:
            state.latency_ms = latency_ms
            self._figures(service, state)

    def touch(self, service: str) -> None:
        """Have the listeners rebuild ``service`` although nothing in it changed."""
        if service in self._services:
            self.events.changed.emit(service, None)

    def _status_changed(
        self, service: str, instance_id: str, before: str, state: InstanceState, kind: str
    ) -> None:
        after = state.effective_status
        data = {"status": after, "output": state.output, "maintenance": state.maintenance}
        self.events.changes.record(kind, service, instance_id, data)
        self.events.status.emit(service, instance_id, before, after)
        self.events.changed.emit(service, instance_id)

    def _figures(self, service: str, state: InstanceState) -> None:
        self.events.figures.emit(service, state.instance.id, state.load, state.latency_ms)


def query_fields(data: object) -> object:
    """A query's definition read from a store without the fields this version does not know
    (at its top and in its failover steps)."""
    out = known_fields(data, QUERY_FIELDS)
    if isinstance(out, dict) and isinstance(out.get("failover"), list):
        out["failover"] = [known_fields(s, STEP_FIELDS) for s in out["failover"]]
    return out


def settings_data(settings: ServiceSettings) -> dict[str, object]:
    """A service's settings as the store keeps them (the name is the key)."""
    data = settings.to_json()
    del data["name"]
    return data
