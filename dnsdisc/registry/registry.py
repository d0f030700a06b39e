"""The in-memory registry: the only writer of service state.

Every change goes to the store first and into memory only after the store has committed it; then
the listeners (the DNS answer index) are told which service changed, synchronously, so by the
time an HTTP handler returns its 2xx the DNS face already answers from the new state.

With a shared store (etcd) memory changes only through ``apply_change``/``resync``, which the
store calls in its revision order for this node's writes and every other node's alike; its
``commit`` returns after that, so the rule above still holds. Health verdicts and maintenance
are then published through the store too, so every node hands out the same instances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from dnsdisc.errors import ConflictError, NotFoundError, StoreError, ValidationError
from dnsdisc.registry.model import (
    CRITICAL,
    MAINTENANCE,
    PASSING,
    WARNING,
    HeartbeatReport,
    Instance,
    ServiceSettings,
)
from dnsdisc.registry.settings import NS_HOST, RegistrySettings
from dnsdisc.store.base import MemoryStore, Op, SharedStore, Snapshot, Store

Listener = Callable[[str], None]
# (service, instance id, old effective status, new effective status)
StatusListener = Callable[[str, str, str, str], None]
# (service, instance id, load, latency in ms): reported figures changed, nothing else did
FiguresListener = Callable[[str, str, float | None, float | None], None]

log = logging.getLogger(__name__)

# Status changes kept per instance for people (InstanceState.history).
HISTORY_LEN = 20
# Services announced to the listeners between two turns of the event loop while loading.
LOAD_BATCH = 64


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
    # Made at the first change (most instances never change: an empty deque is 600 bytes).
    changes: deque[float] | tuple[float, ...] = ()
    recovered_at: float | None = None
    # How often the DNS answers handed this instance out first in its service's balanced A/AAAA
    # answers (counted by the answer index), and the latest effective status changes as
    # (wall time ISO 8601, status), for people (the dashboard).
    answers: int = 0
    history: deque[tuple[str, str]] | tuple[tuple[str, str], ...] = ()

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


class Registry:
    def __init__(
        self,
        store: Store | None = None,
        *,
        defaults: ServiceSettings | None = None,
        configured: dict[str, ServiceSettings] | None = None,
        reserved: Mapping[str, str] | Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store: Store = store or MemoryStore()
        # Replaced whole on reload, never changed in place.
        self.settings = RegistrySettings(
            defaults or ServiceSettings("default"),
            configured or {},
            reserved if isinstance(reserved, Mapping) else dict.fromkeys(reserved, NS_HOST),
        )
        self.clock = clock
        self._services: dict[str, Service] = {}
        self._listeners: list[Listener] = []
        self._status_listeners: list[StatusListener] = []
        self._figures_listeners: list[FiguresListener] = []
        # Awaited after every change a client asked for, before it is acknowledged: the DNS
        # worker processes confirm that they answer from the new state (read-your-writes).
        self.settle: Callable[[], Awaitable[None]] | None = None
        # Acknowledged writes by kind (put_instance, del_instance, ...), for the metrics.
        self.writes: Counter[str] = Counter()
        # Verdicts on their way to a shared store (kept so the tasks are not collected early).
        self._publishing: set[asyncio.Task[None]] = set()

    @property
    def defaults(self) -> ServiceSettings:
        return self.settings.defaults

    @property
    def configured(self) -> Mapping[str, ServiceSettings]:
        return self.settings.configured

    @property
    def reserved(self) -> Mapping[str, str]:
        return self.settings.reserved

    @property
    def shared(self) -> bool:
        """True when other nodes write the same store (etcd)."""
        return bool(getattr(self.store, "shared", False))

    # -- reading -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Service]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    def get(self, name: str) -> Service | None:
        return self._services.get(name)

    def service(self, name: str) -> Service:
        svc = self._services.get(name)
        if svc is None:
            raise NotFoundError(f"service {name!r} is not registered", "service")
        return svc

    def instance(self, service: str, instance_id: str) -> InstanceState:
        state = self.service(service).instances.get(instance_id)
        if state is None:
            raise NotFoundError(f"instance {instance_id!r} of {service!r} is not registered", "id")
        return state

    def settings_for(self, name: str) -> ServiceSettings:
        """What a service gets when nobody set its settings through the API."""
        return self.configured.get(name) or self.defaults.with_name(name)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_status(self, listener: StatusListener) -> None:
        self._status_listeners.append(listener)

    def on_figures(self, listener: FiguresListener) -> None:
        self._figures_listeners.append(listener)

    async def settled(self) -> None:
        """Return once every reader of the registry (the DNS workers) has seen every change
        made so far."""
        if self.settle is not None:
            await self.settle()

    # -- start-up ----------------------------------------------------------------------------

    async def load(self) -> None:
        """Fill memory from the store, then create the services the config names."""
        snap = await self.store.open()
        now = self.clock()
        try:
            for name, data in snap.services.items():
                settings = ServiceSettings.from_json(name, data, self.settings_for(name))
                self._services[name] = Service(settings)
        except ValidationError as exc:
            raise StoreError(
                f"stored settings of service {name!r} are invalid: {exc.message}"
            ) from None
        for (service, iid), data in snap.instances.items():
            try:
                inst = Instance.from_json(service, iid, data)
            except ValidationError as exc:
                raise StoreError(
                    f"stored instance {service}/{iid} is invalid ({exc.field}): {exc.message}"
                ) from None
            svc = self._service_or_new(service)
            # After a restart each lease starts afresh and checks start from passing: the
            # restart must not expire or hide anything; the checks resume at once.
            svc.instances[iid] = InstanceState(inst, now, now, since=now)
        for (service, iid), data in snap.statuses.items():
            self._apply_status(service, iid, data)
        for name, settings in self.configured.items():
            self._services.setdefault(name, Service(settings))
        for n, name in enumerate(list(self._services), 1):
            self._notify(name)
            if n % LOAD_BATCH == 0:
                # Let the loop run: with DNS workers, the feed carrying these services flows
                # to them meanwhile, so they build while this process goes on loading.
                await asyncio.sleep(0)
        if self.shared:
            cast(SharedStore, self.store).follow(self)

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
        self._notify(settings.name)

    def replace_static(self, services: list[tuple[ServiceSettings, list[Instance]]]) -> None:
        """Make the zone files' services exactly ``services`` (a reload)."""
        wanted = {settings.name for settings, _ in services}
        for svc in [s for s in self._services.values() if s.static]:
            name = svc.settings.name
            if name not in wanted:
                kept = {i: st for i, st in svc.instances.items() if not st.instance.static}
                if kept:
                    svc.static = False
                    svc.instances = kept
                else:
                    del self._services[name]
                self._notify(name)
        for settings, instances in services:
            self.add_static(settings, instances)

    # -- writing -----------------------------------------------------------------------------

    async def put_instance(self, inst: Instance) -> bool:
        """Register or replace; True when the instance is new."""
        self._check_writable(inst.service)
        svc = self._services.get(inst.service)
        old = svc.instances.get(inst.id) if svc else None
        if old is not None and old.instance.static:
            raise ConflictError(
                f"instance {inst.id!r} of {inst.service!r} is defined in a zone file", "id"
            )
        ops = [Op("put_instance", inst.service, inst.id, inst.definition())]
        if svc is None:
            # Only if it still does not exist when committed: a concurrent PUT of the service's
            # settings must not be overwritten by these defaults.
            ops.insert(
                0, Op("ensure_service", inst.service, data=self._stored_settings(inst.service))
            )
        created = old is None

        def apply() -> None:
            nonlocal created
            created = self._apply_instance(inst)

        await self._write(ops, apply)
        return created

    def _service_or_new(self, name: str) -> Service:
        # Not setdefault: that would build default settings for every instance loaded.
        svc = self._services.get(name)
        if svc is None:
            svc = self._services[name] = Service(self.settings_for(name))
        return svc

    def _apply_instance(self, inst: Instance) -> bool:
        """Put ``inst`` in memory, keeping what was learnt about its health; True when new."""
        svc = self._service_or_new(inst.service)
        now = self.clock()
        prev = svc.instances.get(inst.id)
        created = prev is None
        state = InstanceState(inst, prev.registered_at if prev else now, now, since=now)
        if prev is not None:
            state.carry_health(prev)
        elif inst.check is not None:
            # Not handed out before its check has passed once: it may not be listening yet.
            state.status, state.output = CRITICAL, "awaiting the first check"
        svc.instances[inst.id] = state
        log.info(
            "%s instance %s/%s at %s port %d",
            "registered" if created else "replaced",
            inst.service,
            inst.id,
            inst.address,
            inst.port,
        )
        self._notify(inst.service)
        return created

    async def delete_instance(self, service: str, instance_id: str) -> None:
        state = self.instance(service, instance_id)
        if state.instance.static:
            raise ConflictError(
                f"instance {instance_id!r} of {service!r} is defined in a zone file", "id"
            )

        def apply() -> None:
            svc = self._services.get(service)
            if svc is not None and svc.instances.pop(instance_id, None) is not None:
                log.info("deregistered instance %s/%s", service, instance_id)
                self._notify(service)

        await self._write([Op("del_instance", service, instance_id)], apply)

    async def renew(self, service: str, instance_id: str) -> None:
        """A heartbeat's part in a shared store: refresh the instance's lease there (etcd
        deletes the instance on every node when nobody renews it)."""
        self.instance(service, instance_id)
        if self.shared:
            await cast(SharedStore, self.store).renew(service, instance_id)

    def heartbeat(
        self, service: str, instance_id: str, report: HeartbeatReport | None = None
    ) -> InstanceState:
        """Renew a lease and take the reported figures. Memory only: leases restart with a full
        TTL after a restart anyway. Load and latency reach the policies without a rebuild (the
        answer index reads them from this object); a status change rebuilds the service."""
        state = self.instance(service, instance_id)
        state.last_heartbeat = self.clock()
        report = report or HeartbeatReport()
        if report.load is not None:
            state.load = report.load
        if report.latency_ms is not None:
            state.latency_ms = report.latency_ms
        if report.load is not None or report.latency_ms is not None:
            self._figures(service, state)
        status = report.status
        if status is None and state.instance.ttl is not None and state.instance.check is None:
            status = PASSING  # a leased instance that heartbeats is alive
        if status is not None:
            self.set_status(service, instance_id, status, "heartbeat")
        return state

    def set_status(self, service: str, instance_id: str, status: str, output: str) -> bool:
        """Record a check, lease or heartbeat verdict; True when the status changed. With a
        shared store the verdict is published, and memory changes when it comes back (on every
        node at once, in order)."""
        if not self.shared:
            return self._set_status(service, instance_id, status, output)
        svc = self._services.get(service)
        state = svc.instances.get(instance_id) if svc else None
        if state is None:
            return False
        if status == state.status:
            state.output = output
            return False
        self._publish(
            service,
            instance_id,
            {"status": status, "output": output, "maintenance": state.maintenance},
        )
        return True

    def _publish(self, service: str, instance_id: str, data: dict[str, Any]) -> None:
        async def put() -> None:
            try:
                await cast(SharedStore, self.store).put_status(service, instance_id, data)
            except StoreError as exc:
                log.warning("could not publish the status of %s/%s: %s", service, instance_id, exc)

        task = asyncio.get_running_loop().create_task(put())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    def _set_status(self, service: str, instance_id: str, status: str, output: str) -> bool:
        svc = self._services.get(service)
        state = svc.instances.get(instance_id) if svc else None
        if state is None:
            return False  # deregistered while its check was running
        state.output = output
        if status == state.status:
            return False
        before = state.effective_status
        now = self.clock()
        if state.status == CRITICAL:
            state.recovered_at = now
        wall = time.time()
        state.status, state.since, state.wall_since = status, now, wall
        if not isinstance(state.changes, deque):
            state.changes = deque(maxlen=32)
        state.changes.append(now)
        if state.effective_status != before:
            state.record(wall)
        log.info("instance %s/%s is %s: %s", service, instance_id, status, output)
        self._status_changed(service, instance_id, before, state.effective_status)
        return True

    def check_result(
        self,
        service: str,
        instance_id: str,
        status: str | None,
        output: str,
        latency_ms: float | None,
    ) -> bool:
        """Record an active check's outcome (status None: not yet enough to change the status).
        False when the instance no longer exists."""
        svc = self._services.get(service)
        state = svc.instances.get(instance_id) if svc else None
        if state is None:
            return False
        if latency_ms is not None and latency_ms != state.latency_ms:
            state.latency_ms = latency_ms
            self._figures(service, state)
        if status is None:
            state.output = output
        else:
            self.set_status(service, instance_id, status, output)
        return True

    def set_maintenance(self, service: str, instance_id: str, reason: str | None) -> InstanceState:
        """Take an instance out of the answers (reason given) or put it back (None)."""
        state = self.instance(service, instance_id)
        if state.maintenance == reason:
            return state
        before = state.effective_status
        state.maintenance = reason
        if state.effective_status != before:
            state.record(time.time())
        log.info(
            "instance %s/%s %s",
            service,
            instance_id,
            f"in maintenance: {reason}" if reason is not None else "out of maintenance",
        )
        self._status_changed(service, instance_id, before, state.effective_status)
        return state

    async def maintenance(
        self, service: str, instance_id: str, reason: str | None
    ) -> InstanceState:
        """``set_maintenance`` for the HTTP API: with a shared store it is a write (every node
        takes the instance out), acknowledged once this node's memory has it."""
        state = self.instance(service, instance_id)
        if not self.shared:
            return self.set_maintenance(service, instance_id, reason)
        if state.maintenance != reason:
            data = {"status": state.status, "output": state.output, "maintenance": reason}
            await cast(SharedStore, self.store).put_status(service, instance_id, data)
            self.writes["maintenance"] += 1
        return self.instance(service, instance_id)

    def _status_changed(self, service: str, instance_id: str, before: str, after: str) -> None:
        for listener in self._status_listeners:
            listener(service, instance_id, before, after)
        self._notify(service)

    def touch(self, service: str) -> None:
        """Have the listeners rebuild a service whose hand-out depends on time (slow start,
        flap damping) although nothing was written."""
        if service in self._services:
            self._notify(service)

    async def put_service(self, settings: ServiceSettings) -> bool:
        """Create a service or replace its settings; True when it is new."""
        self._check_writable(settings.name)
        svc = self._services.get(settings.name)
        if svc is not None and svc.static:
            raise ConflictError(f"service {settings.name!r} is defined in a zone file", "service")
        created = svc is None

        def apply() -> None:
            self._apply_service(settings)

        await self._write([Op("put_service", settings.name, data=_settings_data(settings))], apply)
        return created

    def _apply_service(self, settings: ServiceSettings) -> None:
        svc = self._services.get(settings.name)
        if svc is None:
            svc = self._services[settings.name] = Service(settings)
        svc.settings = settings
        log.info("service %s settings: %s", settings.name, _settings_data(settings))
        self._notify(settings.name)

    async def delete_service(self, name: str) -> None:
        svc = self.service(name)
        if svc.static:
            raise ConflictError(f"service {name!r} is defined in a zone file", "service")

        def apply() -> None:
            if self._services.pop(name, None) is not None:
                log.info("deleted service %s", name)
                self._notify(name)

        await self._write([Op("del_service", name)], apply)

    async def close(self) -> None:
        for task in list(self._publishing):
            task.cancel()  # a verdict not yet published: the next checker will publish its own
        await asyncio.gather(*self._publishing, return_exceptions=True)
        await self.store.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_writable(self, service: str) -> None:
        why = self.reserved.get(service)
        if why is not None:
            raise ConflictError(f"service name {service!r} is reserved: {why}", "service")
        svc = self._services.get(service)
        if svc is not None and svc.static:
            raise ConflictError(f"service {service!r} is defined in a zone file", "service")

    def _stored_settings(self, name: str) -> dict[str, object]:
        return _settings_data(self.settings_for(name))

    async def _write(self, ops: list[Op], apply: Callable[[], None]) -> None:
        # Shielded: once a change is on its way to the store, a client hanging up must not leave
        # the store and memory disagreeing, so commit and apply finish together or not at all.
        async def commit_then_apply() -> None:
            await self.store.commit(ops)  # one transaction: all of a write or none of it
            if not self.shared:  # a shared store has applied it through apply_change already
                apply()
            self.writes[ops[-1].kind] += 1
            await self.settled()

        await asyncio.shield(commit_then_apply())

    def _figures(self, service: str, state: InstanceState) -> None:
        for listener in self._figures_listeners:
            listener(service, state.instance.id, state.load, state.latency_ms)

    # -- changes from a shared store ---------------------------------------------------------

    def apply_change(self, op: Op) -> None:
        """One change from the shared store (made by this node or another), in store order.
        Values come from outside this process: an invalid one is logged and skipped."""
        try:
            if op.kind == "put_instance":
                inst = Instance.from_json(op.service, op.instance, op.data)
                svc = self._services.get(op.service)
                prev = svc.instances.get(op.instance) if svc else None
                if prev is not None and prev.instance.static:
                    return  # a zone file owns this name on this node
                self._apply_instance(inst)
            elif op.kind == "del_instance":
                svc = self._services.get(op.service)
                state = svc.instances.get(op.instance) if svc else None
                if svc is not None and state is not None and not state.instance.static:
                    del svc.instances[op.instance]
                    log.info("deregistered instance %s/%s", op.service, op.instance)
                    self._notify(op.service)
            elif op.kind in ("put_service", "ensure_service"):
                svc = self._services.get(op.service)
                if svc is not None and (svc.static or op.kind == "ensure_service"):
                    return
                base = self.settings_for(op.service)
                self._apply_service(ServiceSettings.from_json(op.service, op.data or {}, base))
            elif op.kind == "del_service":
                svc = self._services.get(op.service)
                if svc is not None and not svc.static:
                    del self._services[op.service]
                    log.info("deleted service %s", op.service)
                    self._notify(op.service)
            elif op.kind == "put_status":
                self._apply_status(op.service, op.instance, op.data or {})
        except ValidationError as exc:
            log.warning(
                "ignoring stored %s %s/%s: %s: %s",
                op.kind,
                op.service,
                op.instance,
                exc.field,
                exc.message,
            )

    def _apply_status(self, service: str, instance_id: str, data: dict[str, Any]) -> None:
        status, output, reason = data.get("status"), data.get("output", ""), data.get("maintenance")
        if status not in (PASSING, WARNING, CRITICAL) or not isinstance(output, str):
            log.warning("ignoring the stored status of %s/%s: %r", service, instance_id, data)
            return
        if reason is not None and not isinstance(reason, str):
            reason = "maintenance"
        self._set_status(service, instance_id, status, output)
        svc = self._services.get(service)
        if svc is not None and instance_id in svc.instances:
            self.set_maintenance(service, instance_id, reason)

    def resync(self, snap: Snapshot) -> None:
        """Make memory what a freshly loaded store holds (after the watch lost its place):
        drop what is gone, apply what is new or changed, keep what is the same (and its
        health). Static and configured services stay."""
        touched: set[str] = set()
        with_instances = {service for service, _ in snap.instances}
        for name, svc in list(self._services.items()):
            for iid, state in list(svc.instances.items()):
                if not state.instance.static and (name, iid) not in snap.instances:
                    del svc.instances[iid]
                    touched.add(name)
            if (
                not svc.static
                and name not in snap.services
                and name not in self.configured
                and not svc.instances
                and name not in with_instances
            ):
                del self._services[name]
                touched.add(name)
        for name in touched:
            self._notify(name)
        for name, data in snap.services.items():
            current = self._services.get(name)
            try:
                settings = ServiceSettings.from_json(name, data, self.settings_for(name))
            except ValidationError:
                continue
            if current is None or (not current.static and current.settings != settings):
                self._apply_service(settings)
        for (service, iid), data in snap.instances.items():
            owner = self._services.get(service)
            known = owner.instances.get(iid) if owner else None
            try:
                inst = Instance.from_json(service, iid, data)
            except ValidationError:
                continue
            if known is None or known.instance != inst:
                self.apply_change(Op("put_instance", service, iid, data))
        for (service, iid), data in snap.statuses.items():
            self._apply_status(service, iid, data)
        log.info("resynchronised with the store: %d services", len(self._services))

    def _notify(self, service: str) -> None:
        for listener in self._listeners:
            listener(service)


def _settings_data(settings: ServiceSettings) -> dict[str, object]:
    data = settings.to_json()
    del data["name"]
    return data
