"""Validated, immutable values: Instance and ServiceSettings.

Everything that enters the registry, from HTTP, a zone file or the store, goes through the
constructors here, so the rest of the program can trust the values it holds. Types are strict on
purpose: ``"80"``, ``true`` and ``NaN`` are not ports.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dnsdisc.balance import DEFAULT_POLICY, POLICIES
from dnsdisc.errors import ValidationError

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

MAX_TAGS = 32
MAX_META = 64
# A TXT character-string holds at most 255 bytes; each `key=value` pair must fit one.
MAX_META_PAIR = 255
MAX_LEASE = 86400.0
MAX_DNS_TTL = 86400

HEARTBEAT_FIELDS = ("load", "latency_ms")
INSTANCE_FIELDS = ("address", "port", "weight", "priority", "protocol", "tags", "meta", "ttl")
SERVICE_FIELDS = ("policy", "max_answers", "ttl", "meta")


def is_int(value: object) -> bool:
    # bool is a subclass of int in Python, but `true` is not a port.
    return isinstance(value, int) and not isinstance(value, bool)


def label(value: object, fld: str) -> str:
    """A DNS label as dnsdisc accepts it for names it owns: 1-63 of a-z, 0-9 and '-', not starting
    or ending with '-'. Case-insensitive; returned lower-case."""
    if not isinstance(value, str):
        raise ValidationError(fld, f"{fld} must be a string (a DNS label)")
    # ASCII first: str.lower() maps some non-ASCII letters (the Kelvin sign) onto ASCII ones.
    low = value.lower() if value.isascii() else ""
    if not _LABEL.fullmatch(low):
        raise ValidationError(
            fld,
            f"{fld} {value!r} is not a DNS label: 1-63 characters of a-z, 0-9 and '-', "
            "not starting or ending with '-'",
        )
    return low


def bounded_int(value: object, fld: str, lo: int, hi: int) -> int:
    if not is_int(value):
        raise ValidationError(fld, f"{fld} must be an integer from {lo} to {hi}")
    assert isinstance(value, int)
    if not lo <= value <= hi:
        raise ValidationError(fld, f"{fld} must be from {lo} to {hi}, got {value}")
    return value


def ip_address(value: object, fld: str = "address") -> str:
    if not isinstance(value, str):
        raise ValidationError(fld, f"{fld} must be a string holding an IPv4 or IPv6 address")
    if "%" in value:
        raise ValidationError(fld, f"{fld} {value!r}: scoped IPv6 addresses are not supported")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError(fld, f"{fld} {value!r} is not an IPv4 or IPv6 address") from None
    return str(addr)


def meta_map(value: object, fld: str = "meta") -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise ValidationError(fld, f"{fld} must be an object of string keys to string values")
    if len(value) > MAX_META:
        raise ValidationError(fld, f"{fld} may hold at most {MAX_META} keys")
    pairs = []
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise ValidationError(fld, f"{fld} keys and values must be strings")
        if not key or "=" in key or not key.isprintable():
            raise ValidationError(
                fld, f"{fld} key {key!r} must be non-empty printable text without '='"
            )
        if not val.isprintable():
            raise ValidationError(fld, f"{fld} value of {key!r} must be printable text")
        if len(f"{key}={val}".encode()) > MAX_META_PAIR:
            raise ValidationError(
                fld, f"{fld} entry {key!r}: 'key=value' must fit {MAX_META_PAIR} bytes"
            )
        pairs.append((key, val))
    return tuple(sorted(pairs))


def _lease(value: object, fld: str) -> float | None:
    if value is None:
        return None
    if not (is_int(value) or isinstance(value, float)):
        raise ValidationError(fld, f"{fld} must be a number of seconds or null")
    assert isinstance(value, (int, float))
    if not math.isfinite(value) or not 0 < value <= MAX_LEASE:
        raise ValidationError(
            fld, f"{fld} must be more than 0 and at most {int(MAX_LEASE)} seconds"
        )
    return float(value)


def _non_negative(value: object, fld: str) -> float | None:
    if value is None:
        return None
    if not (is_int(value) or isinstance(value, float)):
        raise ValidationError(fld, f"{fld} must be a non-negative number")
    assert isinstance(value, (int, float))
    if not math.isfinite(value) or value < 0:
        raise ValidationError(fld, f"{fld} must be a non-negative number")
    return float(value)


def heartbeat_report(body: object) -> tuple[float | None, float | None]:
    """(load, latency_ms) from a heartbeat body; both optional."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "the body must be a JSON object")
    _check_fields(body, HEARTBEAT_FIELDS)
    return _non_negative(body.get("load"), "load"), _non_negative(
        body.get("latency_ms"), "latency_ms"
    )


