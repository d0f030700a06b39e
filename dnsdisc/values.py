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
