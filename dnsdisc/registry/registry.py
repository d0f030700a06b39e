"""The Registry: what the rest of the program reads services from and writes them through.

Every change a client asks for goes to the store first and into memory only after the store
has committed it; the listeners (the DNS answer index) are told which service changed
synchronously, and the barrier is awaited, so by the time an HTTP handler returns its 2xx the
DNS face already answers from the new state. With a shared store memory changes only through
the store's follower (``replication``), which the store's ``commit`` waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from functools import partial
from typing import cast

from dnsdisc.errors import ConflictError, DnsdiscError, NotFoundError
from dnsdisc.registry.batch import BatchError, BatchOp, Overlay
from dnsdisc.registry.events import Events
from dnsdisc.registry.limits import (
    Limits,
    check_instance,
    check_meta,
    check_new_query,
    check_new_service,
)
from dnsdisc.registry.model import PASSING, HeartbeatReport, Instance, ServiceSettings
from dnsdisc.registry.queries import QueryDef
from dnsdisc.registry.replication import Follower, Publisher
from dnsdisc.registry.settings import NS_HOST, RegistrySettings
from dnsdisc.registry.state import CheckState, InstanceState, Memory, Service, settings_data
from dnsdisc.store.base import MemoryStore, Op, SharedStore, Store

# Services announced to the listeners between two turns of the event loop while loading.
LOAD_BATCH = 64

log = logging.getLogger(__name__)


class Registry:
    """Reads, writes through the store, static services and health verdicts: the one way in."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        defaults: ServiceSettings | None = None,
        configured: dict[str, ServiceSettings] | None = None,
        reserved: Mapping[str, str] | Iterable[str] = (),
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store: Store = store or MemoryStore()
        self.clock = clock
        self.events = Events()
        settings = RegistrySettings(
            defaults or ServiceSettings("default"),
            configured or {},
            reserved if isinstance(reserved, Mapping) else dict.fromkeys(reserved, NS_HOST),
            limits or Limits(),
        )
        self.memory = Memory(settings, self.events, clock)
        # Set when other nodes write the same store: verdicts go there, not into memory.
        self._publisher = Publisher(cast(SharedStore, self.store)) if self.shared else None
        self._barrier: Callable[[], Awaitable[None]] | None = None
        # Acknowledged writes by kind (put_instance, del_instance, ...), for the metrics.
        self.writes: Counter[str] = Counter()
        self._background: set[asyncio.Task[None]] = set()  # the index's reservations

    @property
    def settings(self) -> RegistrySettings:
        """What the config says; replaced whole on reload, never changed in place."""
        return self.memory.settings

    @settings.setter
    def settings(self, settings: RegistrySettings) -> None:
        self.memory.settings = settings

    @property
    def skipped_keys(self) -> int:
        """Stored keys ignored because they do not validate, at load or since."""
        return self.memory.skipped + int(getattr(self.store, "skipped", 0))

    @property
    def shared(self) -> bool:
        """True when other nodes write the same store (etcd)."""
        return bool(getattr(self.store, "shared", False))

    def set_barrier(self, barrier: Callable[[], Awaitable[None]]) -> None:
        """Have every change a client asked for wait for ``barrier`` before it is acknowledged:
        it returns once every other reader (the DNS worker processes) answers from the new
        state (read-your-writes)."""
        self._barrier = barrier

    async def settled(self) -> None:
        """Return once every reader of the registry has seen every change made so far."""
        if self._barrier is not None:
            await self._barrier()

    # -- reading -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Service]:
        return iter(self.memory)

    def __len__(self) -> int:
        return len(self.memory)

    def get(self, name: str) -> Service | None:
        return self.memory.get(name)

    def service(self, name: str) -> Service:
        svc = self.memory.get(name)
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
        return self.settings.for_service(name)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(service)`` after every change to a service (or its removal)."""
        self.events.changed.add(lambda service, _: listener(service))

    def subscribe_changes(self, listener: Callable[[str, str | None], None]) -> None:
        """Call ``listener(service, instance id)`` after every change to a service (or its
        removal); the id names the only instance that changed (or went), None: not just one."""
        self.events.changed.add(listener)

    def on_status(self, listener: Callable[[str, str, str, str], None]) -> None:
        """Call ``listener(service, instance id, old, new)`` on effective status changes."""
        self.events.status.add(listener)

    def on_figures(self, listener: Callable[[str, str, float | None, float | None], None]) -> None:
        """Call ``listener(service, instance id, load, latency ms)`` when figures are reported."""
        self.events.figures.add(listener)

    # -- start-up and static services --------------------------------------------------------

    async def load(self) -> None:
        """Fill memory from the store, then create the services the config names."""
        snap = await self.store.open()
        changes = self.events.changes
        changes.start(snap.index)
        if not self.shared:
            # The high-water mark a block ahead (see registry/changes.py); a failed write is
            # logged, and tried again with the next block.
            changes.reserve = lambda upto: self._keep(
                self.store.commit([Op("put_index", "", data={"index": upto})])
            )
        # Verdicts loaded from a shared store count at its revision, as on every node.
        changes.revision = snap.index if self.shared else 0
        try:
            self.memory.load(snap)
        finally:
            changes.revision = 0
        for n, name in enumerate(self.memory.names(), 1):
            self.events.changed.emit(name, None)
            if n % LOAD_BATCH == 0:
                # Let the loop run: with DNS workers, the feed carrying these services flows
                # to them meanwhile, so they build while this process goes on loading.
                await asyncio.sleep(0)
        if self.shared:
            cast(SharedStore, self.store).follow(Follower(self.memory))

    def _keep(self, write: Awaitable[None]) -> None:
        """Run ``write`` in the background (a reservation of change indexes)."""

        async def run() -> None:
            try:
                await write
            except Exception:
                log.warning("could not keep the change index's high-water mark", exc_info=True)
                self.events.changes.reserved = self.events.changes.index  # again next change

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def add_static(self, settings: ServiceSettings, instances: Iterable[Instance]) -> None:
        """A service from a zone file: never stored, never changed over HTTP."""
        self.memory.add_static(settings, instances)

    def replace_static(self, services: list[tuple[ServiceSettings, list[Instance]]]) -> None:
        """Make the zone files' services exactly ``services`` (a reload)."""
        self.memory.replace_static(services)

    # -- registrations -----------------------------------------------------------------------

    async def put_instance(self, inst: Instance, start: tuple[str, str] | None = None) -> bool:
        """Register or replace; True when the instance is new. ``start``: the status (and its
        output) a new instance starts in, e.g. critical for a Consul TTL check before its first
        pass; with a shared store it follows as a verdict, so other nodes may see the instance
        passing for the moment in between."""
        svc = self.memory.get(inst.service)
        old = self._check_registration(
            inst, svc is None, len(self.memory), lambda: sum(len(s.instances) for s in self.memory)
        )
        ops = [Op("put_instance", inst.service, inst.id, inst.definition())]
        if svc is None:
            # Only if it still does not exist when committed: a concurrent PUT of the service's
            # settings must not be overwritten by these defaults.
            defaults = settings_data(self.settings_for(inst.service))
            ops.insert(0, Op("ensure_service", inst.service, data=defaults))
        created = old is None

        def apply() -> None:
            nonlocal created
            created = self.memory.put_instance(inst, start)

        await self._write(ops, apply)
        if self.shared and created and start is not None:
            self.set_status(inst.service, inst.id, *start)
        return created

    async def delete_instance(self, service: str, instance_id: str) -> None:
        state = self.instance(service, instance_id)
        if state.instance.static:
            raise ConflictError(
                f"instance {instance_id!r} of {service!r} is defined in a zone file", "id"
            )
        await self._write(
            [Op("del_instance", service, instance_id)],
            lambda: self.memory.drop_instance(service, instance_id),
        )

    async def put_service(self, settings: ServiceSettings) -> bool:
        """Create a service or replace its settings; True when it is new."""
        self._check_writable(settings.name)
        created = self.memory.get(settings.name) is None
        check_meta(self.settings.limits, settings.meta, f"service {settings.name!r}")
        if created:
            check_new_service(self.settings.limits, len(self.memory))
        await self._write(
            [Op("put_service", settings.name, data=settings_data(settings))],
            lambda: self.memory.put_service(settings),
        )
        return created

    async def delete_service(self, name: str) -> None:
        if self.service(name).static:
            raise ConflictError(f"service {name!r} is defined in a zone file", "service")
        await self._write([Op("del_service", name)], lambda: self.memory.drop_service(name))

    async def apply_batch(self, ops: list[BatchOp]) -> list[int]:
        """Apply a batch (see registry/batch.py) all or nothing: every operation is checked
        against memory as the operations before it leave it, then one commit carries them all.
        The status each would have had alone (201, 200, 204). With a shared store, maintenance
        is published after the commit (it is a health verdict there, not a stored key)."""
        store_ops: list[Op] = []
        applies: list[Callable[[], object]] = []
        results: list[int] = []
        later: list[BatchOp] = []
        seen = Overlay(self.memory)
        for position, op in enumerate(ops):
            try:
                results.append(self._batch_op(op, seen, store_ops, applies, later))
            except DnsdiscError as exc:
                raise BatchError(position, exc) from None

        def apply() -> None:
            # One log line for the batch's registrations, not one each: a bulk load of
            # 10,000 instances would otherwise spend more on formatting log lines than on
            # everything else it does.
            with self.memory.quiet() as tally:
                for each in applies:
                    each()
            if tally:
                log.info("batch of %d operations: %s", len(ops), tally.summary())

        if store_ops:
            await self._write(store_ops, apply)
        else:
            apply()
        for op in later:
            await self.maintenance(op.service, op.instance or "", op.maintenance)
        return results

    def _batch_op(
        self,
        op: BatchOp,
        seen: Overlay,
        store_ops: list[Op],
        applies: list[Callable[[], object]],
        later: list[BatchOp],
    ) -> int:
        svc = self.memory.get(op.service)
        if op.kind == "register":
            inst = op.registration
            assert inst is not None
            new_service = not seen.has_service(inst.service)
            self._check_registration(inst, new_service, seen.services, seen.total, seen)
            if new_service:
                defaults = settings_data(self.settings_for(inst.service))
                store_ops.append(Op("ensure_service", inst.service, data=defaults))
                seen.add_service(inst.service)
            store_ops.append(Op("put_instance", inst.service, inst.id, inst.definition()))
            applies.append(partial(self.memory.put_instance, inst))
            return 201 if seen.put(inst) else 200
        if op.kind == "service":
            settings = op.settings
            assert settings is not None
            self._check_writable(settings.name)
            check_meta(self.settings.limits, settings.meta, f"service {settings.name!r}")
            created = not seen.has_service(settings.name)
            if created:
                check_new_service(self.settings.limits, seen.services)
                seen.add_service(settings.name)
            store_ops.append(Op("put_service", settings.name, data=settings_data(settings)))
            applies.append(lambda: self.memory.put_service(settings))
            return 201 if created else 200
        iid = op.instance or ""
        if not seen.has(op.service, iid):
            raise NotFoundError(f"no instance {iid!r} of service {op.service!r}", "id")
        if op.kind == "deregister":
            if svc is not None and iid in svc.instances and svc.instances[iid].instance.static:
                raise ConflictError(f"instance {iid!r} is defined in a zone file", "id")
            store_ops.append(Op("del_instance", op.service, iid))
            applies.append(lambda: self.memory.drop_instance(op.service, iid))
            seen.drop(op.service, iid)
            return 204
        if self.shared:
            later.append(op)
        else:
            applies.append(lambda: self.memory.set_maintenance(op.service, iid, op.maintenance))
        return 200

    def _check_registration(
        self,
        inst: Instance,
        new_service: bool,
        services: int,
        instances: Callable[[], int],
        batch: Overlay | None = None,
    ) -> InstanceState | None:
        """What registering ``inst`` must pass: a writable service, not a zone file's
        instance, the limits (``services``, ``instances``: the counts it would join; the
        service's own counts as memory holds them, or as ``batch`` so far leaves them). The
        instance in memory it replaces, if any."""
        self._check_writable(inst.service)
        svc = self.memory.get(inst.service)
        old = svc.instances.get(inst.id) if svc else None
        if old is not None and old.instance.static:
            raise ConflictError(
                f"instance {inst.id!r} of {inst.service!r} is defined in a zone file", "id"
            )
        limits = self.settings.limits
        if new_service:
            check_new_service(limits, services)
        if batch is not None:
            tags, held = batch.tag_counts(inst.service), batch.held(inst.service)
            replaced = batch.current(inst.service, inst.id)
        else:
            tags, held = (svc.tag_counts() if svc else Counter()), len(svc.instances) if svc else 0
            replaced = old.instance if old is not None else None
        check_instance(limits, inst, tags, held, replaced, instances)
        return old

    def _check_writable(self, service: str) -> None:
        why = self.settings.reserved.get(service)
        if why is not None:
            raise ConflictError(f"service name {service!r} is reserved: {why}", "service")
        svc = self.memory.get(service)
        if svc is not None and svc.static:
            raise ConflictError(f"service {service!r} is defined in a zone file", "service")

    async def _write(self, ops: list[Op], apply: Callable[[], None]) -> None:
        # Shielded: once a change is on its way to the store, a client hanging up must not leave
        # the store and memory disagreeing, so commit and apply finish together or not at all.
        async def commit_then_apply() -> None:
            await self.store.commit(ops)  # one transaction: all of a write or none of it
            if not self.shared:  # a shared store has applied it through the follower already
                apply()
            self.writes[ops[-1].kind] += 1
            await self.settled()

        await asyncio.shield(commit_then_apply())

    # -- named queries -----------------------------------------------------------------------

    @property
    def queries(self) -> Mapping[str, QueryDef]:
        """Every named query in effect, by name: those defined over the API and the config's
        (static) ones; a static one hides an API-defined one of its name. A live read-only
        view: copy it to keep it."""
        return self.memory.queries

    def query(self, name: str) -> QueryDef:
        query = self.memory.queries.get(name.lower())
        if query is None:
            raise NotFoundError(f"query {name!r} is not defined", "name")
        return query

    def subscribe_queries(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` after every change to a named query's effective definition
        (defined, replaced, deleted, a static one added or removed on reload, or a change from
        another node on a shared store), once memory has it."""
        self.events.queries.add(listener)

    async def put_query(self, query: QueryDef) -> bool:
        """Define or replace a named query (stored before it takes effect); True when new.
        A query the config defines is read-only: 409."""
        name = query.name
        if self.memory.is_static_query(name):
            raise ConflictError(f"query {name!r} is defined in the config file", "name")
        if query.static:
            query = replace(query, static=False)
        created = name not in self.memory.stored_queries
        if created:
            check_new_query(len(self.memory.stored_queries))
        stored = query

        def apply() -> None:
            nonlocal created
            created = self.memory.put_query(stored)

        await self._write([Op("put_query", name, data=query.definition())], apply)
        return created

    async def delete_query(self, name: str) -> None:
        name = name.lower()
        if self.memory.is_static_query(name):
            raise ConflictError(f"query {name!r} is defined in the config file", "name")
        if name not in self.memory.stored_queries:
            raise NotFoundError(f"query {name!r} is not defined", "name")
        await self._write([Op("del_query", name)], lambda: self.memory.drop_query(name))

    def replace_static_queries(self, queries: Iterable[QueryDef]) -> None:
        """Make the config's queries exactly ``queries`` (at start and on every reload): memory
        only, never stored. A static query hides an API-defined one of its name while it
        exists; the listeners are told of each name whose effective query changed."""
        self.memory.replace_static_queries(
            q if q.static else replace(q, static=True) for q in queries
        )

    # -- health status -----------------------------------------------------------------------

    async def renew(self, service: str, instance_id: str) -> None:
        """A heartbeat's part in a shared store: refresh the instance's lease there (etcd
        deletes the instance on every node when nobody renews it)."""
        self.instance(service, instance_id)
        if self._publisher is not None:
            await self._publisher.renew(service, instance_id)

    def heartbeat(
        self, service: str, instance_id: str, report: HeartbeatReport | None = None
    ) -> InstanceState:
        """Renew a lease and take the reported figures. Memory only: leases restart with a full
        TTL after a restart anyway. Load and latency reach the policies without a rebuild (the
        answer index reads them from this object); a status change rebuilds the service."""
        state = self.instance(service, instance_id)
        report = report or HeartbeatReport()
        self.memory.heartbeat(service, state, report.load, report.latency_ms)
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
        if self._publisher is None:
            return self.memory.set_status(service, instance_id, status, output)
        state = self.memory.find(service, instance_id)
        return self._publisher.verdict(service, instance_id, state, status, output)

    def check_result(
        self,
        service: str,
        instance_id: str,
        status: str | None,
        output: str,
        latency_ms: float | None,
        detail: tuple[str, CheckState] | None = None,
    ) -> bool:
        """Record an active check's outcome (status None: not yet enough to change the status;
        with several checks, the worst of them); ``detail``: the check's id and its own latest
        run, shown to people. False when the instance no longer exists."""
        state = self.memory.find(service, instance_id)
        if state is None:
            return False
        if detail is not None:
            state.check_states[detail[0]] = detail[1]
        if latency_ms is not None:
            self.memory.measured(service, state, latency_ms)
        if status is None:
            state.output = output
        else:
            self.set_status(service, instance_id, status, output)
        return True

    async def maintenance(
        self, service: str, instance_id: str, reason: str | None
    ) -> InstanceState:
        """Take an instance out of the answers (reason given) or put it back (None). With a
        shared store it is a write (every node takes the instance out), acknowledged once this
        node's memory has it."""
        state = self.instance(service, instance_id)
        if self._publisher is None:
            self.memory.set_maintenance(service, instance_id, reason)
            return state
        if await self._publisher.maintenance(service, instance_id, state, reason):
            self.writes["maintenance"] += 1
        return self.instance(service, instance_id)

    def touch(self, service: str) -> None:
        """Have the listeners rebuild a service whose hand-out depends on time (slow start,
        flap damping) although nothing was written."""
        self.memory.touch(service)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
        await self.store.close()
