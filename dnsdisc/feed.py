"""The change feed between the main process and its DNS worker processes.

One stream socket (a socketpair) per worker. Each message is a 4-byte big-endian length and a
pickled tuple ``(kind, seq, *fields)``; both ends are this program, started by the same user, so
pickle's trust model holds. The main process numbers its messages; a worker acknowledges each one
after applying it, which is how a write's 2xx can wait until every worker answers from the new
state.

main -> worker
    INIT      seq, config, index settings, zone records, processes sharing the port
    SERVICES  seq, [(service, settings or None (gone), [member view, ...]), ...]
    FIGURES   seq, service, instance id, load, latency_ms
    INDEX     seq, index settings, zone records   (a reload: build a new index beside the old)
    SWAP      seq                                 (answer from the new index from now on)
    LISTEN    seq                                 (bind the DNS port; reply LISTENING)
    STATS     seq, service or None                (reply STATS)
    STOP      seq                                 (drain and exit)
worker -> main
    ACK       seq
    LISTENING seq
    STATS     seq, DnsCounters, {(service, instance id): answers led}
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

INIT = "init"
SERVICES = "services"
FIGURES = "figures"
INDEX = "index"
SWAP = "swap"
LISTEN = "listen"
STATS = "stats"
STOP = "stop"
ACK = "ack"
LISTENING = "listening"

_LEN = struct.Struct("!I")


def frame(*message: Any) -> bytes:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def read(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream (the other side is gone)."""
    try:
        (length,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        message = pickle.loads(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return None
    if not isinstance(message, tuple) or len(message) < 2:
        raise ValueError("malformed feed message")
    return message
