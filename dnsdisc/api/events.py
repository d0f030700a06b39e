"""``GET /v1/events``: the registry's changes as Server-Sent Events.

One event per change: ``id:`` its index, ``event:`` its kind (register, deregister, health,
service, service-deleted, maintenance), ``data:`` JSON with the service, the instance id and
what it now is. ``?service=NAME`` keeps one service's. A client that reconnects with
``Last-Event-ID`` first gets every change after that id from the registry's bounded log, or a
``reset`` event when the log no longer reaches back (it must list again); a subscriber that
falls too far behind gets a ``reset`` too, rather than holding the registry's memory. A comment
line every KEEPALIVE seconds keeps idle connections (and the proxies between) open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web

from dnsdisc.errors import ValidationError
from dnsdisc.registry.changes import Change, ChangeLog

KEEPALIVE = 15.0
# Changes queued for one subscriber before it is told to start over.
BACKLOG = 4096
RESET = "reset"


def _event(change: Change) -> bytes:
    data = {"service": change.service, "instance": change.instance, "data": change.data}
    return f"id: {change.index}\nevent: {change.kind}\ndata: {json.dumps(data)}\n\n".encode()


def _reset(index: int) -> bytes:
    return f"id: {index}\nevent: {RESET}\ndata: {json.dumps({'index': index})}\n\n".encode()


def last_event_id(value: str | None) -> int | None:
    """The id a reconnecting client last saw (None: a new subscriber)."""
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 20:
        raise ValidationError("Last-Event-ID", "Last-Event-ID must be an event id (a number)")
    return int(value)


async def stream(
    request: web.Request,
    changes: ChangeLog,
    service: str | None,
    may_read: Callable[[str], bool],
    index_header: str,
) -> web.StreamResponse:
    """Stream ``changes`` (of ``service``, and of what the caller ``may_read``) until the
    client goes away."""
    after = last_event_id(request.headers.get("Last-Event-ID"))
    queue: asyncio.Queue[Change | None] = asyncio.Queue()

    def wanted(change: Change) -> bool:
        return (service is None or change.service == service) and may_read(change.service)

    def take(change: Change) -> None:
        if not wanted(change):
            return
        if queue.qsize() >= BACKLOG:
            while not queue.empty():  # fallen behind: start over from a reset
                queue.get_nowait()
            queue.put_nowait(None)
            return
        queue.put_nowait(change)

    unsubscribe = changes.subscribe(take)  # before the backlog is read: nothing falls between
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                index_header: str(changes.index),
            }
        )
        await response.prepare(request)
        # Changes sent from the log; the same ones may be queued too (made while it was sent).
        backlog: list[Change] = []
        if after is not None:
            found = changes.since(after)
            if found is None:
                await response.write(_reset(changes.index))
            else:
                backlog = found
                for change in backlog:
                    if wanted(change):
                        await response.write(_event(change))
        sent = {id(change) for change in backlog}
        await response.write(b": connected\n\n")
        while True:
            try:
                queued = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if queued is None:
                await response.write(_reset(changes.index))
            elif id(queued) not in sent:
                await response.write(_event(queued))
    finally:
        unsubscribe()
