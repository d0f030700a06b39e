"""An instance's active health checks as registered (``CheckSpec``), and the narrower rules a
check registered over the API must also meet (``RemoteCheckRules``). Apart from ``model`` because
the checks change for their own reasons: check types, SSRF rules.

Types: ``http`` and ``https`` (a request, its status in ``expect``; 429 is a warning, as in
Consul), ``tcp`` (a connect), ``grpc`` (``grpc.health.v1.Health/Check``), ``udp`` (a datagram
and its reply), ``dns`` (a query and its rcode), ``exec`` (a command's exit status: 0 passing, 1
warning; from the operator's files only) and ``alias`` (another instance's or service's state).
A check runs against the instance's address and port unless its own ``address``/``port`` say
otherwise (an admin port, an address behind NAT).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dnsdisc.errors import ValidationError
from dnsdisc.netaddr import NetRules
from dnsdisc.values import bounded_int, endpoint_address, is_int, label, seconds

if TYPE_CHECKING:
    from dnsdisc.registry.model import Instance

CHECK_TYPES = ("http", "https", "tcp", "grpc", "udp", "dns", "exec", "alias")
_COMMON = ("type", "id", "address", "port", "interval", "timeout", "rise", "fall")
_TLS = ("tls_server_name", "tls_skip_verify", "ca_file")
_HTTP = ("path", "method", "headers", "body", "expect", "expect_body", "follow_redirects")
# The fields each type takes, besides the common ones.
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "http": _HTTP,
    "https": _HTTP + _TLS,
    "tcp": (),
    "grpc": ("grpc_service", "tls", *_TLS),
    "udp": ("payload", "payload_hex", "expect"),
    "dns": ("name", "qtype", "expect"),
    "exec": ("command",),
    "alias": ("service", "instance"),
}
CHECK_FIELDS = tuple(dict.fromkeys(_COMMON + tuple(f for v in TYPE_FIELDS.values() for f in v)))
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
QTYPES = ("A", "AAAA", "SRV", "TXT", "PTR", "SOA", "NS", "CNAME", "MX", "ANY")
MAX_BODY = 64 * 1024  # what expect_body looks at, and the most a check's request body may hold
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
# A host name: dot-separated labels of 1-63 letters, digits and '-' (no empty label, no '..').
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One active check, validated. Fields that do not apply to its type keep their defaults."""

    type: str
    id: str = ""  # its name among the instance's checks (``checks``); "" for the one ``check``
    address: str | None = None  # default: the instance's address
    port: int | None = None  # default: the instance's port
    interval: float = 10.0
    timeout: float = 2.0
    rise: int = 1  # consecutive successes before passing
    fall: int = 1  # consecutive failures before critical
    # http, https
    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    expect: tuple[int, int] = (200, 399)  # HTTP statuses that count as success
    expect_body: str | None = None
    follow_redirects: bool = False
    # https, grpc
    tls: bool = False  # grpc over TLS (https always is)
    tls_server_name: str | None = None
    tls_skip_verify: bool = False
    ca_file: str | None = None
    grpc_service: str = ""
    # udp
    payload: bytes = b""
    expect_text: str | None = None  # a udp reply must contain it
    # dns
    name: str = ""
    qtype: str = "A"
    expect_rcodes: tuple[str, ...] = ("NOERROR",)
    # exec
    command: tuple[str, ...] = ()
    # alias
    alias_service: str = ""
    alias_instance: str | None = None

    @property
    def targets_network(self) -> bool:
        """Whether it reaches out over the network (exec and alias do not)."""
        return self.type not in ("exec", "alias")

    @classmethod
    def from_json(cls, body: object, fld: str = "check") -> CheckSpec:
        if not isinstance(body, Mapping):
            raise ValidationError(fld, f"{fld} must be an object with a type")
        kind = body.get("type")
        if kind not in CHECK_TYPES:
            raise ValidationError(fld, f"{fld}.type must be one of: {', '.join(CHECK_TYPES)}")
        allowed = _COMMON + TYPE_FIELDS[kind]
        for key in body:
            if key not in allowed:
                where = [t for t, fields in TYPE_FIELDS.items() if key in fields]
                why = f"applies to {'/'.join(where)} checks only" if where else "is unknown"
                raise ValidationError(
                    fld, f"{fld}: field {key!r} {why}; a {kind} check takes: {', '.join(allowed)}"
                )
        interval = seconds(body.get("interval", 10.0), f"{fld}.interval", 0.05, 86400)
        timeout = seconds(body.get("timeout", min(2.0, interval)), f"{fld}.timeout", 0.01, 300)
        out: dict[str, Any] = {
            "type": kind,
            "id": label(body["id"], f"{fld}.id") if "id" in body else "",
            "address": _address(body.get("address"), fld),
            "port": None if body.get("port") is None else bounded_int(
                body["port"], f"{fld}.port", 1, 65535
            ),
            "interval": interval,
            "timeout": timeout,
            "rise": bounded_int(body.get("rise", 1), f"{fld}.rise", 1, 100),
            "fall": bounded_int(body.get("fall", 1), f"{fld}.fall", 1, 100),
        }  # fmt: skip
        if kind in ("http", "https"):
            out.update(_http_fields(body, fld))
        if kind in ("https", "grpc"):
            out.update(_tls_fields(body, fld))
        if kind == "grpc":
            out["tls"] = _flag(body, "tls", fld)
            service = body.get("grpc_service", "")
            if not isinstance(service, str) or len(service) > 256 or not service.isprintable():
                raise ValidationError(fld, f"{fld}.grpc_service must be printable text")
            out["grpc_service"] = service
        elif kind == "udp":
            out.update(_udp_fields(body, fld))
        elif kind == "dns":
            out.update(_dns_fields(body, fld))
        elif kind == "exec":
            command = body.get("command")
            if (
                not isinstance(command, list)
                or not command
                or len(command) > 64
                or not all(isinstance(a, str) and a and "\0" not in a for a in command)
            ):
                raise ValidationError(
                    fld, f"{fld}.command must be a non-empty list of arguments (no shell)"
                )
            out["command"] = tuple(command)
        elif kind == "alias":
            out["alias_service"] = label(body.get("service"), f"{fld}.service")
            if body.get("instance") is not None:
                out["alias_instance"] = label(body["instance"], f"{fld}.instance")
        if kind in ("exec", "alias") and ("address" in body or "port" in body):
            raise ValidationError(fld, f"{fld}: a {kind} check has no address or port")
        return cls(**out)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.id:
            out["id"] = self.id
        if self.targets_network:
            out["address"] = self.address
            out["port"] = self.port
        out.update(interval=self.interval, timeout=self.timeout, rise=self.rise, fall=self.fall)
        kind = self.type
        if kind in ("http", "https"):
            out.update(
                path=self.path,
                method=self.method,
                headers=dict(self.headers),
                body=self.body,
                expect=list(self.expect),
                expect_body=self.expect_body,
                follow_redirects=self.follow_redirects,
            )
        if kind in ("https", "grpc"):
            out.update(
                tls_server_name=self.tls_server_name,
                tls_skip_verify=self.tls_skip_verify,
                ca_file=self.ca_file,
            )
        if kind == "grpc":
            out.update(tls=self.tls, grpc_service=self.grpc_service)
        elif kind == "udp":
            try:
                out["payload"] = self.payload.decode()
            except UnicodeDecodeError:
                out["payload_hex"] = self.payload.hex()
            out["expect"] = self.expect_text
        elif kind == "dns":
            out.update(name=self.name, qtype=self.qtype, expect=list(self.expect_rcodes))
        elif kind == "exec":
            out["command"] = list(self.command)
        elif kind == "alias":
            out.update(service=self.alias_service, instance=self.alias_instance)
        return out


