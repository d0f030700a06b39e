"""Which instances the answers hand out, and how: a pure function of a service's instances, its
settings and the time (``handout``), and a per-service record of the last hand-out that lets one
changed instance be handed out again alone (``Handouts``).

Each instance gets a role (in, out, or fallback when the service fails open) and the weight and
SRV priority health leaves it (warning factor, slow-start ramp). Only failing open looks at the
whole service (the share of healthy instances); everything else is per instance. So a write to
one instance of a large service is handed out in O(1), as long as the service neither fails open
nor stops failing open: then, and on anything that is not about one instance (settings, a reload,
the passage of time), the whole service is handed out again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnsdisc.health.settings import HealthSettings
from dnsdisc.policies.roles import FALLBACK, IN, OUT
from dnsdisc.registry.model import MAINTENANCE, PASSING, WARNING, ServiceSettings
from dnsdisc.registry.state import InstanceState, Service

# A slow-start ramp starts at this share of the weight, and the ramp is re-evaluated this often.
_RAMP_FLOOR = 0.05
_RAMP_STEPS = 20


class Member:
    """One instance as the answers show it (a ``dnsserver.view.MemberView``)."""

    __slots__ = ("instance", "priority", "role", "state", "weight")

    def __init__(self, state: InstanceState, weight: int, priority: int, role: int) -> None:
        self.state = state
        self.instance = state.instance
        self.weight = weight
        self.priority = priority
        self.role = role

    @property
    def load(self) -> float | None:
        return self.state.load

    @property
    def latency_ms(self) -> float | None:
        return self.state.latency_ms

    def handed_out(self) -> None:
        self.state.answers += 1


def is_flapping(state: InstanceState, now: float, cfg: HealthSettings) -> bool:
    changes = state.changes
    if not changes or now - changes[-1] >= cfg.flap_stable:
        return False
    recent = sum(1 for t in changes if now - t <= cfg.flap_window)
    return recent >= cfg.flap_threshold


def member(
    state: InstanceState, settings: ServiceSettings, now: float, cfg: HealthSettings
) -> tuple[Member, float | None]:
    """One instance as handed out before failing open is considered, and the time at which
    that would change with no new event (None: not before something happens)."""
    inst = state.instance
    status = state.effective_status
    healthy = status in (PASSING, WARNING)
    wake: float | None = None
    if status != MAINTENANCE and is_flapping(state, now, cfg):
        healthy = cfg.flap_hold == "in"
        wake = state.changes[-1] + cfg.flap_stable
    weight = inst.weight
    if weight and status == WARNING:
        weight = max(1, round(weight * cfg.warning_weight))
    ramp = settings.slow_start
    if weight and ramp and healthy and state.recovered_at is not None:
        elapsed = now - state.recovered_at
        if elapsed < ramp:
            weight = max(1, round(weight * max(_RAMP_FLOOR, elapsed / ramp)))
            step = now + ramp / _RAMP_STEPS
            wake = step if wake is None else min(wake, step)
    return Member(state, weight, inst.priority, IN if healthy else OUT), wake


def _counts(m: Member) -> tuple[int, int]:
    """What ``m`` adds to (instances counted for failing open, healthy ones among them)."""
    if m.state.effective_status == MAINTENANCE:
        return 0, 0
    return 1, 1 if m.role == IN else 0


def _fails_open(settings: ServiceSettings, counted: int, healthy: int) -> bool:
    threshold = settings.panic_threshold
    return threshold is not None and counted > 0 and healthy / counted < threshold


def handout(svc: Service, now: float, cfg: HealthSettings) -> tuple[list[Member], float | None]:
    """Every instance of ``svc`` with its role, weight and priority; and the time at which this
    would change with no new event (None: not before something happens)."""
    settings = svc.settings
    members: list[Member] = []
    wake: float | None = None
    counted = healthy = 0
    for state in svc.instances.values():
        m, at = member(state, settings, now, cfg)
        if at is not None:
            wake = at if wake is None else min(wake, at)
        members.append(m)
        c, h = _counts(m)
        counted += c
        healthy += h
    if _fails_open(settings, counted, healthy):
        # Fail open: better to spread load over all than to crush the few survivors or answer
        # nothing. The unhealthy go behind the healthy, and in SRV below them.
        worst = max((m.priority for m in members if m.role == IN and _counts(m)[0]), default=0)
        for m in members:
            if m.role == OUT and _counts(m)[0]:
                m.role = FALLBACK
                m.priority = min(65535, max(worst, m.priority) + 1)
    return members, wake


@dataclass(slots=True, eq=False)
class _Last:
    """What is kept of a service's last hand-out: the settings it was made with and, where the
    service may fail open, the counts that is decided on (each member as before failing open)."""

    settings: ServiceSettings
    counted: int = 0
    healthy: int = 0
    plain: dict[str, tuple[int, int]] = field(default_factory=dict)  # iid -> _counts


class Handouts:
    """The last hand-out of each service, so that a change to one instance is handed out alone
    (``one``). ``whole`` hands out a service entirely and records it; ``forget`` drops it."""

    def __init__(self) -> None:
        self._last: dict[str, _Last] = {}

    def whole(
        self, svc: Service, now: float, cfg: HealthSettings
    ) -> tuple[list[Member], float | None]:
        members, wake = handout(svc, now, cfg)
        last = _Last(svc.settings)
        if svc.settings.panic_threshold:  # counted only where failing open can happen
            for m in members:
                c, h = last.plain[m.instance.id] = _counts(m)  # a fallback counts as out
                last.counted += c
                last.healthy += h
        self._last[svc.settings.name] = last
        return members, wake

    def forget(self, name: str) -> None:
        self._last.pop(name, None)

    def one(
        self, svc: Service, iid: str, now: float, cfg: HealthSettings
    ) -> tuple[list[Member], list[str], float | None] | None:
        """Hand out instance ``iid`` of ``svc`` again after it changed (or went): the members
        changed, the ids removed, and when this would change with no new event. None: the
        whole service must be handed out again (``whole``): nothing recorded, new settings, or
        failing open before or after this change."""
        last = self._last.get(svc.settings.name)
        if last is None or last.settings is not svc.settings:
            return None
        threshold = svc.settings.panic_threshold
        if threshold and _fails_open(svc.settings, last.counted, last.healthy):
            return None
        state = svc.instances.get(iid)
        new: Member | None = None
        wake: float | None = None
        if state is not None:
            new, wake = member(state, svc.settings, now, cfg)
        if threshold:
            c, h = last.plain.pop(iid, (0, 0))
            counted, healthy = last.counted - c, last.healthy - h
            if new is not None:
                c, h = _counts(new)
                counted, healthy = counted + c, healthy + h
            if _fails_open(svc.settings, counted, healthy):
                self._last.pop(svc.settings.name, None)
                return None
            if new is not None:
                last.plain[iid] = (c, h)
            last.counted, last.healthy = counted, healthy
        if new is None:
            return [], [iid], None
        return [new], [], wake
