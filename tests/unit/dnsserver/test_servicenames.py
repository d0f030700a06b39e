"""A change to a large service costs the index what changed: one instance of a 10,000-instance
service with 32 tags is encoded once and rebuilds only the RRsets of the groups it is in; and
random sequences of changes leave exactly the name table a build from scratch makes."""

from __future__ import annotations

import random
from typing import Any

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.build import PtrNode
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.servicenames import HostNode, ServiceNames
from dnsdisc.dnsserver.zone import LazyNode
from dnsdisc.policies.roles import FALLBACK, IN
from dnsdisc.registry.model import Instance, ServiceSettings
from tests.support.members import TAGS, Member, instance, make_index, names


def scratch(settings: ServiceSettings, members: dict[str, Member]) -> AnswerIndex:
    index = make_index()
    index.rebuild("big", settings, list(members.values()))
    return index


def test_one_change_to_a_10000_instance_service_touches_only_its_names() -> None:
    rng = random.Random(16)
    settings = ServiceSettings.from_json("big", {})
    members = {f"i{n}": Member(instance(f"i{n}", rng)) for n in range(10_000)}
    index = make_index()
    index.rebuild("big", settings, list(members.values()))
    held = index.service_names("big")
    assert isinstance(held, ServiceNames)
    built_from_scratch = held.rrsets_built
    # Every member encoded; the instances' own names are made when first asked for (see
    # zone.LazyNode), so only the groups' RRsets were built.
    assert held.encoded == 10_000 and 0 < built_from_scratch < 1_000
    nodes_before = dict(index.nodes)

    changed = Member(instance("i5000", rng, tags=2), weight=3)
    members["i5000"] = changed
    encoded, built = held.encoded, held.rrsets_built
    index.patch("big", [changed], [])
    assert held.encoded - encoded == 1
    # The service's own name (A, AAAA, SRV), a protocol or two, the old and new tags' two
    # names (A, AAAA, SRV each) and the host name: a few dozen RRsets, not tens of thousands.
    assert held.rrsets_built - built <= 3 + 2 + 2 * 3 * 2 * 5 + 3
    still = [n for n in index.nodes if index.nodes[n] is nodes_before.get(n)]
    assert len(still) >= len(index.nodes) - 20  # every other name keeps its node

    # A full member list (SERVICES, or the registry in one process) with one member changed
    # is diffed: the others are not encoded again.
    members["i7"] = Member(instance("i7", rng), weight=0)
    encoded = held.encoded
    index.rebuild("big", settings, list(members.values()))
    assert held.encoded - encoded == 1
    assert names(index) == names(scratch(settings, members))

    index.patch("big", [], ["i42"])
    del members["i42"]
    assert names(index) == names(scratch(settings, members))


def test_random_changes_give_the_name_table_of_a_build_from_scratch() -> None:
    rng = random.Random(1216)
    settings = ServiceSettings.from_json("big", {"meta": {"team": "a"}})
    members: dict[str, Member] = {}
    index = make_index()
    index.rebuild("big", settings, [])
    other = ServiceSettings.from_json("other", {})
    index.rebuild("other", other, [Member(instance("x", rng))])  # shares reverse names
    for step in range(400):
        op = rng.random()
        if op < 0.45 or not members:
            iid = f"i{rng.randrange(80)}"
            extra: dict[str, Any] = {"meta": {"k": str(step)}} if rng.random() < 0.2 else {}
            if rng.random() < 0.1:
                iid = rng.choice(TAGS[:6])  # an instance id that is also a tag's label
            member = Member(
                instance(iid, rng, tags=4, **extra),
                weight=rng.choice([0, 1, 1, 2, 5]),
                priority=rng.choice([0, 0, 1]),
                role=rng.choice([IN, IN, IN, FALLBACK]),
            )
            members[iid] = member
            if rng.random() < 0.5:
                index.patch("big", [member], [])
            else:
                index.rebuild("big", settings, list(members.values()))
        elif op < 0.8:
            iid = rng.choice(list(members))
            del members[iid]
            index.patch("big", [], [iid])
        elif op < 0.85:
            ttl = rng.choice([5, 30, 60])
            settings = ServiceSettings.from_json("big", {"ttl": ttl, "policy": "weighted"})
            index.rebuild("big", settings, list(members.values()))
        else:
            continue
        if step % 10 == 0 or step > 390:
            expected = scratch(settings, members)
            expected.rebuild("other", other, list(index.members_of("other").values()))
            assert names(index) == names(expected), f"step {step}"
    index.rebuild("big", None, [])
    index.rebuild("other", None, [])
    assert names(index) == names(make_index())


