"""A patched service answers as one built from scratch: after random sequences of puts, removes,
weight, priority and role changes, every RRset of every name (the tags' names included) draws
the same orders from the same seed as a fresh build, its draw tiers (kept by the service's
groups, ``tiers_hint``) are those the policy computes from the items, and its draws follow the
weights."""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.rrset import RRSet
from dnsdisc.policies.roles import FALLBACK, IN, OUT
from dnsdisc.registry.model import Instance, ServiceSettings
from tests.support.members import TAGS, Member, instance, make_index, names

POLICY_NAMES = ["weighted", "priority", "random", "round_robin", "least_loaded"]


def scratch(settings: ServiceSettings, members: dict[str, Member]) -> AnswerIndex:
    index = make_index()
    index.rebuild("big", settings, list(members.values()))
    return index


def unhinted(rrset: RRSet) -> RRSet:
    """The same RRset made without what the service's groups keep (``least``, ``hint``)."""
    return RRSet(rrset.rtype, rrset.items, rrset.policy, rrset.limit, rrset.tail)


def assert_same_answers(index: AnswerIndex, expected: AnswerIndex, seed: int) -> None:
    assert names(index) == names(expected)
    for name, node in expected.nodes.items():
        for rtype, fresh in node.rrsets.items():
            got = index.nodes[name].rrsets[rtype]
            plain = unhinted(got)
            assert (got.fit_udp, got.fit_tcp) == (plain.fit_udp, plain.fit_tcp)
            if got.policy is not None and got.hint is not None:
                assert got._groups(got.policy) == plain._groups(got.policy), (name, rtype)
            for cap, tcp in ((None, True), (3, False)):
                a, b = random.Random(seed), random.Random(seed)
                # A copy with what the patch left it (items, hint): an RRset drawn from at an
                # earlier check has moved on (round robin's counter).
                copy = RRSet(got.rtype, got.items, got.policy, got.limit, got.tail, hint=got.hint)
                want = RRSet(fresh.rtype, fresh.items, fresh.policy, fresh.limit, fresh.tail)
                drawn = [copy.next_order(a, cap, tcp) for _ in range(5)]
                assert drawn == [want.next_order(b, cap, tcp) for _ in range(5)], (name, rtype)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_random_patches_answer_as_a_fresh_build(policy: str) -> None:
    rng = random.Random(f"groups-{policy}")
    limit: dict[str, Any] = {"max_answers": 3} if policy == "priority" else {}
    settings = ServiceSettings.from_json("big", {"policy": policy, **limit})
    members: dict[str, Member] = {}
    index = make_index()
    index.rebuild("big", settings, [])
    for step in range(300):
        op = rng.random()
        if op < 0.55 or not members:
            iid = f"i{rng.randrange(60)}"
            member = Member(
                instance(iid, rng, tags=6),
                weight=rng.choice([0, 1, 1, 2, 5]),
                priority=rng.choice([0, 0, 0, 1]),
                role=rng.choice([IN, IN, IN, FALLBACK, OUT]),
            )
            members[iid] = member
            index.patch("big", [member], [])
        elif op < 0.85:
            iid = rng.choice(list(members))
            del members[iid]
            index.patch("big", [], [iid])
        else:  # a weight or role change of a member that keeps its registration
            iid = rng.choice(list(members))
            old = members[iid]
            members[iid] = Member(
                old.instance,
                weight=rng.choice([0, 1, 3]),
                priority=old.priority,
                role=rng.choice([IN, FALLBACK]),
            )
            index.rebuild("big", settings, list(members.values()))
        if step % 15 == 0 or step > 295:
            assert_same_answers(index, scratch(settings, members), step)


