"""health.handout.Handouts: one changed instance handed out alone gives what handing out the
whole service gives, through random changes (statuses, maintenance, weights, removals), with
and without failing open; and it declines (None) exactly where it cannot."""

from __future__ import annotations

import random

import pytest

from dnsdisc.health.handout import Handouts, handout
from dnsdisc.health.settings import HealthSettings
from dnsdisc.registry.model import CRITICAL, PASSING, WARNING, Instance, ServiceSettings
from dnsdisc.registry.state import InstanceState, Service

CFG = HealthSettings(warning_weight=0.25)


def state(iid: str, rng: random.Random) -> InstanceState:
    inst = Instance.from_json(
        "web",
        iid,
        {"address": "10.0.0.1", "port": 80, "weight": rng.randint(0, 5) * 10,
         "priority": rng.randint(0, 2)},
    )  # fmt: skip
    st = InstanceState(inst, 0.0, 0.0, since=0.0)
    st.status = rng.choice([PASSING, PASSING, WARNING, CRITICAL])
    return st


def shown(members: list) -> dict[str, tuple[int, int, int]]:  # type: ignore[type-arg]
    return {m.instance.id: (m.role, m.weight, m.priority) for m in members}


@pytest.mark.parametrize("panic", [None, 0.5])
def test_one_matches_whole(panic: float | None) -> None:
    rng = random.Random(7)
    settings = ServiceSettings.from_json("web", {"panic_threshold": panic} if panic else {})
    svc = Service(settings)
    for n in range(12):
        svc.put(state(f"i{n}", rng))
    handouts = Handouts()
    held = shown(handouts.whole(svc, 100.0, CFG)[0])
    alone = declined = 0
    for step in range(600):
        iid = f"i{rng.randrange(16)}"
        action = rng.random()
        if action < 0.2 and iid in svc.instances:
            svc.drop(iid)
        elif action < 0.5:
            svc.put(state(iid, rng))
        else:
            st = svc.instances.get(iid)
            if st is None:
                continue
            if action < 0.85:
                st.status = rng.choice([PASSING, WARNING, CRITICAL])
            else:
                st.maintenance = None if st.maintenance else "upgrade"
        found = handouts.one(svc, iid, 100.0, CFG)
        if found is None:
            declined += 1
            held = shown(handouts.whole(svc, 100.0, CFG)[0])
        else:
            alone += 1
            changed, removed, _ = found
            held.update(shown(changed))
            for gone in removed:
                held.pop(gone, None)
        assert held == shown(handout(svc, 100.0, CFG)[0]), step
    assert alone > 300  # most changes are handed out alone...
    if panic:
        assert declined >= 5  # ...but crossing into or out of failing open is not
    else:
        assert declined == 0


def test_declines_without_a_record_or_after_new_settings() -> None:
    rng = random.Random(1)
    svc = Service(ServiceSettings.from_json("web", {}))
    svc.put(state("a", rng))
    handouts = Handouts()
    assert handouts.one(svc, "a", 0.0, CFG) is None  # never handed out whole
    handouts.whole(svc, 0.0, CFG)
    assert handouts.one(svc, "a", 0.0, CFG) is not None
    svc.settings = ServiceSettings.from_json("web", {"ttl": 5})
    assert handouts.one(svc, "a", 0.0, CFG) is None
    handouts.whole(svc, 0.0, CFG)
    handouts.forget("web")
    assert handouts.one(svc, "a", 0.0, CFG) is None


def test_slow_start_wake_comes_with_the_member() -> None:
    svc = Service(ServiceSettings.from_json("web", {"slow_start": 60}))
    handouts = Handouts()
    handouts.whole(svc, 0.0, CFG)
    inst = Instance.from_json("web", "a", {"address": "10.0.0.1", "port": 80, "weight": 50})
    st = InstanceState(inst, 0.0, 0.0, since=0.0)
    st.recovered_at = 90.0
    svc.put(st)
    found = handouts.one(svc, "a", 100.0, CFG)
    assert found is not None
    changed, _, wake = found
    assert wake == 100.0 + 60 / 20
    assert changed[0].weight == 8  # 10 s into a 60 s ramp
