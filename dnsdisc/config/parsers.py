"""Parsers of config values, one per kind of value. Each takes the value and where it was read
(``At``) and returns the value in its one spelling, or raises ConfigError naming the file and the
key. schema.py says which key takes which parser."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from dnsdisc.config.cpus import MAX_WORKERS, auto_workers
from dnsdisc.dnsserver.settings import TSIG_ALGORITHMS, TsigKey
from dnsdisc.errors import ConfigError, ValidationError
from dnsdisc.health.settings import Protection
from dnsdisc.netaddr import HostPort, NetRules, parse_hostport
from dnsdisc.registry.model import ServiceSettings
from dnsdisc.registry.queries import QueryDef
from dnsdisc.values import bounded_int, ip_address, label, seconds

MAX_DOMAIN_WIRE = 125


class Parsed(Protocol):
    """The config as parsed before the key at hand (keys are read in the schema's order):
    ``services`` start from ``defaults``."""

    @property
    def defaults(self) -> ServiceSettings: ...


@dataclass(frozen=True, slots=True)
class At:
    """Where a value was read: ``source`` the file ("" for the command line and the environment),
    ``key`` as its author spelled it (``dns.listen``, ``--dns``, ``DNSDISC_TOKEN``), ``config``
    what was parsed before it, ``base_dir`` the directory relative paths in the file start from."""

    source: str
    key: str
    config: Parsed
    base_dir: Path | None = None

    def error(self, expected: str) -> ConfigError:
        return ConfigError(self.source, self.key, expected)

    def to(self, key: str) -> At:
        return replace(self, key=key)


def mapping(value: object, at: At) -> Mapping[str, Any]:
    """A section: a mapping of keys to values; an empty one (``dns:``) holds no keys."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise at.error("expected a mapping of keys to values")
    return value


def check_keys(data: Mapping[str, Any], allowed: Collection[str], source: str, prefix: str) -> None:
    """No key but the ``allowed`` ones (the config's: those the schema declares in the section)."""
    for key in data:
        if key not in allowed:
            raise ConfigError(
                source,
                f"{prefix}{key}",
                f"unknown key; expected one of: {', '.join(sorted(allowed))}",
            )


def config_int(value: object, source: str, key: str, lo: int, hi: int) -> int:
    try:
        return bounded_int(value, key, lo, hi)
    except ValidationError as exc:
        raise ConfigError(source, key, exc.message) from None


def integer(lo: int, hi: int) -> Callable[[object, At], int]:
    """An integer from ``lo`` to ``hi``."""

    def parse(value: object, at: At) -> int:
        return config_int(value, at.source, at.key, lo, hi)

    return parse


def whole_seconds(lo: int, hi: int) -> Callable[[object, At], float]:
    """A whole number of seconds from ``lo`` to ``hi``."""

    def parse(value: object, at: At) -> float:
        return float(config_int(value, at.source, at.key, lo, hi))

    return parse


def duration(lo: float, hi: float) -> Callable[[object, At], float]:
    """A number of seconds, more than ``lo`` and at most ``hi``."""

    def parse(value: object, at: At) -> float:
        try:
            return seconds(value, at.key, lo, hi)
        except ValidationError as exc:
            raise at.error(exc.message) from None

    return parse


def one_of(choices: tuple[str, ...]) -> Callable[[object, At], str]:
    """One of ``choices``, spelled as listed."""

    def parse(value: object, at: At) -> str:
        if value not in choices:
            raise at.error(f"expected one of: {', '.join(choices)}")
        assert isinstance(value, str)
        return value

    return parse


def boolean(value: object, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.error("expected true or false")
    return value


def text(value: object, at: At) -> str:
    if not isinstance(value, str) or not value:
        raise at.error("expected a non-empty string")
    return value


def secret16(value: object, at: At) -> bytes:
    """16 bytes written as 32 hex digits (a cookie secret, as RFC 9018's examples write one)."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise at.error("expected 32 hex digits (16 bytes), e.g. from: openssl rand -hex 16")
    return raw


def host_names(value: object, at: At) -> tuple[str, ...]:
    """A list of host names (what a request's Host header may say), lower-cased."""
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v.strip() and " " not in v.strip() for v in value
    ):
        raise at.error("expected a list of host names, e.g. [dnsdisc.example.com, localhost]")
    return tuple(v.strip().lower().rstrip(".") for v in value)


def optional_text(value: object, at: At) -> str | None:
    """A non-empty string, or null for none."""
    return None if value is None else text(value, at)


def dns_label(value: object, at: At) -> str:
    try:
        return label(value, at.key)
    except ValidationError as exc:
        raise at.error(exc.message) from None


def domain(value: object, at: At) -> str:
    """A domain as 'a.b.' : labels lower-cased, trailing dot added."""
    if not isinstance(value, str) or not value.strip("."):
        raise at.error("expected a domain name such as svc.internal")
    labels = value.rstrip(".").split(".")
    try:
        for lab in labels:
            label(lab, at.key)
    except ValidationError as exc:
        raise at.error(f"expected a domain name of DNS labels: {exc.message}") from None
    name = ".".join(lab.lower() for lab in labels) + "."
    # Generated names such as _<63 chars>._<63 chars>.<domain> must fit DNS's 255 octets.
    if len(name) + 1 > MAX_DOMAIN_WIRE:
        raise at.error(f"expected a domain of at most {MAX_DOMAIN_WIRE - 2} characters")
    return name


def reverse_zones(value: object, at: At) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise at.error("expected a list of names like 10.in-addr.arpa")
    zones = []
    for zone in value:
        name = domain(zone, at)
        if not name.endswith(("in-addr.arpa.", "ip6.arpa.")):
            raise at.error(f"{zone!r} is not under in-addr.arpa or ip6.arpa")
        zones.append(name)
    return tuple(zones)


def ip_addresses(value: object, at: At) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise at.error("expected a list of IP addresses")
    try:
        return tuple(ip_address(a, at.key) for a in value)
    except ValidationError as exc:
        raise at.error(exc.message) from None


def networks(value: object, at: At) -> NetRules:
    """A list of networks (``10.0.0.0/8``) or addresses (one-address networks), ``!`` refusing,
    the first match deciding; empty refuses everyone."""
    if not isinstance(value, list):
        raise at.error("expected a list of networks like 10.0.0.0/8")
    return NetRules.parse([str(x) for x in value], at.source, at.key)


def zone_networks(value: object, at: At) -> tuple[tuple[str, str], ...]:
    """``locality.networks``: zone name (a DNS label) -> list of networks (``10.1.0.0/16``, an
    address for one); networks may overlap (the most specific wins) but not repeat."""
    seen: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for zone, nets in mapping(value, at).items():
        where = at.to(f"{at.key}.{zone}")
        try:
            name = label(zone, "zone")
        except ValidationError as exc:
            raise where.error(exc.message) from None
        if not isinstance(nets, list):
            raise where.error("expected a list of networks like 10.1.0.0/16")
        for text in nets:
            try:
                net = ipaddress.ip_network(str(text), strict=True)
            except ValueError as exc:
                raise where.error(f"{text!r} is not a network like 10.1.0.0/16: {exc}") from None
            other = seen.setdefault(str(net), name)
            if other != name or (str(net), name) in out:
                raise where.error(f"network {net} is listed twice (zone {other})")
            out.append((name, str(net)))
    return tuple(out)


def tsig_keys(value: object, at: At) -> tuple[TsigKey, ...]:
    """``transfer.tsig_keys``: key name -> ``{algorithm: hmac-sha256, secret: BASE64}``."""
    out = []
    for name, spec in mapping(value, at).items():
        where = at.to(f"{at.key}.{name}")
        key_name = domain(str(name), where).rstrip(".")
        body = mapping(spec, where)
        check_keys(body, ("algorithm", "secret"), at.source, f"{at.key}.{name}")
        algorithm = body.get("algorithm", "hmac-sha256")
        if algorithm not in TSIG_ALGORITHMS:
            raise where.to(f"{at.key}.{name}.algorithm").error(
                f"expected one of {', '.join(TSIG_ALGORITHMS)}"
            )
        secret = body.get("secret")
        try:
            raw = base64.b64decode(str(secret), validate=True) if secret else b""
        except ValueError:
            raw = b""
        if len(raw) < 16:
            raise where.to(f"{at.key}.{name}.secret").error(
                "expected the key's secret in base64, at least 16 bytes (e.g. from "
                "`tsig-keygen` or `openssl rand -base64 32`)"
            )
        out.append(TsigKey(key_name, str(algorithm), raw))
    return tuple(out)


def optional_domain(value: object, at: At) -> str | None:
    """A domain (see ``domain``), or nothing (null, "")."""
    return None if value in (None, "") else domain(value, at)


def hostport(value: object, at: At) -> HostPort:
    return parse_hostport(value, at.source, at.key)


def listen_addresses(value: object, at: At) -> tuple[HostPort, ...]:
    """One HOST:PORT or a list of them, at least one."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise at.error("expected at least one HOST:PORT")
    return tuple(hostport(x, at) for x in items)


def upstreams(value: object, at: At) -> tuple[HostPort, ...]:
    if not isinstance(value, list):
        raise at.error("expected a list of HOST:PORT upstream servers")
    return tuple(hostport(x, at) for x in value)


def _path(value: object, at: At, expected: str) -> Path:
    if not isinstance(value, str) or not value:
        raise at.error(expected)
    path = Path(value).expanduser()
    # Relative paths in a file are relative to the file, not to wherever the server starts.
    return path if path.is_absolute() or at.base_dir is None else at.base_dir / path


def directory(value: object, at: At) -> Path:
    return _path(value, at, "expected a directory path")


def file_path(value: object, at: At) -> Path:
    return _path(value, at, "expected a file path")


def path_as_given(value: object, at: At) -> Path:
    """A path from the command line, as the shell handed it over: relative to the working
    directory."""
    return Path(str(value))


def workers(value: object, at: At) -> int:
    if value == "auto":
        return auto_workers()
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_WORKERS:
        raise at.error(f"expected auto or a number of processes from 0 to {MAX_WORKERS}")
    return value


def etcd_endpoint(value: object, at: At) -> str:
    """An etcd client URL, http(s)://HOST:PORT, without a path (the v3 API paths are added)."""
    if not isinstance(value, str):
        raise at.error("expected URLs like http://127.0.0.1:2379")
    scheme, sep, rest = value.partition("://")
    rest = rest.rstrip("/")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
        raise at.error(f"{value!r} is not a URL like http://127.0.0.1:2379")
    return f"{scheme}://{hostport(rest, at)}"


def etcd_endpoints(value: object, at: At) -> tuple[str, ...]:
    """One URL or a list of them, at least one; repeats dropped."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise at.error("expected at least one URL")
    return tuple(dict.fromkeys(etcd_endpoint(x, at) for x in items))


def etcd_endpoints_text(value: object, at: At) -> tuple[str, ...]:
    """The command line's spelling: URLs separated by commas."""
    urls = [u.strip() for u in str(value).split(",") if u.strip()]
    if not urls:
        raise at.error("expected URLs like http://127.0.0.1:2379")
    return tuple(dict.fromkeys(etcd_endpoint(u, at) for u in urls))


def etcd_prefix(value: object, at: At) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or len(value) > 200
        or not value.isprintable()
        or " " in value
    ):
        raise at.error("expected a key prefix like /dnsdisc (starts with /)")
    # One spelling: "/dnsdisc/" and "/dnsdisc" must name the same keys on every node.
    return value.rstrip("/") or "/"


def weight_factor(value: object, at: At) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise at.error("expected a number above 0, at most 1")
    return float(value)


def net_rules(value: object, at: At) -> NetRules:
    """``networks``, not empty."""
    if not isinstance(value, list) or not value:
        raise at.error("expected a list of networks, e.g. [10.0.0.0/8, '!10.9.0.0/16']")
    return NetRules.parse(value, at.source, at.key)


def rate(lo: float, hi: float) -> Callable[[object, At], float]:
    """A positive number (not necessarily whole) from ``lo`` to ``hi``."""

    def parse(value: object, at: At) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            raise at.error(f"expected a number from {lo:g} to {hi:g}")
        return float(value)

    return parse


def flap_hold(value: object, at: At) -> str:
    if value not in ("out", "in"):
        raise at.error("expected out or in")
    assert isinstance(value, str)
    return value


def _service(name: str, value: object, base: ServiceSettings, at: At) -> ServiceSettings:
    try:
        return ServiceSettings.from_json(name, mapping(value, at), base)
    except ValidationError as exc:
        raise at.to(f"{at.key}.{exc.field}").error(exc.message) from None


def service_defaults(value: object, at: At) -> ServiceSettings:
    """``defaults:``: the settings every service starts with (the registry's service fields)."""
    return _service("default", value, at.config.defaults, at)


def services(value: object, at: At) -> dict[str, ServiceSettings]:
    """``services:``: name -> settings, each starting from ``defaults:`` (read before it)."""
    parsed = {}
    for name, body in mapping(value, at).items():
        where = at.to(f"{at.key}.{name}")
        try:
            svc = label(name, at.key)
        except ValidationError as exc:
            raise where.error(exc.message) from None
        parsed[svc] = _service(svc, body, at.config.defaults.with_name(svc), where)
    return parsed


def queries(value: object, at: At) -> tuple[QueryDef, ...]:
    """``queries:``: name -> named query definition (read-only over the API)."""
    parsed = []
    for name, body in mapping(value, at).items():
        where = at.to(f"{at.key}.{name}")
        try:
            parsed.append(QueryDef.from_json(name, mapping(body, where), static=True))
        except ValidationError as exc:
            fld = "" if exc.field in ("name", "body") else f".{exc.field}"
            raise at.to(f"{at.key}.{name}{fld}").error(exc.message) from None
    return tuple(parsed)


def protection(value: object, at: At) -> Protection | None:
    """``health.protection``: off (``off``, false or null) or ``{expire_fraction, window,
    min_leased}``, each optional."""
    if value in (None, False, "off"):
        return None
    given = mapping(value, at)
    check_keys(given, ("expire_fraction", "window", "min_leased"), at.source, f"{at.key}.")
    base = Protection()
    fraction = given.get("expire_fraction", base.expire_fraction)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise at.to(f"{at.key}.expire_fraction").error("expected a number between 0 and 1")
    window = duration(0, 86400)(given.get("window", base.window), at.to(f"{at.key}.window"))
    least = integer(1, 10**6)(
        given.get("min_leased", base.min_leased), at.to(f"{at.key}.min_leased")
    )
    return Protection(float(fraction), window, least)
