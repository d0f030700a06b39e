"""health.handout: roles, weights and priorities, as a pure function of state, settings, time.
Each of damping, slow start and fail-open has a case a naive implementation gets wrong."""

from __future__ import annotations

from collections import deque

from dnsdisc.health.handout import handout
from dnsdisc.health.settings import HealthSettings
from dnsdisc.policies.roles import FALLBACK, IN, OUT
from dnsdisc.registry.model import CRITICAL, PASSING, WARNING, Instance, ServiceSettings
from dnsdisc.registry.state import InstanceState, Service

CFG = HealthSettings(warning_weight=0.25, flap_window=60, flap_threshold=4, flap_stable=30)


def state(iid: str, status: str = PASSING, weight: int = 100, priority: int = 0) -> InstanceState:
    inst = Instance.from_json(
        "web", iid, {"address": "10.0.0.1", "port": 80, "weight": weight, "priority": priority}
    )
    st = InstanceState(inst, 0.0, 0.0, since=0.0)
    st.status = status
    return st


def service(*states: InstanceState, **settings: object) -> Service:
    svc = Service(ServiceSettings.from_json("web", settings))
    for st in states:
        svc.instances[st.instance.id] = st
    return svc


def roles(svc: Service, now: float = 1000.0) -> dict[str, tuple[int, int, int]]:
    members, _ = handout(svc, now, CFG)
    return {m.instance.id: (m.role, m.weight, m.priority) for m in members}


def test_states() -> None:
    maint = state("m")
    maint.maintenance = "upgrade"
    svc = service(state("p"), state("w", WARNING), state("c", CRITICAL), maint)
    assert roles(svc) == {
        "p": (IN, 100, 0),
        "w": (IN, 25, 0),
        "c": (OUT, 100, 0),
        "m": (OUT, 100, 0),
    }


def test_flapping_instance_is_held_out_until_stable() -> None:
    st = state("f")
    st.changes = deque([950.0, 960.0, 970.0, 990.0])  # 4 changes within 60 s; now passing
    svc = service(st, state("ok"))
    members, wake = handout(svc, 1000.0, CFG)
    assert {m.instance.id: m.role for m in members} == {"f": OUT, "ok": IN}  # naive: IN
    assert wake == 990.0 + 30
    assert roles(svc, now=1020.0)["f"][0] == IN  # stable for 30 s: released
    held_in = HealthSettings(flap_threshold=4, flap_stable=30, flap_hold="in")
    st.status = CRITICAL
    assert {m.instance.id: m.role for m in handout(svc, 1000.0, held_in)[0]}["f"] == IN


def test_few_changes_are_not_flapping() -> None:
    st = state("f")
    st.changes = deque([500.0, 990.0])
    assert roles(service(st))["f"][0] == IN


def test_slow_start_ramps_the_weight() -> None:
    st = state("r", weight=100)
    st.recovered_at = 1000.0
    svc = service(st, slow_start=10)
    assert roles(svc, 1000.0)["r"] == (IN, 5, 0)  # naive: 100
    assert roles(svc, 1005.0)["r"] == (IN, 50, 0)
    assert roles(svc, 1010.0)["r"] == (IN, 100, 0)
    _, wake = handout(svc, 1005.0, CFG)
    assert wake is not None and 1005.0 < wake <= 1006.0
    # Without slow_start the weight is full at once.
    assert roles(service(st), 1000.0)["r"] == (IN, 100, 0)


def test_fail_open_below_the_threshold() -> None:
    svc = service(
        state("a"),
        state("b", CRITICAL),
        state("c", CRITICAL, priority=5),
        state("d", CRITICAL),
        panic_threshold=0.5,
    )
    got = roles(svc)
    assert got["a"] == (IN, 100, 0)
    # naive: OUT. Fallback, at a worse SRV priority than every healthy instance.
    assert got["b"] == (FALLBACK, 100, 1)
    assert got["c"] == (FALLBACK, 100, 6)
    # Above the threshold (2 of 4 healthy is not below 0.5): the unhealthy stay out.
    svc.instances["b"].status = PASSING
    assert roles(svc)["c"][0] == OUT
    # Off by default.
    assert roles(service(state("a"), state("b", CRITICAL)))["b"][0] == OUT


def test_fail_open_ignores_maintenance() -> None:
    m = state("m", CRITICAL)
    m.maintenance = "planned"
    svc = service(state("a"), state("b", CRITICAL), m, panic_threshold=0.6)
    got = roles(svc)
    assert got["b"][0] == FALLBACK and got["m"][0] == OUT