def test_draws_after_patches_follow_the_weights() -> None:
    # One tag carried by all 200 members, then 100 weight changes patched in: the first place
    # of the tag's A answers goes to each member in proportion to its weight.
    rng = random.Random(1601)
    settings = ServiceSettings.from_json("big", {"policy": "weighted"})
    members = {}
    for n in range(200):
        members[f"i{n}"] = Member(_tagged(n, rng), weight=rng.choice([1, 2, 4]))
    index = scratch(settings, members)
    for _ in range(100):
        iid = f"i{rng.randrange(200)}"
        members[iid] = Member(members[iid].instance, weight=rng.choice([1, 2, 4, 8]))
        index.patch("big", [members[iid]], [])
    rrset = index.nodes[wire.text_to_wire("all.big.svc.internal.")].rrsets[wire.A]
    weights = {item.body: item.weight for item in rrset.items}
    assert sorted(weights.values()) == sorted(m.weight for m in members.values())
    total = sum(weights.values())
    draws = 60_000
    draw_rng = random.Random(7)
    firsts = Counter(
        rrset.members[rrset.next_order(draw_rng, 1, False)[0]].body for _ in range(draws)
    )
    chi2 = sum(
        (firsts[body] - draws * w / total) ** 2 / (draws * w / total) for body, w in weights.items()
    )
    # 199 degrees of freedom: mean 199, sd about 20; a sampler ignoring the weights scores
    # in the thousands.
    assert chi2 < 199 + 6 * 20


def _tagged(n: int, rng: random.Random) -> Instance:
    body = {"address": f"10.0.0.{n + 1}", "port": 80, "tags": ["all", *rng.sample(TAGS, 2)]}
    return Instance.from_json("big", f"i{n}", body)


def lines_run(action: Callable[[], object]) -> int:
    """How many lines of dnsdisc ``action`` runs: a measure of work that the machine's load
    does not move."""
    count = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if "dnsdisc" not in frame.f_code.co_filename:
            return None

        def lines(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal count
            if event == "line":
                count += 1
            return lines

        return lines

    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(None)
    return count


def test_one_change_to_wide_tags_costs_what_changed() -> None:
    # 3,000 instances that all carry the same 32 tags: one changed instance is in 33 groups
    # of 3,000 (about 100 RRsets of 3,000 records). Patching it and drawing the first answer
    # of each tag's name runs about 25,000 lines (mostly the 64 draws), not a pass in Python
    # over each RRset (at least 300,000; the code before the groups ran 3.7 million).
    rng = random.Random(32)
    settings = ServiceSettings.from_json("big", {})
    members = {}
    for n in range(3000):
        body = {"address": f"10.1.{n // 250}.{n % 250 + 1}", "port": 80, "tags": TAGS}
        members[f"i{n}"] = Member(Instance.from_json("big", f"i{n}", body))
    index = scratch(settings, members)
    changed = Member(members["i1500"].instance, weight=3)
    tag_names = [wire.text_to_wire(f"{t}.big.svc.internal.") for t in TAGS]

    def change() -> None:
        index.patch("big", [changed], [])
        for name in tag_names:
            for rrset in index.nodes[name].rrsets.values():
                rrset.next_order(rng, 16, False)

    assert lines_run(change) < 100_000
    assert index.nodes[tag_names[0]].rrsets[wire.A].items[1500].weight == 3


@pytest.mark.parametrize("policy", ["weighted", "random", "priority"])
def test_a_service_all_fail_open_answers_its_members(policy: str) -> None:
    # Every member unhealthy and handed out fail-open: the A RRset has no items, only a tail.
    # Its few orders come from a table, which an empty first tier used to cut short: every
    # answer was empty.
    index = make_index()
    members = [
        Member(
            Instance.from_json("web", f"i{n}", {"address": f"10.0.0.{n + 1}", "port": 80}),
            role=FALLBACK,
        )
        for n in range(3)
    ]
    index.rebuild("web", ServiceSettings.from_json("web", {"policy": policy}), members)
    rrset = index.nodes[wire.text_to_wire("web.svc.internal.")].rrsets[wire.A]
    assert not rrset.items and len(rrset.tail) == 3
    rng = random.Random(5)
    orders = {rrset.next_order(rng, None, False) for _ in range(200)}
    assert all(sorted(o) == [0, 1, 2] for o in orders) and len(orders) == 6
    plain = unhinted(rrset)
    assert {plain.next_order(rng, None, False) for _ in range(200)} == orders