def _flag(body: Mapping[str, Any], key: str, fld: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ValidationError(fld, f"{fld}.{key} must be true or false")
    return value


def _text(body: Mapping[str, Any], key: str, fld: str, most: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > most:
        raise ValidationError(fld, f"{fld}.{key} must be text of at most {most} characters")
    return value


def _address(value: object, fld: str) -> str | None:
    if value is None:
        return None
    try:
        return endpoint_address(value, f"{fld}.address")
    except ValidationError as exc:
        raise ValidationError(fld, exc.message) from None


def _http_fields(body: Mapping[str, Any], fld: str) -> dict[str, Any]:
    path = body.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 1024:
        raise ValidationError(fld, f"{fld}.path must be a string starting with '/'")
    if not path.isprintable() or " " in path:
        raise ValidationError(fld, f"{fld}.path must be printable, without spaces")
    method = body.get("method", "GET")
    if method not in METHODS:
        raise ValidationError(fld, f"{fld}.method must be one of: {', '.join(METHODS)}")
    headers = body.get("headers", {})
    if not isinstance(headers, Mapping) or len(headers) > 32:
        raise ValidationError(fld, f"{fld}.headers must be an object of at most 32 headers")
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValidationError(fld, f"{fld}.headers: {name!r} is not a header name")
        if not isinstance(value, str) or len(value) > 4096 or not value.isprintable():
            raise ValidationError(fld, f"{fld}.headers[{name!r}] must be printable text")
    expect = body.get("expect", [200, 399])
    if (
        not isinstance(expect, list)
        or len(expect) != 2
        or not all(is_int(x) and 100 <= x <= 599 for x in expect)
        or expect[0] > expect[1]
    ):
        raise ValidationError(fld, f"{fld}.expect must be [low, high] HTTP statuses")
    return {
        "path": path,
        "method": method,
        "headers": tuple(headers.items()),
        "body": _text(body, "body", fld, MAX_BODY) or "",
        "expect": (expect[0], expect[1]),
        "expect_body": _text(body, "expect_body", fld, 1024),
        "follow_redirects": _flag(body, "follow_redirects", fld),
    }


def _tls_fields(body: Mapping[str, Any], fld: str) -> dict[str, Any]:
    server_name = body.get("tls_server_name")
    if server_name is not None and (
        not isinstance(server_name, str) or not _HOST_NAME.fullmatch(server_name)
    ):
        raise ValidationError(fld, f"{fld}.tls_server_name must be a host name")
    ca_file = _text(body, "ca_file", fld, 4096)
    if ca_file == "":
        raise ValidationError(fld, f"{fld}.ca_file must name a file")
    return {
        "tls_server_name": server_name,
        "tls_skip_verify": _flag(body, "tls_skip_verify", fld),
        "ca_file": ca_file,
    }


def _udp_fields(body: Mapping[str, Any], fld: str) -> dict[str, Any]:
    if "payload" in body and "payload_hex" in body:
        raise ValidationError(fld, f"{fld}: give payload or payload_hex, not both")
    payload = b""
    if "payload_hex" in body:
        text = body["payload_hex"]
        try:
            payload = bytes.fromhex(text) if isinstance(text, str) else b"\0" * 2000
        except ValueError:
            payload = b"\0" * 2000
        if len(payload) > 1400:
            raise ValidationError(fld, f"{fld}.payload_hex must be hex digits, at most 1400 bytes")
    else:
        payload = (_text(body, "payload", fld, 1400) or "").encode()
    return {"payload": payload, "expect_text": _text(body, "expect", fld, 1024)}


def _dns_fields(body: Mapping[str, Any], fld: str) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not _HOST_NAME.fullmatch(name.rstrip(".") or "x"):
        raise ValidationError(fld, f"{fld}.name must be the domain name to query")
    qtype = body.get("qtype", "A")
    if not isinstance(qtype, str) or qtype.upper() not in QTYPES:
        raise ValidationError(fld, f"{fld}.qtype must be one of: {', '.join(QTYPES)}")
    expect = body.get("expect", ["NOERROR"])
    if (
        not isinstance(expect, list)
        or not expect
        or not all(isinstance(r, str) and r.upper() in RCODES for r in expect)
    ):
        raise ValidationError(fld, f"{fld}.expect must be a list of rcodes: {', '.join(RCODES)}")
    return {
        "name": name,
        "qtype": qtype.upper(),
        "expect_rcodes": tuple(dict.fromkeys(r.upper() for r in expect)),
    }


def parse_checks(body: Mapping[str, Any]) -> tuple[CheckSpec, ...]:
    """An instance body's ``check`` (one) or ``checks`` (several, each with an ``id``, by
    default its type, numbered where types repeat): both at once is a 400."""
    if body.get("check") is not None and body.get("checks") is not None:
        raise ValidationError("checks", "give check (one) or checks (several), not both")
    if body.get("check") is not None:
        return (CheckSpec.from_json(body["check"]),)
    many = body.get("checks")
    if many is None:
        return ()
    if not isinstance(many, list) or len(many) > 16:
        raise ValidationError("checks", "checks must be a list of at most 16 checks")
    specs = [CheckSpec.from_json(c, f"checks[{n}]") for n, c in enumerate(many)]
    return _named(specs)


def _named(specs: Sequence[CheckSpec]) -> tuple[CheckSpec, ...]:
    counts: dict[str, int] = {}
    for spec in specs:
        counts[spec.type] = counts.get(spec.type, 0) + 1
    seen: dict[str, int] = {}
    out: list[CheckSpec] = []
    for n, spec in enumerate(specs):
        name = spec.id
        if not name:
            seen[spec.type] = seen.get(spec.type, 0) + 1
            name = spec.type if counts[spec.type] == 1 else f"{spec.type}-{seen[spec.type]}"
        if any(o.id == name for o in out):
            raise ValidationError("checks", f"checks[{n}]: two checks are called {name!r}")
        out.append(replace(spec, id=name))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RemoteCheckRules:
    """What a check registered over the API must also respect (``health.check_networks``,
    ``health.min_check_interval``): anyone who can register would otherwise aim the server at
    its own host, cloud metadata or a victim, as often as they like, or run a command on it.
    Config and zone-file checks are the operator's and keep their wider limits."""

    networks: NetRules
    min_interval: float = 1.0

    def admit(self, inst: Instance) -> None:
        for n, check in enumerate(inst.checks):
            fld = "check" if len(inst.checks) == 1 and not check.id else "checks"
            where = "check" if fld == "check" else f"checks[{n}]"
            if check.type == "exec":
                raise ValidationError(
                    fld,
                    f"{where}: exec checks run a command on the server: they are taken from "
                    "the config and zone files only, never over the API",
                )
            if check.ca_file is not None:
                raise ValidationError(
                    fld, f"{where}.ca_file reads a file on the server: zone files only"
                )
            if check.interval < self.min_interval:
                raise ValidationError(
                    fld,
                    f"{where}.interval must be at least {self.min_interval:g} s "
                    "(health.min_check_interval)",
                )
            if check.timeout > check.interval:
                raise ValidationError(fld, f"{where}.timeout must be at most its interval")
            target = check.address or inst.address
            if check.targets_network and not self.networks.allows(target):
                raise ValidationError(
                    fld,
                    f"{where}: address {target} is outside health.check_networks, "
                    "where checks registered over the API may connect",
                )
