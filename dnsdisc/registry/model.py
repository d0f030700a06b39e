"""Validated, immutable values: Instance (with its CheckSpec, in ``checks``), ServiceSettings,
HeartbeatReport, and the health statuses.

Everything that enters the registry, from HTTP, a zone file or the store, goes through the
constructors here, so the rest of the program can trust the values it holds. Types are strict on
purpose: ``"80"``, ``true`` and ``NaN`` are not ports.
"""

from __future__ import annotations

import binascii
import math
from base64 import b64decode, b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dnsdisc.errors import ValidationError
from dnsdisc.policies import locality
from dnsdisc.policies.balance import DEFAULT_POLICY, POLICIES
from dnsdisc.registry.checks import CHECK_FIELDS, CheckSpec, parse_checks
from dnsdisc.values import (
    MAX_SECONDS,
    as_float,
    bounded_int,
    endpoint_address,
    is_int,
    label,
    seconds,
)

MAX_TAGS = 32
MAX_META = 64
# A TXT character-string holds at most 255 bytes; each `key=value` pair must fit one.
MAX_META_PAIR = 255
MAX_LEASE = MAX_SECONDS
MAX_DNS_TTL = 86400

HEARTBEAT_FIELDS = ("status", "load", "latency_ms")
INSTANCE_FIELDS = (
    "address",
    "port",
    "weight",
    "priority",
    "protocol",
    "tags",
    "meta",
    "ttl",
    "check",
    "checks",
    "deregister_after",
    "zone",
)
SERVICE_FIELDS = (
    "policy",
    "max_answers",
    "ttl",
    "meta",
    "deregister_after",
    "panic_threshold",
    "slow_start",
    "locality",
    "locality_min_healthy",
    "sticky_prefix",
    "sticky_prefix_v6",
    "sequence",
    "srv_weights",
    "https",
    "dnssd",
)
# Service setting ``https`` (RFC 9460 SvcParams of the HTTPS records; see HttpsSettings).
HTTPS_FIELDS = ("alpn", "no_default_alpn", "port", "ech")
# ALPN protocol ids per record: a handful are registered for HTTP (http/1.1, h2, h3).
MAX_ALPN = 16
# An ECHConfigList is a few hundred bytes; bounded so that an HTTPS record (which repeats it
# for every instance) stays far below what a reply can hold.
MAX_ECH = 1024
# Service setting ``sequence``: how successive answers to one requester are drawn (see
# dnsserver/smooth.py); ``srv_weights``: the SRV weights as registered or scaled to 65535.
SEQUENCES = ("smooth", "random")
SRV_WEIGHTS = ("registered", "scaled")
# Service setting ``locality``: what a client whose zone is known gets (see dnsserver/locality).
LOCALITY_MODES = locality.MODES
# Health states. maintenance is set over HTTP, the others by leases, checks and heartbeats.
PASSING, WARNING, CRITICAL, MAINTENANCE = "passing", "warning", "critical", "maintenance"
REPORTABLE = (PASSING, WARNING, CRITICAL)


def known_fields(body: object, allowed: tuple[str, ...]) -> object:
    """A value read from a shared store without the fields this version does not know: during
    a rolling upgrade a newer node may write them, and the rest still describes the object.
    (Over HTTP an unknown field stays a 400: there it is a client's mistake.)"""
    if not isinstance(body, Mapping):
        return body
    out = {k: v for k, v in body.items() if k in allowed}
    if allowed is INSTANCE_FIELDS:
        if isinstance(out.get("check"), Mapping):
            out["check"] = {k: v for k, v in out["check"].items() if k in CHECK_FIELDS}
        if isinstance(out.get("checks"), list):
            out["checks"] = [
                {k: v for k, v in c.items() if k in CHECK_FIELDS} if isinstance(c, Mapping) else c
                for c in out["checks"]
            ]
    return out


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
    return None if value is None else seconds(value, fld)


def _check_field_errors(exc: ValidationError) -> ValidationError:
    # Errors inside a check object name the top-level key, as every API error does.
    top = "checks" if exc.field.startswith("checks") else "check"
    return ValidationError(top, exc.message)


