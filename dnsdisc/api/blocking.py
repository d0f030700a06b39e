"""Blocking queries (``?index=N&wait=DURATION``), shared by dnsdisc's own API and the Consul
subset: the parameters, read once, the same way for both."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Mapping

from dnsdisc.errors import ValidationError
from dnsdisc.values import go_duration

# How long a GET may wait for a change: Consul's default and cap.
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
INDEX_HEADER = "X-Dnsdisc-Index"


def blocking(query: Mapping[str, str]) -> tuple[int, float] | None:
    """A blocking query's ``index`` and how long to wait (``wait``: ``10s``, ``5m``, Go's
    ``120000ms`` or ``1m30s``, or bare seconds; default 5 min, at most 10, plus up to 1/16 of it
    at random, as Consul spreads its watchers); None without ``index``. A bad value is a 400
    naming it."""
    wait = DEFAULT_WAIT
    if "wait" in query:
        text = query["wait"].strip()
        try:
            wait = float(text) if text.replace(".", "", 1).isdigit() else -1.0
        except ValueError:
            wait = -1.0
        if wait < 0:
            wait = go_duration(text, "wait", 0, float("inf"))
        wait = min(wait, MAX_WAIT)
    if "index" not in query:
        return None
    text = query["index"]
    if not text.isdigit() or len(text) > 20:
        raise ValidationError("index", "index must be a whole number, 0 or more")
    return int(text), wait + random.uniform(0, wait / 16)


async def hold(waiting: Awaitable[int], gone: asyncio.Future[None] | None) -> None:
    """Wait for a blocking query's change (``waiting``), or until its client has gone
    (``gone``): a client that hangs up must not leave its query parked for up to 10 minutes,
    past the connection caps that admitted it."""
    if gone is None:
        await waiting
        return
    task = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()  # also when this handler is cancelled (shutdown)
