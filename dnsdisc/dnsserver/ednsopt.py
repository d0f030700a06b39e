"""EDNS options of a query, found by walking its records: the one place that reads an OPT
record's options (cookies, client subnet). The usual shape (one question, then one OPT record)
is read without walking the records; anything else is walked record by record."""

from __future__ import annotations

import struct

_HEAD = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")  # type, class (an OPT's UDP size), TTL, RDLENGTH
_OPTION = struct.Struct("!HH")
OPT = 41
_OPT_START = b"\x00\x00\x29"  # an OPT record: the root, type 41
_ONE_QUESTION_ONE_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"


class Malformed(Exception):
    """The query's records cannot be walked (truncated, or past the end)."""


def scan(data: bytes, code: int) -> tuple[int, int, int] | None:
    """Where the first option ``code`` of the query's OPT record is: the OPT record's offset,
    the option's (its code's) offset and its data's length; None without one. Raises Malformed
    for records that cannot be walked."""
    try:
        if data[4:12] == _ONE_QUESTION_ONE_OPT:
            opt = data.find(0, 12) + 5
            if opt > 4 and data[opt : opt + 3] == _OPT_START:
                end = len(data)
                if end == opt + 11 + (data[opt + 9] << 8 | data[opt + 10]):
                    return _options(data, opt, opt + 11, end, code)
        return _walk(data, code)
    except (struct.error, IndexError):
        raise Malformed("truncated") from None


def find(data: bytes, code: int) -> tuple[bytes, int] | None:
    """The data of the first option ``code`` in the query's OPT record, and the query's UDP
    size; None without one. Raises Malformed for records that cannot be walked."""
    found = scan(data, code)
    if found is None:
        return None
    opt, at, size = found
    return data[at + 4 : at + 4 + size], data[opt + 3] << 8 | data[opt + 4]


def _options(data: bytes, opt: int, pos: int, end: int, code: int) -> tuple[int, int, int] | None:
    while pos + 4 <= end:
        found, size = _OPTION.unpack_from(data, pos)
        if pos + 4 + size > end:
            raise Malformed("option past the end of its record")
        if found == code:
            return opt, pos, size
        pos += 4 + size
    return None


def _walk(data: bytes, code: int) -> tuple[int, int, int] | None:
    _, _, qd, an, ns, ar = _HEAD.unpack_from(data)
    pos = 12
    for _ in range(qd):
        pos = skip_name(data, pos) + 4
    for n in range(an + ns + ar):
        pos = skip_name(data, pos)
        start = pos
        rtype, _, _, rdlen = _RR.unpack_from(data, pos)
        pos += 10
        end = pos + rdlen
        if end > len(data):
            raise Malformed("record past the end")
        if rtype == OPT and n >= an + ns:
            found = _options(data, start - 1, pos, end, code)
            if found is not None:
                return found
        pos = end
    return None


def skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += 1 + length
