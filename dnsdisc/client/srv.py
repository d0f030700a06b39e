"""SRV lookups in RFC 2782 order: ``resolve`` (every target, by priority then weighted random)
and ``pick`` (the first). dnspython is imported on the first lookup, not with the client."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnsdisc.client.addresses import split_hostport
from dnsdisc.client.errors import ResolveError, reason_of
from dnsdisc.netaddr import DEFAULT_DNS, DEFAULT_DOMAIN
from dnsdisc.policies.balance import srv_order

if TYPE_CHECKING:  # imported lazily: the CLI's client commands need no dnspython
    from dns.message import Message

log = logging.getLogger(__name__)

_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class _SrvCandidate:
    """An SRV record as ``balance.srv_order`` sees a candidate."""

    weight: int
    priority: int
    load: float | None = None
    latency_ms: float | None = None


def _ask(qname: str, rdtype: str, host: str, port: int, timeout: float) -> Message:
    """One query to ``host:port``: UDP with EDNS, TCP when the reply is truncated."""
    import dns.exception
    import dns.message as dns_message
    import dns.query as dns_query

    query = dns_message.make_query(qname, rdtype, use_edns=0, payload=1232)
    try:
        reply, _ = dns_query.udp_with_fallback(query, host, port=port, timeout=timeout)
    except dns.exception.Timeout:
        raise ResolveError(
            f"no reply from {host}:{port} to {qname} {rdtype} in {timeout:g} s"
        ) from None
    except (OSError, dns.exception.DNSException) as exc:
        raise ResolveError(f"{qname} {rdtype} at {host}:{port}: {reason_of(exc)}") from None
    return reply


def _addresses(reply: Message) -> dict[str, list[str]]:
    """Target name -> its A addresses, then AAAA, from a reply's answer and additional
    sections."""
    import dns.rdatatype as rdatatype

    found: dict[str, list[str]] = {}
    for family in (rdatatype.A, rdatatype.AAAA):
        for rrset in (*reply.answer, *reply.additional):
            if rrset.rdtype == family:
                found.setdefault(rrset.name.to_text().lower(), []).extend(
                    rr.address for rr in rrset
                )
    return found


def resolve(
    service: str,
    dns: str = DEFAULT_DNS,
    domain: str = DEFAULT_DOMAIN,
    proto: str = "tcp",
    *,
    rng: random.Random | None = None,
    timeout: float = 3.0,
) -> list[tuple[str, int]]:
    """``(address, port)`` of each target of ``_<service>._<proto>.<domain>`` SRV, in RFC 2782
    order: priority ascending, weighted random within a priority (a new draw per call; pass a
    seeded ``rng`` to fix it). Addresses come from the reply's additional section, or from A then
    AAAA queries to the same server. ``dns`` is ``HOST:PORT`` of dnsdisc or of a resolver in
    front of it. An unknown service or one with nothing to hand out gives []; a failed query
    raises ``ResolveError``."""
    import dns.rcode as rcode
    import dns.rdatatype as rdatatype

    host, port = split_hostport(dns, 53)
    qname = f"_{service}._{proto}.{domain.rstrip('.')}."
    reply = _ask(qname, "SRV", host, port, timeout)
    if reply.rcode() == rcode.NXDOMAIN:
        return []
    if reply.rcode() != rcode.NOERROR:
        raise ResolveError(f"{qname} SRV at {host}:{port}: {rcode.to_text(reply.rcode())}")
    records: list[Any] = [
        rr
        for rrset in reply.answer
        if rrset.rdtype == rdatatype.SRV
        for rr in rrset
        if len(rr.target) > 1  # target "." means "no service here" (RFC 2782)
    ]
    candidates: Sequence[_SrvCandidate] = [_SrvCandidate(r.weight, r.priority) for r in records]
    known = _addresses(reply)
    out: list[tuple[str, int]] = []
    for i in srv_order(candidates, 0, rng or _RNG):
        target = records[i].target.to_text().lower()
        if target not in known:
            known[target] = []
            for rdtype in ("A", "AAAA"):
                looked = _addresses(_ask(target, rdtype, host, port, timeout)).get(target, [])
                if looked:
                    known[target] = looked
                    break
        if known[target]:
            out.append((known[target][0], int(records[i].port)))
        else:
            log.debug("SRV target %s of %s has no address; left out", target, qname)
    return out


def pick(
    service: str,
    dns: str = DEFAULT_DNS,
    domain: str = DEFAULT_DOMAIN,
    proto: str = "tcp",
    *,
    rng: random.Random | None = None,
    timeout: float = 3.0,
) -> tuple[str, int]:
    """The first of ``resolve()``: one instance chosen by priority and weight. ResolveError when
    there is none."""
    targets = resolve(service, dns, domain, proto, rng=rng, timeout=timeout)
    if not targets:
        raise ResolveError(
            f"no instance of {service!r} to pick: _{service}._{proto}.{domain.rstrip('.')}. "
            "has no SRV records"
        )
    return targets[0]
