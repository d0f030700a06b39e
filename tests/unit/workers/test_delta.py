"""The feed sends a write as what changed: ``SentServices`` turns each whole member list into a
delta against what the workers were sent, and a worker's ``Replica`` applying the deltas answers
from the same names as one given every service whole."""

from __future__ import annotations

import asyncio
import random

from dnsdisc.config import zones
from dnsdisc.config.load import Config
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.zone import IndexSettings
from dnsdisc.policies.roles import IN
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.server.parts import build_index
from dnsdisc.workers.pool import WorkerPool
from dnsdisc.workers.protocol import SentServices
from dnsdisc.workers.replica import Replica
from tests.support.members import Member, names


def replica() -> Replica:
    config = Config()
    return Replica(build_index(config, zones.ZoneData()))


def make_pool() -> WorkerPool:
    index = AnswerIndex(IndexSettings(domain=b"\x03svc\x08internal\x00"))
    return WorkerPool(Config().dns_settings(), 2, index, lambda: [], "asyncio")


def member(n: int, port: int, tags: list[str]) -> Member:
    return Member(
        Instance.from_json("web", f"w{n}", {"address": f"10.0.{n}.1", "port": port, "tags": tags})
    )


def test_only_the_changed_members_are_sent_and_applied() -> None:
    sent = SentServices()
    settings = ServiceSettings.from_json("web", {})
    rng = random.Random(7)
    members = {n: member(n, 80, rng.sample(["a", "b", "c"], 2)) for n in range(200)}
    whole, delta = sent.diff("web", settings, list(members.values()))
    assert delta is None and whole is not None and len(whole[2]) == 200
    deltas, full = replica(), replica()
    deltas.service(*whole)
    assert sent.diff("web", settings, list(members.values())) == (None, None)  # nothing new

    members[5] = member(5, 81, ["a"])
    del members[9]
    whole, delta = sent.diff("web", settings, list(members.values()))
    assert whole is None and delta is not None
    name, changed, removed = delta
    assert [f[0].id for f in changed] == ["w5"] and removed == ["w9"]
    index = deltas.building
    encoded = index.service_names("web").encoded  # type: ignore[union-attr]
    deltas.delta(name, changed, removed)
    assert index.service_names("web").encoded == encoded + 1  # type: ignore[union-attr]

    frames = [(m.instance, m.weight, m.priority, IN, None, None) for m in members.values()]
    full.service("web", settings, frames)
    assert names(deltas.building) == names(full.building)
    assert set(deltas.tallies["web"]) == {f"w{n}" for n in members}

    # New settings go whole; a service gone goes as such.
    other = ServiceSettings.from_json("web", {"ttl": 17})
    whole, delta = sent.diff("web", other, list(members.values()))
    assert delta is None and whole is not None and whole[1] is other
    assert sent.diff("web", None, []) == (("web", None, []), None)
    sent.forget()
    whole, _ = sent.diff("web", settings, list(members.values()))
    assert whole is not None  # after a reload everything goes whole again


def test_new_load_or_latency_alone_sends_no_member() -> None:
    # Load and latency reach the workers as FIGURES; counting them as a change would send every
    # member of a checked service again at its next write, undoing the delta.
    sent = SentServices()
    settings = ServiceSettings.from_json("web", {})
    members = [member(n, 80, ["a"]) for n in range(50)]
    sent.diff("web", settings, members)
    for n, m in enumerate(members):
        m.load, m.latency_ms = n / 50, float(n)
    assert sent.diff("web", settings, members) == (None, None)
    members[3] = member(3, 81, ["a"])
    _, delta = sent.diff("web", settings, members)
    assert delta is not None and [f[0].id for f in delta[1]] == ["w3"]


def test_patch_records_and_sends_only_the_members_named() -> None:
    sent = SentServices()
    settings = ServiceSettings.from_json("web", {})
    members = {n: member(n, 80, ["a"]) for n in range(100)}
    assert not sent.holds("web")
    sent.diff("web", settings, list(members.values()))
    assert sent.holds("web")
    members[4] = member(4, 81, ["a"])
    delta = sent.patch("web", {"w4": members[4], "w7": None, "w99": None, "w1000": None})
    assert delta is not None
    _name, changed, removed = delta
    assert [f[0].id for f in changed] == ["w4"] and sorted(removed) == ["w7", "w99"]
    # What was recorded is what a whole diff now compares against.
    del members[7], members[99]
    assert sent.diff("web", settings, list(members.values())) == (None, None)
    assert sent.patch("web", {"w4": members[4]}) is None  # as sent: nothing to send


def test_pool_patch_merges_into_what_is_pending() -> None:
    async def scenario() -> None:
        pool = make_pool()
        settings = ServiceSettings.from_json("web", {})
        first = [member(n, 80, ["a"]) for n in range(10)]
        assert not pool.patch("web", first[:1], [])  # never sent: must go whole
        pool.rebuild("web", settings, first)
        assert pool.patch("web", [member(3, 90, ["a"])], ["w5"])  # merged into the whole
        await pool.settle()
        assert pool.sent.holds("web")
        assert pool.patch("web", [member(11, 80, ["a"])], ["w6"])
        assert pool.patch("web", [member(6, 80, ["a"])], [])  # back in the same turn
        await pool.settle()
        assert pool.sent.diff("web", settings, [
            *(m for m in first if m.instance.id not in ("w3", "w5")),
            member(3, 90, ["a"]), member(11, 80, ["a"]),
        ]) == (None, None)  # fmt: skip
        pool.rebuild("web", None, [])
        assert not pool.patch("web", first[:1], [])  # gone in this turn: send it whole

    asyncio.run(scenario())