def _non_negative(value: object, fld: str) -> float | None:
    if value is None:
        return None
    if not (is_int(value) or isinstance(value, float)):
        raise ValidationError(fld, f"{fld} must be a non-negative number")
    number = as_float(value, fld)
    if not math.isfinite(number) or number < 0:
        raise ValidationError(fld, f"{fld} must be a non-negative number")
    return number


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    status: str | None = None
    load: float | None = None
    latency_ms: float | None = None

    @classmethod
    def from_json(cls, body: object) -> HeartbeatReport:
        """Every field optional: an empty body only renews the lease."""
        if not isinstance(body, Mapping):
            raise ValidationError("body", "the body must be a JSON object")
        check_fields(body, HEARTBEAT_FIELDS)
        status = body.get("status")
        if status is not None and status not in REPORTABLE:
            raise ValidationError("status", f"status must be one of: {', '.join(REPORTABLE)}")
        return cls(
            status,
            _non_negative(body.get("load"), "load"),
            _non_negative(body.get("latency_ms"), "latency_ms"),
        )


def check_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
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
    # Its active checks (``check`` in a body is one; ``checks``, several, each with an id).
    checks: tuple[CheckSpec, ...] = ()
    deregister_after: float | None = None
    static: bool = False
    # The locality zone it runs in (a DNS label; ``locality.networks`` places the clients).
    zone: str | None = None

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.address

    @property
    def check(self) -> CheckSpec | None:
        """Its first active check (what the one-check form ``check`` holds)."""
        return self.checks[0] if self.checks else None

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to every DNS worker, every instance at start-up: positional arguments, because
        # the dataclass default looks up the fields per object, which is much slower.
        return (
            Instance,
            (
                self.service,
                self.id,
                self.address,
                self.port,
                self.weight,
                self.priority,
                self.protocol,
                self.tags,
                self.meta,
                self.ttl,
                self.checks,
                self.deregister_after,
                self.static,
                self.zone,
            ),
        )

    @classmethod
    def from_json(
        cls, service: str, instance_id: str, body: object, *, static: bool = False
    ) -> Instance:
        service = label(service, "service")
        instance_id = label(instance_id, "id")
        if not isinstance(body, Mapping):
            raise ValidationError("body", "the body must be a JSON object")
        check_fields(body, INSTANCE_FIELDS)
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
        try:
            checks = parse_checks(body)
        except ValidationError as exc:
            raise _check_field_errors(exc) from None
        for check in checks:
            if (
                check.type == "alias"
                and check.alias_service == service
                and (check.alias_instance in (None, instance_id))
            ):
                # It would wait on itself: critical until the first pass, which never comes.
                raise ValidationError(
                    "checks" if len(checks) > 1 else "check",
                    "an alias check cannot name its own instance or its own service",
                )
        return cls(
            service=service,
            id=instance_id,
            address=endpoint_address(body["address"]),
            port=bounded_int(body["port"], "port", 1, 65535),
            weight=bounded_int(body.get("weight", 100), "weight", 0, 65535),
            priority=bounded_int(body.get("priority", 0), "priority", 0, 65535),
            protocol=protocol,
            tags=tags,
            meta=meta_map(body.get("meta", {})),
            ttl=_lease(body.get("ttl"), "ttl"),
            checks=checks,
            deregister_after=_lease(body.get("deregister_after"), "deregister_after"),
            static=static,
            zone=None if body.get("zone") is None else label(body["zone"], "zone"),
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
            "check": self.checks[0].to_json() if len(self.checks) == 1 else None,
            "checks": [c.to_json() for c in self.checks],
            "deregister_after": self.deregister_after,
            "static": self.static,
            "zone": self.zone,
        }

    def definition(self) -> dict[str, Any]:
        """The registration body that recreates this instance (what the store keeps): one
        check as ``check`` (which every version reads), several as ``checks``."""
        out = self.to_json()
        for key in ("service", "id", "static"):
            del out[key]
        if len(self.checks) == 1 and not self.checks[0].id:
            del out["checks"]
        else:
            del out["check"]
        return out


