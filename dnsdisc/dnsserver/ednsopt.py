"""EDNS options of a query, found by walking its records: the one place that reads an OPT
record's options (cookies, client subnet). The hot paths look for their usual layout first and
come here only when it is not there."""

from __future__ import annotations

import struct

_HEAD = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")  # type, class (an OPT's UDP size), TTL, RDLENGTH
_OPTION = struct.Struct("!HH")
OPT = 41


class Malformed(Exception):
    """The query's records cannot be walked (truncated, or past the end)."""


def find(data: bytes, code: int) -> tuple[bytes, int] | None:
    """The data of the first option ``code`` in the query's OPT record, and the query's UDP
    size; None without one. Raises Malformed for records that cannot be walked."""
    try:
        _, _, qd, an, ns, ar = _HEAD.unpack_from(data)
        pos = 12
        for _ in range(qd):
            pos = skip_name(data, pos) + 4
        for n in range(an + ns + ar):
            pos = skip_name(data, pos)
            rtype, rclass, _, rdlen = _RR.unpack_from(data, pos)
            pos += 10
            end = pos + rdlen
            if end > len(data):
                raise Malformed("record past the end")
            if rtype == OPT and n >= an + ns:
                while pos + 4 <= end:
                    found, size = _OPTION.unpack_from(data, pos)
                    if pos + 4 + size > end:
                        raise Malformed("option past the end of its record")
                    if found == code:
                        return data[pos + 4 : pos + 4 + size], rclass
                    pos += 4 + size
            pos = end
    except (struct.error, IndexError):
        raise Malformed("truncated") from None
    return None


def skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += 1 + length
