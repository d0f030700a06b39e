"""Which instances a named query hands out: a pure function of its definition, the services it
names and what health hands out of each (``choose``). The answers are then built from them like
a service's (``dnsserver.servicenames`` in query mode), whenever one of those services or the
query changes, never per DNS query.

The chain is tried in order: the first step (the query's own service, then each failover)
whose instances, after the query's filters, include at least ``failover_min_healthy`` handed
out as healthy wins. When none has that many, the first step with any healthy instance answers,
else the query's own service as health leaves it (failing open, or nothing: NODATA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dnsdisc.health.handout import Member
from dnsdisc.policies.roles import IN
from dnsdisc.registry.model import WARNING, ServiceSettings
from dnsdisc.registry.queries import QueryDef, Step
from dnsdisc.registry.state import Service


@dataclass(frozen=True, slots=True)
class Chosen:
    """What a query answers with: the step (0: its own service; -1: no step's service
    exists), the settings its records are built with, and the members."""

    step: int
    settings: ServiceSettings
    members: list[Member]


def filtered(q: QueryDef, step: Step, members: list[Member]) -> list[Member]:
    """``members`` less those the query's filters leave out at ``step``."""
    meta = q.meta
    out = []
    for m in members:
        inst = m.instance
        if (step.include or step.exclude) and not step.matches(inst.tags):
            continue
        if meta and not all(pair in inst.meta for pair in meta):
            continue
        if q.only_passing and m.state.effective_status == WARNING:
            continue
        out.append(m)
    return out


def settings_for(q: QueryDef, base: ServiceSettings) -> ServiceSettings:
    """The settings a query's records are built with: the answering service's, under the
    query's name, with the query's overrides."""
    return replace(
        base,
        name=q.name,
        policy=q.policy if q.policy is not None else base.policy,
        max_answers=q.max_answers if q.max_answers is not None else base.max_answers,
        ttl=q.ttl if q.ttl is not None else base.ttl,
        locality=q.locality if q.locality is not None else base.locality,
    )


def choose(
    q: QueryDef,
    lookup: Callable[[str], Service | None],
    view: Callable[[Service], list[Member]],
) -> Chosen:
    """The step ``q`` answers from now, and its members (see the module's docstring)."""
    tried: list[tuple[int, Service, list[Member], int]] = []
    for n, step in enumerate(q.steps):
        svc = lookup(step.service)
        if svc is None:
            continue
        members = filtered(q, step, view(svc))
        healthy = sum(1 for m in members if m.role == IN)
        if healthy >= q.failover_min_healthy:
            return Chosen(n, settings_for(q, svc.settings), members)
        tried.append((n, svc, members, healthy))
    for n, svc, members, healthy in tried:
        if healthy:
            return Chosen(n, settings_for(q, svc.settings), members)
    if tried:
        n, svc, members, _ = tried[0]
        return Chosen(n, settings_for(q, svc.settings), members)
    return Chosen(-1, settings_for(q, ServiceSettings(q.name)), [])
