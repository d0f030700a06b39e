"""Generic validators for values that come from a client or a file: DNS labels, bounded
integers, IP addresses, durations. Each returns the value in its one canonical spelling or raises
ValidationError naming the field; the registry's model and the config loader both build on them.
Types are strict on purpose: ``"80"``, ``true`` and ``NaN`` are not ports.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket

from dnsdisc.errors import ValidationError

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# The longest duration any setting takes: a day.
MAX_SECONDS = 86400.0


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
    if ":" not in value:
        # Fast path for IPv4 (every stored instance is checked again at start-up): inet_pton
        # takes only the strict dotted quad, which ipaddress also takes and writes the same way.
        try:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value))
        except (OSError, ValueError):
            pass  # ipaddress decides, and words the error
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError(fld, f"{fld} {value!r} is not an IPv4 or IPv6 address") from None
    return str(addr)


_LIMITED_BROADCAST = b"\xff\xff\xff\xff"
_UNSPECIFIED_V4 = b"\0\0\0\0"


def endpoint_address(value: object, fld: str = "address") -> str:
    """An address a client can connect to, as an instance's: IPv4-mapped IPv6
    (``::ffff:10.0.0.1``) is returned as the IPv4 address it carries, so it is served as A;
    unspecified (0.0.0.0, ::), multicast, the limited broadcast 255.255.255.255 and IPv6
    link-local (fe80::/10, unusable without the zone index that is refused anyway) are refused.
    IPv4 link-local (169.254/16) needs no zone index and is kept."""
    text = ip_address(value, fld)
    if ":" not in text:
        packed = socket.inet_pton(socket.AF_INET, text)
        if (
            packed != _UNSPECIFIED_V4
            and packed != _LIMITED_BROADCAST
            and not 224 <= packed[0] <= 239
        ):
            return text  # the common case, without building an ipaddress object
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    why = (
        "is unspecified"
        if addr.is_unspecified
        else "is multicast"
        if addr.is_multicast
        else "is the broadcast address"
        if addr.packed == _LIMITED_BROADCAST
        else "is IPv6 link-local"
        if addr.version == 6 and addr.is_link_local
        else ""
    )
    if why:
        raise ValidationError(fld, f"{fld} {value!r} {why}: not an address clients can connect to")
    return str(addr)


def seconds(value: object, fld: str, lo: float = 0.0, hi: float = MAX_SECONDS) -> float:
    """A duration in seconds: a finite number, more than ``lo`` and at most ``hi``."""
    if not (is_int(value) or isinstance(value, float)):
        raise ValidationError(fld, f"{fld} must be a number of seconds")
    number = as_float(value, fld)
    if not math.isfinite(number) or not lo < number <= hi:
        raise ValidationError(fld, f"{fld} must be more than {lo:g} and at most {hi:g} seconds")
    return number


def as_float(value: object, fld: str) -> float:
    assert isinstance(value, (int, float))  # callers checked the type
    try:
        return float(value)
    except OverflowError:  # a 400-digit integer is valid JSON, but no float
        raise ValidationError(fld, f"{fld} is out of range") from None


# Go's time.ParseDuration spelling, which Consul's clients send (``10s``, ``1m30s``,
# ``120000ms``): one or more decimal numbers, each with its unit.
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


def go_duration(value: object, fld: str, lo: float = 0.0, hi: float = MAX_SECONDS) -> float:
    """A duration as Go spells it (``10s``, ``1m30s``, ``120000ms``; ``0`` alone) in seconds,
    at least ``lo`` and at most ``hi``."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError(fld, f"{fld} must be a duration like 10s, 1m30s or 500ms")
    text = value.strip()
    total, end = 0.0, 0
    if text != "0":
        for part in _GO_PART.finditer(text):
            if part.start() != end:
                break
            total += float(part.group(1)) * _GO_UNIT[part.group(2)]
            end = part.end()
        if end == 0 or end != len(text):
            raise ValidationError(fld, f"{fld} must be a duration like 10s, 1m30s or 500ms")
    if not lo <= total <= hi:
        raise ValidationError(fld, f"{fld} must be from {lo:g} to {hi:g} seconds")
    return total
