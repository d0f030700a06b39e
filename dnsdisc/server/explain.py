"""``GET /v1/services/{service}/explain``: the service's names built as the answer index builds
them, from the instances health hands out now, and the next answer to one client explained
(``dnsserver.explain``): each instance with the step that kept or removed it and its chance of
coming first and of being in the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dnsdisc.config.load import Config
from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.explain import explain
from dnsdisc.dnsserver.locality import ZoneMap
from dnsdisc.dnsserver.names import Naming
from dnsdisc.dnsserver.servicenames import build_service
from dnsdisc.dnsserver.zone import Zone
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.policies.roles import FALLBACK, OUT
from dnsdisc.registry.model import CRITICAL, MAINTENANCE
from dnsdisc.registry.registry import Registry

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
        config = self.config()
        domain = wire.text_to_wire(config.domain)
        naming = Naming(domain, config.ns_label)
        members = self.health.view(svc)
        names = build_service(naming, Zone(domain, b""), svc.settings, members)
        name = naming.tag(tag, service) if tag else naming.service(service)
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
        settings = svc.settings
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
            elif tag and tag not in inst.tags:
                reason = "tag"
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
            "service": service,
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