@dataclass(frozen=True, slots=True)
class HttpsSettings:
    """Service setting ``https``: the SvcParams of the service's HTTPS records (RFC 9460)
    beside what each instance brings (TargetName, port, address hints). ``port`` None: each
    instance's registered port; ``ech``: an ECHConfigList, as bytes."""

    alpn: tuple[str, ...] = ()
    no_default_alpn: bool = False
    port: int | None = None
    ech: bytes | None = None

    @classmethod
    def from_json(cls, value: object) -> HttpsSettings | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValidationError("https", "https must be an object (alpn, port, ...) or null")
        for key in value:
            if key not in HTTPS_FIELDS:
                raise ValidationError(
                    f"https.{key}",
                    f"unknown field https.{key}; expected one of: {', '.join(HTTPS_FIELDS)}",
                )
        alpn = _alpn(value.get("alpn", []))
        no_default = value.get("no_default_alpn", False)
        if not isinstance(no_default, bool):
            raise ValidationError(
                "https.no_default_alpn", "https.no_default_alpn must be a boolean"
            )
        if no_default and not alpn:
            # RFC 9460 7.1.1: a record with no-default-alpn and no alpn offers no protocol.
            raise ValidationError(
                "https.no_default_alpn", "https.no_default_alpn needs a non-empty https.alpn"
            )
        port = value.get("port")
        if port is not None:
            port = bounded_int(port, "https.port", 1, 65535)
        return cls(alpn, no_default, port, _ech(value.get("ech")))

    def to_json(self) -> dict[str, Any]:
        return {
            "alpn": list(self.alpn),
            "no_default_alpn": self.no_default_alpn,
            "port": self.port,
            "ech": b64encode(self.ech).decode() if self.ech is not None else None,
        }


def _alpn(value: object) -> tuple[str, ...]:
    fld = "https.alpn"
    if not isinstance(value, list) or len(value) > MAX_ALPN:
        raise ValidationError(fld, f"{fld} must be a list of at most {MAX_ALPN} protocol ids")
    out: list[str] = []
    for proto in value:
        # ALPN ids are opaque bytes on the wire (RFC 7301), but every registered one is short
        # printable ASCII; commas and backslashes would need the escaping of RFC 9460 A.1 in
        # every tool that shows the record, so they are refused rather than carried.
        if (
            not isinstance(proto, str)
            or not 1 <= len(proto) <= 255
            or not proto.isascii()
            or not proto.isprintable()
            or any(c in proto for c in ' ,\\"')
        ):
            raise ValidationError(
                fld,
                f"{fld} entry {proto!r} is not a protocol id such as h2, h3 or http/1.1 "
                "(1-255 printable ASCII characters, no space, comma, quote or backslash)",
            )
        if proto in out:
            raise ValidationError(fld, f"{fld} lists {proto!r} twice")
        out.append(proto)
    return tuple(out)


