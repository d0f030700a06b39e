"""Health: which instances the answers hand out, and the work that keeps that current.

What the answers hand out is ``handout``'s (a pure function of a service's instances, its
settings and the time). ``HealthMonitor`` does the work off the DNS answer path: it expires TTL
leases, runs active HTTP/TCP checks with rise/fall counting, deregisters instances that stayed
critical too long, and re-evaluates services whose hand-out changes with time alone (a flapping
instance being released, a slow-start ramp). It writes only through the registry, which
rebuilds the affected pre-encoded answers.

With a shared store (etcd) leases are etcd's (an expired lease deletes the instance on every
node), and only one node, elected through etcd (``checking``), runs the active checks and the
deregistration of long-critical instances; its verdicts reach the others through the store.
One checker rather than every node checking and merging: one probe per instance per interval
whatever the cluster size, and one verdict, so every node hands out the same instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dnsdisc.dnsserver.stats import Histogram
from dnsdisc.health.gate import CheckGate
from dnsdisc.health.handout import Handouts, Member
from dnsdisc.health.probes import Outcome, Prober
from dnsdisc.health.settings import HealthSettings
from dnsdisc.registry.checks import CheckSpec
from dnsdisc.registry.model import CRITICAL, PASSING, WARNING, Instance
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.state import CheckState, InstanceState, Service

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, registry: Registry, cfg: HealthSettings | None = None) -> None:
        self.registry = registry
        self.settings = cfg or HealthSettings()
        self.clock = registry.clock
        self.transitions: Counter[str] = Counter()
        self.check_results: Counter[tuple[str, bool]] = Counter()  # (http|tcp, success)
        self.checks_skipped = 0  # runs that found no slot in the budgets before the next was due
        self.gate = CheckGate(lambda: self.settings)
        self._wake: dict[str, float] = {}
        self.handouts = Handouts()
        self._leases: list[tuple[float, str, str]] = []
        self._leased: set[tuple[str, str]] = set()
        self._critical: set[tuple[str, str]] = set()
        self._checks: dict[tuple[str, str], _Checked] = {}
        self.prober = Prober()
        # How late each check run starts against when it was due (the event loop's lag and
        # the gate's wait), for the metrics and the checks bench.
        self.check_delay = Histogram(DELAY_BUCKETS)
        # Self-preservation (health.protection): whether leases are held now, how many, and
        # how often it began.
        self.protecting = False
        self.held = 0
        self.protections = 0
        self._started = False
        self._jitter = False  # set while the checks of many instances start at once
        self._ticker: asyncio.Task[None] | None = None
        self._stopped = False
        # A shared store keeps the leases itself, and elects the node that checks.
        self.local_leases = not registry.shared
        self.checking = not registry.shared
        registry.on_status(self._count)

    # -- the view the answer index is built from ---------------------------------------------

    def view(self, svc: Service) -> list[Member]:
        """Every instance of ``svc`` as handed out now."""
        members, wake = self.handouts.whole(svc, self.clock(), self.settings)
        name = svc.settings.name
        if wake is None:
            self._wake.pop(name, None)
        else:
            self._wake[name] = wake
        return members

    def view_one(self, svc: Service, iid: str) -> tuple[list[Member], list[str]] | None:
        """Instance ``iid`` of ``svc`` as handed out now that it changed (or went): the members
        changed and the ids removed. None: hand out the whole service (``view``)."""
        found = self.handouts.one(svc, iid, self.clock(), self.settings)
        if found is None:
            return None
        changed, removed, wake = found
        if wake is not None:
            # Only ever earlier: a wake left early by a member that no longer needs it costs
            # one whole hand-out then, which finds the next one.
            name = svc.settings.name
            self._wake[name] = min(wake, self._wake.get(name, wake))
        return changed, removed

    def forget(self, service: str) -> None:
        self.handouts.forget(service)
        self._wake.pop(service, None)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.prober.start()
        self._started = True
        self.registry.subscribe_changes(self.reconcile)
        now = self.clock()
        for svc in self.registry:
            for state in svc.instances.values():
                # Leases run from when the server is up, not from when the store was read:
                # after a restart each gets a full TTL of grace however long starting took.
                state.last_heartbeat = max(state.last_heartbeat, now)
        # Checks loaded at once start spread over their interval, not all in the first second.
        self._jitter = True
        for svc in list(self.registry):
            self.reconcile(svc.settings.name)
        self._jitter = False
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        self._stopped = True  # an election won during shutdown starts nothing
        tasks = [c.task for o in self._checks.values() for c in o.checks if c.task is not None]
        for owner in self._checks.values():
            self._stop_checks(owner)
        if self._ticker is not None:
            tasks.append(self._ticker)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._checks.clear()
        await self.prober.close()

    def set_checking(self, on: bool) -> None:
        """Start or stop running active checks (this node won or lost the election)."""
        if on == self.checking or (on and not self._started) or self._stopped:
            return
        self.checking = on
        if on:
            self._jitter = True
            for svc in list(self.registry):
                self.reconcile(svc.settings.name)
            self._jitter = False
        else:
            for owner in self._checks.values():
                self._stop_checks(owner)
            self._checks.clear()

    def reconcile(self, service: str, iid: str | None = None) -> None:
        """Start leases and checks of new instances, stop checks of gone or changed ones: of
        instance ``iid`` only when it is the only one that changed, else of every instance."""
        svc = self.registry.get(service)
        current = svc.instances if svc else {}
        if iid is not None:
            keys = [(service, iid)] if (service, iid) in self._checks else []
            states = [(iid, state)] if (state := current.get(iid)) is not None else []
        else:
            keys = [k for k in self._checks if k[0] == service]
            states = list(current.items())
        for key in keys:
            state = current.get(key[1])
            if state is None or state.instance != self._checks[key].inst:
                self._stop_checks(self._checks.pop(key))
        for instance_id, state in states:
            inst = state.instance
            key = (service, instance_id)
            if inst.ttl is not None and self.local_leases and key not in self._leased:
                self._leased.add(key)
                deadline = state.last_heartbeat + inst.ttl
                heapq.heappush(self._leases, (deadline, service, instance_id))
            if state.status == CRITICAL:
                # Critical with no change of state to report it (a check that has not passed yet,
                # or a status read from a shared store): deregister_after counts from then on,
                # as Consul's does from registration.
                self._critical.add(key)
            if inst.checks and self.checking and not self._stopped and key not in self._checks:
                # Not once stopped: the store's watch still writes until it is closed, and a
                # check started then would run with the prober closed, until the process ends.
                self._checks[key] = self._start_checks(key, inst)

    # -- timed work --------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick)
            try:
                await self._tick(self.clock())
            except Exception:
                log.exception("health tick failed")

    async def _tick(self, now: float) -> None:
        leases = self._leases
        due: list[tuple[str, str, InstanceState, float]] = []
        while leases and leases[0][0] <= now:
            _, service, iid = heapq.heappop(leases)
            svc = self.registry.get(service)
            state = svc.instances.get(iid) if svc else None
            ttl = state.instance.ttl if state else None
            if state is None or ttl is None:
                self._leased.discard((service, iid))
                continue
            deadline = state.last_heartbeat + ttl
            if deadline <= now:
                due.append((service, iid, state, ttl))
            else:
                heapq.heappush(leases, (deadline, service, iid))
        hold = self._protect(now, len(due))
        for service, iid, state, ttl in due:
            if hold:
                # Held: looked at again next second (a heartbeat, or the end of protection).
                heapq.heappush(leases, (now + 1.0, service, iid))
                continue
            if state.status != CRITICAL:
                self.registry.set_status(
                    service, iid, CRITICAL, f"no heartbeat within the {ttl:g} s lease"
                )
            # Expired: look again in a while (a heartbeat revives it).
            heapq.heappush(leases, (now + ttl, service, iid))
        for service, wake in list(self._wake.items()):
            if wake <= now:
                del self._wake[service]
                self.registry.touch(service)
        for service, iid in self._expired(now) if self.checking else ():
            log.info("deregistering %s/%s: critical for longer than deregister_after", service, iid)
            try:
                await self.registry.delete_instance(service, iid)
            except Exception:
                log.warning("could not deregister %s/%s", service, iid, exc_info=True)

    def _protect(self, now: float, due: int) -> bool:
        """Whether the leases ``due`` now are held rather than expired (``health.protection``):
        when the leases missed within the window, those due now and those about to be
        (within a second: instances that stopped together) are more than ``expire_fraction``
        of the leased instances. It ends when heartbeats bring that share back under it."""
        cfg = self.settings.protection
        if cfg is None or (not due and not self.protecting):
            if cfg is None and self.protecting:
                self._stop_protecting("health.protection was turned off")
            return False
        leased = len(self._leased)
        if self.protecting:
            # Going on: the leases held (run out, kept from critical), however long ago.
            missing = self._overdue(now, math.inf, ahead=False, held=True)
        else:
            # Starting: the leases run out within the window, and those about to (instances
            # that stopped together run out a little apart); one long dead does not count.
            missing = self._overdue(now, cfg.window, ahead=True)
        over = leased >= cfg.min_leased and missing > cfg.expire_fraction * leased
        if over and not self.protecting:
            self.protecting = True
            self.protections += 1
            log.warning(
                "self-preservation: %d of %d leased instances missed their lease within %g s; "
                "taking the fault to be on this side, leases no longer expire until "
                "heartbeats resume (health.protection)",
                missing, leased, cfg.window,
            )  # fmt: skip
        elif not over and self.protecting:
            self._stop_protecting(f"{missing} of {leased} leased instances are missing now")
        self.held = self._overdue(now, math.inf, ahead=False, held=True) if self.protecting else 0
        return self.protecting

    def _stop_protecting(self, why: str) -> None:
        self.protecting = False
        self.held = 0
        log.warning("self-preservation ended: %s; leases expire again", why)

    def _overdue(self, now: float, window: float, ahead: bool, held: bool = False) -> int:
        """Leased instances whose lease ran out within ``window`` (``ahead``: or will within a
        quarter of it, at most a second); ``held``: only those not critical (being held)."""
        count = 0
        for service, iid in self._leased:
            svc = self.registry.get(service)
            state = svc.instances.get(iid) if svc else None
            ttl = state.instance.ttl if state is not None else None
            if state is None or ttl is None or (held and state.status == CRITICAL):
                continue
            out = state.last_heartbeat + ttl
            at = now + min(_TOGETHER, ttl / 4) if ahead else now
            if now - window < out <= at:
                count += 1
        return count

    def _expired(self, now: float) -> Iterable[tuple[str, str]]:
        """Critical instances past their deregister_after (only the critical are looked at)."""
        out = []
        for key in list(self._critical):
            service, iid = key
            svc = self.registry.get(service)
            state = svc.instances.get(iid) if svc else None
            if svc is None or state is None or state.status != CRITICAL:
                self._critical.discard(key)
                continue
            limit = state.instance.deregister_after or svc.settings.deregister_after
            if (
                limit is not None
                and state.maintenance is None
                and not state.instance.static
                and now - state.since >= limit
            ):
                self._critical.discard(key)
                out.append(key)
        return out

    # -- active checks -----------------------------------------------------------------------

    def _start_checks(self, key: tuple[str, str], inst: Instance) -> _Checked:
        """Schedule every check of ``inst``, each on its own interval; the instance's status is
        the worst of their judged statuses.

        A check is a timer between runs and a task only while it runs, not a task for its
        whole life: with 10,000 checks the tasks, their coroutines and their contexts were
        most of the objects the collector walked in a full pass (bench/checks.py)."""
        # Each check starts from its last verdict, else from the instance's status: a
        # re-registration, a restart or a won election must not flap an instance through
        # critical while its checks run again (a new instance starts critical: awaiting a pass).
        current = self._state(key)
        held = current.check_states if current is not None else {}
        start = current.status if current is not None else CRITICAL
        judged = {
            spec.id: held[spec.id].status if spec.id in held else start for spec in inst.checks
        }
        owner = _Checked(key, inst, judged)
        loop = asyncio.get_running_loop()
        delay = random.uniform(0, min(s.interval for s in inst.checks)) if self._jitter else 0.0
        for spec in inst.checks:
            check = _Check(owner, spec, spec.address or inst.address, spec.port or inst.port)
            owner.checks.append(check)
            self._schedule(loop, check, loop.time() + delay)
        return owner

    def _schedule(self, loop: asyncio.AbstractEventLoop, check: _Check, due: float) -> None:
        check.due = due
        check.timer = loop.call_at(due, self._launch, check)

    def _launch(self, check: _Check) -> None:
        check.timer = None
        if not check.owner.stopped:
            check.task = asyncio.get_running_loop().create_task(self._run(check))

    def _stop_checks(self, owner: _Checked) -> None:
        owner.stopped = True
        current = asyncio.current_task()
        for check in owner.checks:
            if check.timer is not None:
                check.timer.cancel()
                check.timer = None
            if check.task is not None and check.task is not current:
                check.task.cancel()
        owner.checks.clear()  # no cycle left between the instance's record and its checks

    async def _run(self, check: _Check) -> None:
        """One run of ``check``: wait for a slot, probe, judge, and schedule the next run an
        interval after this one ended (not from when it was due: a slow target is not probed
        back to back)."""
        owner, spec = check.owner, check.spec
        service, iid = owner.key
        loop = asyncio.get_running_loop()
        try:
            if spec.type == "alias":
                outcome = self._alias(spec)
            else:
                while not await self.gate.enter(service, loop.time() + spec.interval):
                    self.checks_skipped += 1  # not judged: no slot says nothing of the instance
                    if self.registry.get(service) is None:
                        return
                self.check_delay.observe(max(0.0, loop.time() - check.due))
                try:
                    outcome = await self.prober.probe(spec, check.address, check.port)
                except Exception as exc:  # a probe's bug must not stop the other checks
                    log.exception("check %s of %s/%s failed to run", spec.id, service, iid)
                    outcome = Outcome(CRITICAL, f"the check could not run ({type(exc).__name__})")
                finally:
                    self.gate.leave(service)
            if owner.stopped:
                return
            try:
                if not self._judge(check, outcome):
                    return  # the instance is gone
            except Exception:  # recording one verdict failed: the next run tries again
                log.exception("check %s of %s/%s: recording its result failed", spec.id, *owner.key)
        finally:
            check.task = None
        if not owner.stopped:
            self._schedule(loop, check, loop.time() + spec.interval)

    def _judge(self, check: _Check, outcome: Outcome) -> bool:
        """Count ``outcome`` towards the check's rise/fall and record it; False when the
        instance is gone."""
        owner, spec = check.owner, check.spec
        judged = owner.judged
        service, iid = owner.key
        self.check_results[(spec.type, outcome.ok)] += 1
        if outcome.ok:
            check.successes, check.failures = check.successes + 1, 0
        else:
            check.successes, check.failures = 0, check.failures + 1
        before = judged[spec.id]
        if outcome.ok and check.successes >= spec.rise:
            judged[spec.id] = outcome.status
        elif not outcome.ok and check.failures >= spec.fall:
            judged[spec.id] = CRITICAL
        worst = max(judged.values(), key=_SEVERITY.__getitem__)
        output = outcome.output
        if len(owner.checks) > 1:
            output = f"{spec.id}: {output}"
            if worst != judged[spec.id]:
                # The status comes from another check: say which, not this one's success.
                other = next(i for i, v in judged.items() if v == worst)
                output = f"{other} is {worst}; {output}"
        state = self._state(owner.key)
        held = state.check_states.get(spec.id) if state is not None else None
        since = held.since if held is not None and before == judged[spec.id] else _now_iso()
        detail = CheckState(judged[spec.id], outcome.output, outcome.latency_ms, since)
        status = worst if (check.successes >= spec.rise or check.failures >= spec.fall) else None
        return self.registry.check_result(
            service, iid, status, output, outcome.latency_ms, (spec.id, detail)
        )

    def _state(self, key: tuple[str, str]) -> InstanceState | None:
        svc = self.registry.get(key[0])
        return svc.instances.get(key[1]) if svc is not None else None

    def _alias(self, spec: CheckSpec) -> Outcome:
        """An alias check's verdict: the state of another instance, or of a service (passing
        while it has an instance handed out as healthy)."""
        svc = self.registry.get(spec.alias_service)
        name = spec.alias_service
        if spec.alias_instance is not None:
            name = f"{name}/{spec.alias_instance}"
            state = svc.instances.get(spec.alias_instance) if svc is not None else None
            if state is None:
                return Outcome(CRITICAL, f"alias of {name}: no such instance")
            status = state.effective_status
            mapped = status if status in (PASSING, WARNING) else CRITICAL
            return Outcome(mapped, f"alias of {name}: {status}")
        if svc is None:
            return Outcome(CRITICAL, f"alias of {name}: no such service")
        healthy = sum(
            1 for st in svc.instances.values() if st.effective_status in (PASSING, WARNING)
        )
        verdict = PASSING if healthy else CRITICAL
        return Outcome(verdict, f"alias of {name}: {healthy} of {len(svc.instances)} healthy")

    # -- metrics -----------------------------------------------------------------------------

    def _count(self, service: str, iid: str, before: str, after: str) -> None:
        self.transitions[after] += 1
        if after == CRITICAL:
            self._critical.add((service, iid))


@dataclass(slots=True, eq=False)
class _Checked:
    """An instance whose checks are scheduled: the verdicts its checks judged so far."""

    key: tuple[str, str]
    inst: Instance
    judged: dict[str, str]  # check id -> status judged (rise/fall counted)
    checks: list[_Check] = field(default_factory=list)
    stopped: bool = False


@dataclass(slots=True, eq=False)
class _Check:
    """One check of an instance: its target, its rise/fall counts, and either the timer of its
    next run or the task of the run going on."""

    owner: _Checked
    spec: CheckSpec
    address: str
    port: int
    successes: int = 0
    failures: int = 0
    due: float = 0.0
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None


# Upper bounds (seconds) of the check-delay histogram's buckets.
DELAY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Leases due within this many seconds (at most a quarter of the lease) of each other count as
# missed together (protection).
_TOGETHER = 1.0

# Worse statuses weigh more: an instance is as healthy as its least healthy check.
_SEVERITY = {PASSING: 0, WARNING: 1, CRITICAL: 2}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
