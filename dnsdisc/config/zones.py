"""Zone files: ``zones/*.yaml`` -> static records and static services.

A zone file holds records (any type dnspython can parse except SOA and NS, which the server makes
itself) under an origin, and services whose instances never register themselves. Record values are
in zone-file presentation format, so relative names take the origin as in a BIND zone file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import yaml

from dnsdisc.config.parsers import check_keys, config_int
from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.zone import StaticRecord
from dnsdisc.errors import ConfigError, ValidationError
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.values import label

_FILE_KEYS = {"origin", "ttl", "records", "services"}
_RECORD_KEYS = {"name", "type", "value", "ttl"}
_SERVICE_KEYS = {
    "policy", "max_answers", "ttl", "meta", "instances",
    "locality", "locality_min_healthy", "sticky_prefix", "sticky_prefix_v6",
    "sequence", "srv_weights", "https", "dnssd",
}  # fmt: skip
_FORBIDDEN = {"SOA", "NS", "OPT", "ANY"}


@dataclass(slots=True)
class ZoneData:
    records: list[StaticRecord] = field(default_factory=list)
    # Origins other than the server's domain: we are authoritative for them too.
    apexes: list[bytes] = field(default_factory=list)
    services: list[tuple[ServiceSettings, list[Instance]]] = field(default_factory=list)


def load_dir(
    directory: Path, domain: str, defaults: ServiceSettings, *, required: bool = False
) -> ZoneData:
    out = ZoneData()
    if not directory.is_dir():
        if required:
            raise ConfigError(str(directory), "zones_dir", "expected an existing directory")
        return out
    seen_services: dict[str, str] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        load_file(path, domain, defaults, out, seen_services)
    _check_cname_exclusive(out.records)
    return out


def load_file(
    path: Path,
    domain: str,
    defaults: ServiceSettings,
    out: ZoneData,
    seen_services: dict[str, str] | None = None,
) -> None:
    source = str(path)
    seen = seen_services if seen_services is not None else {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(source, "(file)", f"cannot load: {exc}") from None
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, "(top level)", "expected a mapping with origin, ttl, records, services"
        )
    check_keys(data, _FILE_KEYS, source, "")
    domain_name = dns.name.from_text(domain)
    try:
        origin = (
            dns.name.from_text(str(data.get("origin", domain))) if "origin" in data else domain_name
        )
    except dns.exception.DNSException as exc:
        raise ConfigError(source, "origin", f"expected a domain name: {exc}") from None
    ttl = config_int(data.get("ttl", 300), source, "ttl", 0, 2**31 - 1)
    origin_wire = origin.canonicalize().to_wire()
    assert origin_wire is not None
    if origin != domain_name and origin_wire not in out.apexes:
        out.apexes.append(origin_wire)

    records = data.get("records") or []
    if not isinstance(records, list):
        raise ConfigError(source, "records", "expected a list of {name, type, value, ttl}")
    for n, rec in enumerate(records):
        out.records.append(_record(rec, origin, ttl, source, f"records[{n}]"))

    services = data.get("services") or {}
    if not isinstance(services, Mapping):
        raise ConfigError(source, "services", "expected a mapping of service name to settings")
    if services and origin != domain_name:
        raise ConfigError(
            source,
            "services",
            f"services belong to the server's domain {domain}; this file's origin is {origin}",
        )
    for name, body in services.items():
        key = f"services.{name}"
        try:
            svc = label(name, "service")
        except ValidationError as exc:
            raise ConfigError(source, key, exc.message) from None
        if svc in seen:
            raise ConfigError(source, key, f"service already defined in {seen[svc]}")
        seen[svc] = source
        out.services.append(_service(svc, body, defaults, source, key))


def _record(
    rec: object, origin: dns.name.Name, default_ttl: int, source: str, key: str
) -> StaticRecord:
    if not isinstance(rec, Mapping):
        raise ConfigError(source, key, "expected a mapping with name, type, value")
    check_keys(rec, _RECORD_KEYS, source, f"{key}.")
    for required in ("name", "type", "value"):
        if required not in rec:
            raise ConfigError(source, f"{key}.{required}", "is required")
    rtype_text = str(rec["type"]).upper()
    if rtype_text in _FORBIDDEN:
        raise ConfigError(
            source, f"{key}.type", f"{rtype_text} records are made by the server, not zone files"
        )
    try:
        rtype = dns.rdatatype.from_text(rtype_text)
        owner = dns.name.from_text(str(rec["name"]), origin)
        if not owner.is_subdomain(origin):
            raise ConfigError(source, f"{key}.name", f"{owner} is outside the origin {origin}")
        value = rec["value"]
        if rtype == dns.rdatatype.TXT and isinstance(value, list):
            value = " ".join(
                '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value
            )
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, rtype, str(value), origin=origin, relativize=False
        )
        raw = rdata.to_wire()
    except dns.exception.DNSException as exc:
        raise ConfigError(source, key, f"not a valid {rtype_text} record: {exc}") from None
    assert raw is not None
    if rtype == dns.rdatatype.CNAME:
        raw = raw.lower()  # the target is looked up in the index when the chain is followed
        if owner == origin:
            raise ConfigError(source, f"{key}.name", "a CNAME cannot stand at the zone's origin")
    owner_wire = owner.canonicalize().to_wire()
    assert owner_wire is not None
    ttl = config_int(rec.get("ttl", default_ttl), source, f"{key}.ttl", 0, 2**31 - 1)
    return StaticRecord(owner_wire, int(rtype), ttl, raw)


def _service(
    name: str, body: object, defaults: ServiceSettings, source: str, key: str
) -> tuple[ServiceSettings, list[Instance]]:
    if not isinstance(body, Mapping):
        raise ConfigError(source, key, "expected a mapping with instances and optional settings")
    check_keys(body, _SERVICE_KEYS, source, f"{key}.")
    settings_body = {k: v for k, v in body.items() if k != "instances"}
    try:
        settings = ServiceSettings.from_json(name, settings_body, defaults.with_name(name))
    except ValidationError as exc:
        raise ConfigError(source, f"{key}.{exc.field}", exc.message) from None
    instances_in = body.get("instances") or {}
    if not isinstance(instances_in, Mapping):
        raise ConfigError(
            source, f"{key}.instances", "expected a mapping of instance id to {address, port, ...}"
        )
    instances = []
    for iid, inst_body in instances_in.items():
        try:
            instances.append(Instance.from_json(name, iid, inst_body, static=True))
        except ValidationError as exc:
            raise ConfigError(source, f"{key}.instances.{iid}.{exc.field}", exc.message) from None
    return settings, instances


def _check_cname_exclusive(records: list[StaticRecord]) -> None:
    counts: Counter[bytes] = Counter(rec.owner for rec in records)
    aliases = {rec.owner: rec.rdata for rec in records if rec.rtype == wire.CNAME}
    for owner in aliases:
        if counts[owner] > 1:
            raise ConfigError(
                "zones",
                wire.wire_to_text(owner),
                "a CNAME cannot share its name with other records (or another CNAME)",
            )
        seen = {owner}
        target = aliases[owner]
        while target in aliases:
            if target in seen:
                raise ConfigError("zones", wire.wire_to_text(owner), "CNAME chain loops")
            seen.add(target)
            target = aliases[target]


def taken_service_names(records: list[StaticRecord], domain: str) -> dict[str, str]:
    """Service names whose DNS names a static record already holds, with the reason: a
    registration there would be acknowledged but never answered, so the registry refuses it."""
    apex = wire.text_to_wire(domain)
    taken: dict[str, str] = {}
    for rec in records:
        owner = rec.owner
        if owner == apex or not owner.endswith(apex) or not wire.is_subdomain(owner, apex):
            continue
        labels = wire.wire_to_text(owner)[: -len(domain) - 1].split(".")
        # <svc>.D, <x>.<svc>.D, or _<svc>._<proto>.D
        svc = labels[-1]
        if svc.startswith("_") and len(labels) >= 2 and labels[-2].startswith("_"):
            svc = labels[-2][1:]
        taken.setdefault(svc, f"a zone file defines {wire.wire_to_text(owner)}")
    return taken
