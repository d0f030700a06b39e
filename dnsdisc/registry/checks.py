"""An instance's active health check as registered (``CheckSpec``), and the narrower rules a
check registered over the API must also meet (``RemoteCheckRules``). Apart from ``model`` because
the checks change for their own reasons: check types, SSRF rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnsdisc.errors import ValidationError
from dnsdisc.netaddr import NetRules
from dnsdisc.values import bounded_int, is_int, seconds

if TYPE_CHECKING:
    from dnsdisc.registry.model import Instance

CHECK_FIELDS = ("type", "path", "port", "interval", "timeout", "rise", "fall", "expect")


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """An active health check: HTTP GET or TCP connect against the instance."""

    type: str
    path: str = "/"
    port: int | None = None  # default: the instance's port
    interval: float = 10.0
    timeout: float = 2.0
    rise: int = 1  # consecutive successes before passing
    fall: int = 1  # consecutive failures before critical
    expect: tuple[int, int] = (200, 399)  # HTTP statuses that count as success

    @classmethod
    def from_json(cls, body: object, fld: str = "check") -> CheckSpec:
        if not isinstance(body, Mapping):
            raise ValidationError(fld, f"{fld} must be an object with type http or tcp")
        for key in body:
            if key not in CHECK_FIELDS:
                raise ValidationError(
                    fld, f"{fld}: unknown field {key!r}; expected one of: {', '.join(CHECK_FIELDS)}"
                )
        kind = body.get("type")
        if kind not in ("http", "tcp"):
            raise ValidationError(fld, f"{fld}.type must be 'http' or 'tcp'")
        path = body.get("path", "/")
        if kind == "tcp" and "path" in body:
            raise ValidationError(fld, f"{fld}.path applies to http checks only")
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 1024:
            raise ValidationError(fld, f"{fld}.path must be a string starting with '/'")
        if not path.isprintable() or " " in path:
            raise ValidationError(fld, f"{fld}.path must be printable, without spaces")
        port = body.get("port")
        expect = body.get("expect", [200, 399])
        if (
            not isinstance(expect, list)
            or len(expect) != 2
            or not all(is_int(x) and 100 <= x <= 599 for x in expect)
            or expect[0] > expect[1]
        ):
            raise ValidationError(fld, f"{fld}.expect must be [low, high] HTTP statuses")
        interval = seconds(body.get("interval", 10.0), f"{fld}.interval", 0.05, 86400)
        return cls(
            type=kind,
            path=path,
            port=None if port is None else bounded_int(port, f"{fld}.port", 1, 65535),
            interval=interval,
            timeout=seconds(body.get("timeout", min(2.0, interval)), f"{fld}.timeout", 0.01, 300),
            rise=bounded_int(body.get("rise", 1), f"{fld}.rise", 1, 100),
            fall=bounded_int(body.get("fall", 1), f"{fld}.fall", 1, 100),
            expect=(expect[0], expect[1]),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "port": self.port,
            "interval": self.interval,
            "timeout": self.timeout,
            "rise": self.rise,
            "fall": self.fall,
        }
        if self.type == "http":
            out["path"] = self.path
            out["expect"] = list(self.expect)
        return out


@dataclass(frozen=True, slots=True)
class RemoteCheckRules:
    """What a check registered over the API must also respect (``health.check_networks``,
    ``health.min_check_interval``): anyone who can register would otherwise aim the server at
    its own host, cloud metadata or a victim, as often as they like. Config and zone-file checks
    are the operator's and keep their wider limits."""

    networks: NetRules
    min_interval: float = 1.0

    def admit(self, inst: Instance) -> None:
        check = inst.check
        if check is None:
            return
        if check.interval < self.min_interval:
            raise ValidationError(
                "check",
                f"check.interval must be at least {self.min_interval:g} s "
                "(health.min_check_interval)",
            )
        if check.timeout > check.interval:
            raise ValidationError("check", "check.timeout must be at most check.interval")
        if not self.networks.allows(inst.address):
            raise ValidationError(
                "check",
                f"check: address {inst.address} is outside health.check_networks, "
                "where checks registered over the API may connect",
            )