def _check_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise ValidationError(
                str(key), f"unknown field {key!r}; expected one of: {', '.join(allowed)}"
            )


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered endpoint of a service. Construct with ``Instance.from_json`` for input from
    outside; the plain constructor trusts its arguments (the store hands back validated rows)."""

    service: str
    id: str
    address: str
    port: int
    weight: int = 100
    priority: int = 0
    protocol: str = "tcp"
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    ttl: float | None = None
    static: bool = False

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.address

    @classmethod
    def from_json(
        cls, service: str, instance_id: str, body: object, *, static: bool = False
    ) -> Instance:
        service = label(service, "service")
        instance_id = label(instance_id, "id")
        if not isinstance(body, Mapping):
            raise ValidationError("body", "the body must be a JSON object")
        _check_fields(body, INSTANCE_FIELDS)
        for required in ("address", "port"):
            if required not in body:
                raise ValidationError(required, f"{required} is required")
        protocol = body.get("protocol", "tcp")
        if protocol not in ("tcp", "udp"):
            raise ValidationError("protocol", "protocol must be 'tcp' or 'udp'")
        tags_in = body.get("tags", [])
        if not isinstance(tags_in, list):
            raise ValidationError("tags", "tags must be a list of DNS labels")
        if len(tags_in) > MAX_TAGS:
            raise ValidationError("tags", f"at most {MAX_TAGS} tags")
        tags = tuple(dict.fromkeys(label(t, "tags") for t in tags_in))
        return cls(
            service=service,
            id=instance_id,
            address=ip_address(body["address"]),
            port=bounded_int(body["port"], "port", 1, 65535),
            weight=bounded_int(body.get("weight", 100), "weight", 0, 65535),
            priority=bounded_int(body.get("priority", 0), "priority", 0, 65535),
            protocol=protocol,
            tags=tags,
            meta=meta_map(body.get("meta", {})),
            ttl=_lease(body.get("ttl"), "ttl"),
            static=static,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "id": self.id,
            "address": self.address,
            "port": self.port,
            "weight": self.weight,
            "priority": self.priority,
            "protocol": self.protocol,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "ttl": self.ttl,
            "static": self.static,
        }

    def definition(self) -> dict[str, Any]:
        """The registration body that recreates this instance (what the store keeps)."""
        out = self.to_json()
        for key in ("service", "id", "static"):
            del out[key]
        return out


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Per-service settings: balancing policy, answer cap, DNS TTL and metadata."""

    name: str
    policy: str = DEFAULT_POLICY
    max_answers: int | None = None
    ttl: int = 5
    meta: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_json(
        cls, name: str, body: object, defaults: ServiceSettings | None = None
    ) -> ServiceSettings:
        """Missing keys take ``defaults`` (the config's service defaults): PUT replaces."""
        name = label(name, "service")
        if not isinstance(body, Mapping):
            raise ValidationError("body", "the body must be a JSON object")
        _check_fields(body, SERVICE_FIELDS)
        base = defaults or cls(name)
        policy = body.get("policy", base.policy)
        if not isinstance(policy, str) or policy not in POLICIES:
            raise ValidationError("policy", f"policy must be one of: {', '.join(sorted(POLICIES))}")
        max_answers = body.get("max_answers", base.max_answers)
        if max_answers is not None:
            max_answers = bounded_int(max_answers, "max_answers", 1, 1000)
        ttl = bounded_int(body.get("ttl", base.ttl), "ttl", 0, MAX_DNS_TTL)
        meta = meta_map(body["meta"]) if "meta" in body else base.meta
        return cls(name=name, policy=policy, max_answers=max_answers, ttl=ttl, meta=meta)

    def with_name(self, name: str) -> ServiceSettings:
        return ServiceSettings(name, self.policy, self.max_answers, self.ttl, self.meta)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "policy": self.policy,
            "max_answers": self.max_answers,
            "ttl": self.ttl,
            "meta": dict(self.meta),
        }
