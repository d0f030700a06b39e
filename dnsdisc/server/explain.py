"""``GET /v1/services/{service}/explain`` and ``GET /v1/queries/{name}/explain``: the names
built as the answer index builds them, from the instances health hands out now, and the next
answer to one client explained (``dnsserver.explain``): each instance with the step that kept or
removed it and its chance of coming first and of being in the answer; for a query, also which
step of its chain answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dnsdisc.config.load import Config
from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.explain import explain
from dnsdisc.dnsserver.locality import ZoneMap
from dnsdisc.dnsserver.names import Naming
from dnsdisc.dnsserver.servicenames import ServiceNames, build_service
from dnsdisc.dnsserver.zone import Zone
from dnsdisc.health.handout import Member
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.health.queries import choose, filtered
from dnsdisc.policies.roles import FALLBACK, IN, OUT
from dnsdisc.registry.model import CRITICAL, MAINTENANCE, Instance
from dnsdisc.registry.queries import QueryDef
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.state import Service

TYPES = {"A": wire.A, "AAAA": wire.AAAA, "SRV": wire.SRV}


class Explainer:
    def __init__(
        self, registry: Registry, health: HealthMonitor, config: Callable[[], Config]
    ) -> None:
        self.registry = registry
        self.health = health
        self.config = config  # the config in force (a reload replaces it)

    def __call__(
        self, service: str, rtype: str, client: bytes, prefix: int, tag: str | None
    ) -> dict[str, Any]:
        """Explain the next ``rtype`` answer for ``service`` (its ``tag`` name if given) to a
        client at ``client`` (packed; b"": unknown) with ECS source ``prefix`` (-1: none)."""
        svc = self.registry.service(service)
        naming, zone = self._naming()
        members = self.health.view(svc)
        names = build_service(naming, zone, svc.settings, members)
        name = naming.tag(tag, service) if tag else naming.service(service)

        def kept(inst: Instance) -> bool:
            return not tag or tag in inst.tags

        out = self._explain(svc, members, names, name, rtype, client, prefix, kept, "tag")
        return {"service": service, **out}

    def query(self, q: QueryDef, rtype: str, client: bytes, prefix: int) -> dict[str, Any]:
        """Explain the next ``rtype`` answer of the named query ``q``: which step of its chain
        answers and why, and that step's instances as for a service."""
        chosen = choose(q, self.registry.get, self.health.view)
        naming, zone = self._naming()
        names = build_service(naming, zone, chosen.settings, chosen.members, query=True)
        chain = []
        for n, step in enumerate(q.steps):
            svc = self.registry.get(step.service)
            members = filtered(q, step, self.health.view(svc)) if svc is not None else []
            chain.append({
                "step": n,
                "service": step.service,
                "tags": step.tags_json(),
                "exists": svc is not None,
                "healthy": sum(1 for m in members if m.role == IN),
                "answers": n == chosen.step,
            })  # fmt: skip
        out: dict[str, Any] = {"query": q.name, "step": chosen.step, "chain": chain}
        if chosen.step < 0:
            return {**out, "name": wire.wire_to_text(naming.query(q.name)), "instances": []}
        step = q.steps[chosen.step]
        svc = self.registry.service(step.service)
        ids = {m.instance.id for m in chosen.members}

        def kept(inst: Instance) -> bool:
            return inst.id in ids

        found = self._explain(
            svc, self.health.view(svc), names, naming.query(q.name), rtype, client, prefix,
            kept, "query filter",
        )  # fmt: skip
        return {**out, "service": step.service, **found}

    def _naming(self) -> tuple[Naming, Zone]:
        config = self.config()
        domain = wire.text_to_wire(config.domain)
        return Naming(domain, config.ns_label), Zone(domain, b"")

    def _explain(
        self,
        svc: Service,
        members: list[Member],
        names: ServiceNames,
        name: bytes,
        rtype: str,
        client: bytes,
        prefix: int,
        kept: Callable[[Instance], bool],
        filtered_out: str,
    ) -> dict[str, Any]:
        config = self.config()
        node = names.nodes.get(name)
        rrset = node.rrsets.get(TYPES[rtype]) if node is not None else None
        zones = ZoneMap(config.locality_networks)
        cap = config.udp_answer_limit or None
        shares = explain(rrset, zones, client, prefix, cap) if rrset is not None else None
        index = {}
        if rrset is not None:
            for i, item in enumerate(rrset.members):
                if item.live is not None:
                    index[item.live.instance.id] = i
        roles = {m.instance.id: m for m in members}
        settings = names.settings
        rows = []
        for iid, state in sorted(svc.instances.items()):
            inst = state.instance
            member = roles.get(iid)
            at = index.get(iid)
            p_first = p_in = 0.0
            reason: str | None = None
            if member is None or member.role == OUT:
                status = state.effective_status
                reason = (
                    "maintenance" if status == MAINTENANCE
                    else "critical" if status == CRITICAL
                    else "flapping"
                )  # fmt: skip
            elif not kept(inst):
                reason = filtered_out
            elif rtype != "SRV" and inst.is_ipv6 != (rtype == "AAAA"):
                reason = "address family"
            elif at is None:
                reason = "drained"  # weight 0 while others are active
            elif shares is not None and at not in shares.answering:
                reason = "zone"
            elif shares is not None:
                p_first, p_in = shares.first[at], shares.present[at]
                if p_in == 0:
                    reason = "policy"  # a lower priority tier, or cut by max_answers
            rows.append({
                "id": iid,
                "address": inst.address,
                "zone": inst.zone,
                "weight": inst.weight,
                "handed_out_weight": member.weight if member is not None else 0,
                "included": reason is None,
                "reason": reason,
                "fail_open": member is not None and member.role == FALLBACK,
                "p_first": round(p_first, 6),
                "p_in_answer": round(p_in, 6),
            })  # fmt: skip
        return {
            "name": wire.wire_to_text(name),
            "type": rtype,
            "policy": "srv_order (RFC 2782)" if rtype == "SRV" else settings.policy,
            "sequence": settings.sequence,
            "locality": settings.locality,
            "max_answers": settings.max_answers,
            "ttl": settings.ttl,
            "client_zone": shares.zone if shares is not None else None,
            "ecs_scope": shares.scope if shares is not None and prefix >= 0 else None,
            "method": shares.method if shares is not None else "exact",
            "error_bound": shares.error if shares is not None else 0.0,
            "instances": rows,
        }
