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
from collections import deque
from collections.abc import Callable

from aiohttp import web

from dnsdisc.errors import ValidationError
from dnsdisc.registry.changes import Change, ChangeLog

KEEPALIVE = 15.0
# Changes queued for one subscriber before it is told to start over.
BACKLOG = 4096
RESET = "reset"
# Changes whose event text is kept: a change fanned out to many streams is encoded once.
ENCODED = 1024

_encoded: dict[int, tuple[Change, bytes]] = {}


def _event(change: Change) -> bytes:
    """The event's text, encoded once for every stream it goes to."""
    hit = _encoded.get(id(change))
    if hit is not None and hit[0] is change:
        return hit[1]
    data = {"service": change.service, "instance": change.instance, "data": change.data}
    text = f"id: {change.index}\nevent: {change.kind}\ndata: {json.dumps(data)}\n\n".encode()
    if len(_encoded) >= ENCODED:
        del _encoded[next(iter(_encoded))]  # the oldest: dicts keep their order
    _encoded[id(change)] = (change, text)  # the change is held: its id is not reused meanwhile
    return text


def _reset(index: int) -> bytes:
    return f"id: {index}\nevent: {RESET}\ndata: {json.dumps({'index': index})}\n\n".encode()


def last_event_id(value: str | None) -> int | None:
    """The id a reconnecting client last saw (None: a new subscriber)."""
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 20:
        raise ValidationError("Last-Event-ID", "Last-Event-ID must be an event id (a number)")
    return int(value)


class _Pending:
    """What one stream has yet to send: changes (None: a reset), and the future its task parks
    on while there is nothing. A change wakes the task with no timer to cancel and set again
    (what ``wait_for`` on a queue cost per event); one timer per stream, moved on lazily, asks
    for a keepalive once nothing was sent for KEEPALIVE seconds."""

    __slots__ = ("changes", "keepalive", "last", "waiter")

    def __init__(self, now: float) -> None:
        self.changes: deque[Change | None] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.keepalive = False
        self.last = now  # when something was last sent

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def put(self, change: Change) -> None:
        if len(self.changes) >= BACKLOG:
            self.changes.clear()  # fallen behind: start over from a reset
            self.changes.append(None)
        else:
            self.changes.append(change)
        self.wake()


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
    loop = asyncio.get_running_loop()
    pending = _Pending(loop.time())

    def wanted(change: Change) -> bool:
        return (service is None or change.service == service) and may_read(change.service)

    def take(change: Change) -> None:
        if may_read(change.service):
            pending.put(change)

    timer: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal timer
        due = pending.last + KEEPALIVE
        if loop.time() >= due - 0.01:
            pending.keepalive = True
            pending.wake()
            due = loop.time() + KEEPALIVE
        timer = loop.call_at(due, tick)

    # Before the backlog is read: nothing falls between. Only ``service``'s changes come.
    unsubscribe = changes.subscribe(take, service)
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
        timer = loop.call_later(KEEPALIVE, tick)
        while True:
            if not pending.changes and not pending.keepalive:
                pending.waiter = loop.create_future()
                await pending.waiter
                pending.waiter = None
            # Everything queued meanwhile goes out in one write.
            out = []
            while pending.changes:
                queued = pending.changes.popleft()
                if queued is None:
                    out.append(_reset(changes.index))
                elif id(queued) not in sent:
                    out.append(_event(queued))
            if out or pending.keepalive:
                pending.keepalive = False
                pending.last = loop.time()
                await response.write(b"".join(out) if out else b": keepalive\n\n")
    finally:
        if timer is not None:
            timer.cancel()
        unsubscribe()
