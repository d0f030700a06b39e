"""``sequence: smooth`` through the responder: one requester's successive answers follow the
weights within 2 over every run, requesters start at random places and together still follow
the weights; ECS subnets are requesters of their own; and ``srv_weights: scaled``."""

from __future__ import annotations

from collections import Counter

import dns.edns
import dns.message

from tests.support import stats as runs
from tests.support.world import World

WEIGHTS = {"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 3, "10.0.0.4": 4}


def weighted(sequence: str = "smooth", **settings: object) -> World:
    w = World()
    w.settings("web", sequence=sequence, max_answers=1, **settings)
    for i, (address, weight) in enumerate(WEIGHTS.items(), 1):
        w.add("web", f"w{i}", address=address, port=80, weight=weight)
    return w


def first(msg: dns.message.Message) -> str:
    return str(msg.answer[0][0].address)


def worst_run(answers: list[str]) -> float:
    return runs.worst_run(answers, WEIGHTS)


def test_one_requesters_answers_follow_the_weights_within_two() -> None:
    w = weighted()
    answers = [first(w.ask("web.svc.internal.", source="192.0.2.53")) for _ in range(100)]
    assert worst_run(answers) < 2
    counts = Counter(answers)
    assert all(abs(counts[a] - 10 * wt) <= 1 for a, wt in WEIGHTS.items()), counts
    # The same through random draws is off by more somewhere in 100 answers (seeded).
    r = weighted("random")
    drawn = [first(r.ask("web.svc.internal.", source="192.0.2.53")) for _ in range(100)]
    assert worst_run(drawn) > 2


def test_requesters_start_at_random_places_and_together_follow_the_weights() -> None:
    w = weighted()
    firsts = Counter()
    total = Counter()
    for n in range(50):
        source = f"198.51.100.{n + 1}"
        answers = [first(w.ask("web.svc.internal.", source=source)) for _ in range(20)]
        firsts[answers[0]] += 1
        total.update(answers)
        assert worst_run(answers) < 2
    assert len(firsts) >= 3  # not all in lockstep
    chi2 = sum((total[a] - 1000 * wt / 10) ** 2 / (1000 * wt / 10) for a, wt in WEIGHTS.items())
    assert chi2 < 16.3  # 3 degrees of freedom, p = 0.001


def test_ecs_subnets_are_requesters_of_their_own_and_the_scope_says_so() -> None:
    w = weighted()
    answers = []
    for _ in range(40):
        msg = w.ask(
            "web.svc.internal.", source="127.0.0.1", use_edns=0,
            options=[dns.edns.ECSOption("203.0.113.0", 24)],
        )  # fmt: skip
        answers.append(first(msg))
        (option,) = msg.options
        assert isinstance(option, dns.edns.ECSOption) and option.scopelen == 24
    assert worst_run(answers) < 2


def test_scaled_srv_weights_make_the_largest_of_each_priority_65535() -> None:
    w = World()
    w.settings("db", srv_weights="scaled")
    w.add("db", "a", address="10.0.0.1", port=5432, weight=100)
    w.add("db", "b", address="10.0.0.2", port=5432, weight=50)
    w.add("db", "c", address="10.0.0.3", port=5432, weight=25, priority=1)
    w.add("db", "d", address="10.0.0.4", port=5432, weight=0, priority=1)
    msg = w.ask("_db._tcp.svc.internal.", "SRV")
    got = {rr.target.labels[0].decode(): (rr.priority, rr.weight) for rr in msg.answer[0]}
    assert got == {"a": (0, 65535), "b": (0, 32768), "c": (1, 65535)}  # d drained: left out
    w.settings("db", srv_weights="registered")
    msg = w.ask("_db._tcp.svc.internal.", "SRV")
    assert sorted(rr.weight for rr in msg.answer[0]) == [25, 50, 100]