def test_groups_of_the_same_members_share_records_and_others_do_not() -> None:
    """A tag every member carries gets the service name's records without a copy (its own
    RRset, with its own draws); tags held by as many members, but other ones, keep theirs."""

    def tagged(iid: str, tags: list[str], address: str) -> Member:
        body = {"address": address, "port": 80, "tags": tags}
        return Member(Instance.from_json("big", iid, body))

    def a_rrset(name: str) -> Any:
        return index.nodes[wire.text_to_wire(f"{name}.svc.internal.")].rrsets[wire.A]

    def check(addresses: dict[int, str]) -> None:
        whole, every = a_rrset("big"), a_rrset("every.big")
        assert every is not whole and every.items is whole.items
        for q in range(4):  # four tags of ten members each: same sizes, other members
            held = {bytes(i.body[-4:]) for i in a_rrset(f"q{q}.big").items}
            assert held == {
                bytes(map(int, a.split("."))) for n, a in addresses.items() if n % 4 == q
            }, q

    settings = ServiceSettings.from_json("big", {})
    addresses = {n: f"10.0.{n}.1" for n in range(40)}
    members = [tagged(f"i{n}", ["every", f"q{n % 4}"], a) for n, a in addresses.items()]
    index = make_index()
    index.rebuild("big", settings, members)
    check(addresses)
    addresses[3] = "10.9.9.9"
    index.patch("big", [tagged("i3", ["every", "q3"], addresses[3])], [])
    check(addresses)
    every, whole = a_rrset("every.big"), a_rrset("big")
    every.next_order(random.Random(1), 16, False)
    assert every.draws and not whole.draws  # drawing from one leaves the other's state alone


def test_instance_and_reverse_names_are_made_when_first_asked_for_and_read_without_keeping() -> (
    None
):
    settings = ServiceSettings.from_json("big", {})
    plain = Instance.from_json("big", "a", {"address": "10.1.2.3", "port": 80})
    v6 = Instance.from_json("big", "b", {"address": "fd00::7", "port": 81})
    with_meta = Instance.from_json(
        "big", "c", {"address": "10.1.2.4", "port": 82, "meta": {"k": "v"}}
    )
    index = make_index()
    index.rebuild("big", settings, [Member(plain), Member(v6), Member(with_meta)])
    host = wire.text_to_wire("a.big.svc.internal.")
    node = index.nodes[host]
    assert isinstance(node, HostNode) and node.built is None
    # A transfer or the journal reads the records and leaves nothing behind.
    seen = node.peek()
    assert node.built is None
    assert sorted(seen) == [wire.A, wire.SRV]
    assert [i.body[-4:] for i in seen[wire.A].items] == [bytes([10, 1, 2, 3])]
    # An answer makes them once and keeps them.
    made = node.rrsets
    assert node.built is made and node.rrsets is made
    assert {t: [i.body for i in r.items] for t, r in made.items()} == {
        t: [i.body for i in r.items] for t, r in seen.items()
    }
    six = index.nodes[wire.text_to_wire("b.big.svc.internal.")]
    assert isinstance(six, LazyNode) and sorted(six.rrsets) == [wire.AAAA, wire.SRV]
    # An instance with metadata has a TXT record too: made with the rest, as before.
    meta = index.nodes[wire.text_to_wire("c.big.svc.internal.")]
    assert not isinstance(meta, LazyNode) and wire.TXT in meta.rrsets
    ptr = index.nodes[wire.text_to_wire("3.2.1.10.in-addr.arpa.")]
    assert isinstance(ptr, PtrNode) and ptr.built is None
    [record] = ptr.peek()[wire.PTR].items
    assert record.body.endswith(host) and ptr.built is None
