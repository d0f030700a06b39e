"""The name server identifier (NSID, RFC 5001): which process answered, for a query that asks.

The payload is ``dns.nsid`` and the answering process's name, ``TEXT/main`` in the main process
and ``TEXT/wN`` in DNS worker N (the number its log lines carry), so that an operator who sees a
bad answer can tell which process gave it. A worker learns its name from its command line
(``dnsdisc.workers.__main__`` calls ``name_process`` before it builds its DNS face).

RFC 5001 2.1 says a query's NSID option is empty. One that is not is still taken as the
question, its payload ignored, as NSD, Knot DNS and BIND do (Knot Resolver logs it and carries
on): a FORMERR would tell the client nothing more, and the content cannot change the answer.
"""

from __future__ import annotations

import struct

OPTION = 3  # the NSID option code
# The configured text goes in whole up to this many bytes, so that the option never takes a
# large part of a 512-byte reply (NSD caps its NSID at 128 bytes as well).
MAX_TEXT = 128

_HEAD = struct.Struct("!HH")

# This process's name in the payload: "main", or "wN" in worker N (see ``name_process``).
_process = "main"


def name_process(name: str) -> None:
    """Say what this process is called in NSID payloads (a worker: ``w`` and its number)."""
    global _process
    _process = name


def process_name() -> str:
    return _process


def option(text: str | None, process: str | None = None) -> bytes | None:
    """The whole NSID option for replies (code, length, payload); None without ``text``."""
    if not text:
        return None
    payload = text.encode()[:MAX_TEXT] + b"/" + (process or _process).encode()
    return _HEAD.pack(OPTION, len(payload)) + payload