def _ech(value: object) -> bytes | None:
    fld = "https.ech"
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        raw = b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise ValidationError(fld, f"{fld} must be an ECHConfigList in base64") from None
    # An ECHConfigList: a 2-byte length of the rest, which holds at least one ECHConfig of at
    # least 4 bytes (RFC 9849 section 4), as dnspython checks too.
    if not 6 <= len(raw) <= MAX_ECH or int.from_bytes(raw[:2]) != len(raw) - 2:
        raise ValidationError(
            fld,
            f"{fld} must be an ECHConfigList (a 2-byte length, then that many bytes, 4 or "
            f"more) of at most {MAX_ECH} bytes, in base64",
        )
    return raw


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Per-service settings: balancing policy, answer cap, DNS TTL and metadata."""

    name: str
    policy: str = DEFAULT_POLICY
    max_answers: int | None = None
    ttl: int = 5
    meta: tuple[tuple[str, str], ...] = field(default=())
    # Health: remove instances critical this long; fail open below this healthy share; ramp a
    # recovered instance's weight up over this many seconds.
    deregister_after: float | None = None
    panic_threshold: float | None = None
    slow_start: float = 0.0
    # Answers by the client's zone (LOCALITY_MODES): ``prefer`` while the zone has at least
    # ``locality_min_healthy`` instances handed out. ``sticky_prefix``/``_v6``: the client subnet
    # the ``consistent`` policy hashes.
    locality: str = "off"
    locality_min_healthy: int = 1
    sticky_prefix: int = 24
    sticky_prefix_v6: int = 56
    sequence: str = "random"
    srv_weights: str = "registered"
    # HTTPS records at the service's names (None: none); DNS-SD browsing (RFC 6763) of its
    # instances. DNS-SD is off by default: it lists the service to anyone who asks the DNS port.
    https: HttpsSettings | None = None
    dnssd: bool = False

    @classmethod
    def from_json(
        cls, name: str, body: object, defaults: ServiceSettings | None = None
    ) -> ServiceSettings:
        """Missing keys take ``defaults`` (the config's service defaults): PUT replaces."""
        name = label(name, "service")
        if not isinstance(body, Mapping):
            raise ValidationError("body", "the body must be a JSON object")
        check_fields(body, SERVICE_FIELDS)
        base = defaults or cls(name)
        policy = body.get("policy", base.policy)
        if not isinstance(policy, str) or policy not in POLICIES:
            raise ValidationError("policy", f"policy must be one of: {', '.join(sorted(POLICIES))}")
        max_answers = body.get("max_answers", base.max_answers)
        if max_answers is not None:
            max_answers = bounded_int(max_answers, "max_answers", 1, 1000)
        ttl = bounded_int(body.get("ttl", base.ttl), "ttl", 0, MAX_DNS_TTL)
        meta = meta_map(body["meta"]) if "meta" in body else base.meta
        deregister_after = (
            _lease(body["deregister_after"], "deregister_after")
            if "deregister_after" in body
            else base.deregister_after
        )
        panic = body.get("panic_threshold", base.panic_threshold)
        if panic is not None:
            if not (is_int(panic) or isinstance(panic, float)) or not 0 <= panic <= 1:
                raise ValidationError(
                    "panic_threshold", "panic_threshold must be a number from 0 to 1, or null"
                )
            panic = float(panic)
        slow_start = body.get("slow_start", base.slow_start)
        if slow_start != 0:
            slow_start = seconds(slow_start, "slow_start", 0, 3600)
        locality = body.get("locality", base.locality)
        if locality is False:
            locality = "off"  # YAML reads a bare ``off`` as false
        if not isinstance(locality, str) or locality not in LOCALITY_MODES:
            raise ValidationError(
                "locality", f"locality must be one of: {', '.join(LOCALITY_MODES)}"
            )
        sequence = body.get("sequence", base.sequence)
        if not isinstance(sequence, str) or sequence not in SEQUENCES:
            raise ValidationError("sequence", f"sequence must be one of: {', '.join(SEQUENCES)}")
        srv_weights = body.get("srv_weights", base.srv_weights)
        if not isinstance(srv_weights, str) or srv_weights not in SRV_WEIGHTS:
            raise ValidationError(
                "srv_weights", f"srv_weights must be one of: {', '.join(SRV_WEIGHTS)}"
            )
        https = HttpsSettings.from_json(body["https"]) if "https" in body else base.https
        dnssd = body.get("dnssd", base.dnssd)
        if not isinstance(dnssd, bool):
            raise ValidationError("dnssd", "dnssd must be a boolean")
        return cls(
            name=name,
            policy=policy,
            max_answers=max_answers,
            ttl=ttl,
            meta=meta,
            deregister_after=deregister_after,
            panic_threshold=panic,
            slow_start=float(slow_start),
            locality=locality,
            locality_min_healthy=bounded_int(
                body.get("locality_min_healthy", base.locality_min_healthy),
                "locality_min_healthy",
                1,
                65535,
            ),
            sticky_prefix=bounded_int(
                body.get("sticky_prefix", base.sticky_prefix), "sticky_prefix", 0, 32
            ),
            sticky_prefix_v6=bounded_int(
                body.get("sticky_prefix_v6", base.sticky_prefix_v6), "sticky_prefix_v6", 0, 128
            ),
            sequence=sequence,
            srv_weights=srv_weights,
            https=https,
            dnssd=dnssd,
        )

    def with_name(self, name: str) -> ServiceSettings:
        return replace(self, name=name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "policy": self.policy,
            "max_answers": self.max_answers,
            "ttl": self.ttl,
            "meta": dict(self.meta),
            "deregister_after": self.deregister_after,
            "panic_threshold": self.panic_threshold,
            "slow_start": self.slow_start,
            "locality": self.locality,
            "locality_min_healthy": self.locality_min_healthy,
            "sticky_prefix": self.sticky_prefix,
            "sticky_prefix_v6": self.sticky_prefix_v6,
            "sequence": self.sequence,
            "srv_weights": self.srv_weights,
            "https": self.https.to_json() if self.https is not None else None,
            "dnssd": self.dnssd,
        }


def maintenance_reason(body: object) -> str | None:
    """``{"enabled": true, "reason": "..."}``: the reason to take an instance out of the
    answers with ("maintenance" when none is given), or None to put it back."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "the body must be a JSON object")
    check_fields(body, ("enabled", "reason"))
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise ValidationError("enabled", "enabled must be true or false")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 256 or not reason.isprintable():
        raise ValidationError("reason", "reason must be printable text of at most 256 characters")
    return (reason or "maintenance") if enabled else None
