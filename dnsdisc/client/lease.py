"""Leases kept alive in the background: ``Registration`` (a daemon thread) and
``AsyncRegistration`` (an asyncio task) register an instance with a TTL, heartbeat every ttl/3
and deregister when their block ends. ``_Lease`` holds the beat they share."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dnsdisc.client.errors import ClientError

if TYPE_CHECKING:  # imported lazily: the CLI's client commands need no asyncio
    import asyncio

    from dnsdisc.client.rest import Client

log = logging.getLogger(__name__)

# After a failed heartbeat the next try comes sooner than the regular ttl/3, but not more than
# once a second, so a lease survives a short outage without hammering a server that is down.
_RETRY_AFTER = 1.0


class _Lease:
    """What the sync and async lease keepers share: the beat itself and its bookkeeping.

    ``status``, ``load`` and ``latency_ms`` may be set at any time; every later heartbeat
    reports them. A failed heartbeat is logged and retried, never raised. An instance that has
    disappeared (404: removed by ``deregister_after``, a server that lost its memory store, an
    operator) is registered again, as Consul's agent does; to take a kept instance out of the
    answers, use maintenance."""

    def __init__(self, client: Client, service: str, id: str, body: dict[str, Any]) -> None:
        ttl = body.get("ttl")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
            raise ValueError(f"a lease needs a ttl in seconds above 0, got {ttl!r}")
        self.client = client
        self.service = service
        self.id = id
        self.body = body
        self.interval = float(ttl) / 3
        self.instance: dict[str, Any] = {}  # the server's reply to the latest registration
        self.status: str | None = None
        self.load: float | None = None
        self.latency_ms: float | None = None
        self.heartbeats = 0  # successful ones
        self.failures = 0  # consecutive failed ones
        self.last_error: Exception | None = None

    def _register(self) -> None:
        self.instance = self.client.register(self.service, self.id, **self.body)

    def _beat(self) -> None:
        name = f"{self.service}/{self.id}"
        try:
            try:
                self.client.heartbeat(
                    self.service, self.id, self.status, self.load, self.latency_ms
                )
            except ClientError as exc:
                if exc.status != 404:
                    raise
                log.warning("%s is no longer registered; registering it again", name)
                self._register()
        except Exception as exc:  # whatever it is, the lease keeper logs it and tries again
            self.failures += 1
            self.last_error = exc
            # The first failure is news; repeating it every second while the server is down
            # is not.
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "heartbeat for %s failed (%d in a row): %s", name, self.failures, exc)
            return
        if self.failures:
            log.info("heartbeats for %s succeed again after %d failures", name, self.failures)
        self.failures = 0
        self.heartbeats += 1

    def _delay(self) -> float:
        return self.interval if not self.failures else min(self.interval, _RETRY_AFTER)

    def _deregister(self) -> None:
        try:
            self.client.deregister(self.service, self.id)
        except ClientError as exc:
            # Not raised: it would hide the exception that may be leaving the block, and an
            # instance we could not remove goes critical when its lease runs out anyway.
            if exc.status != 404:
                log.warning("could not deregister %s/%s: %s", self.service, self.id, exc)


class Registration(_Lease):
    """``with client.registration(...) as reg:`` registers on entry (errors raised), heartbeats
    from a daemon thread, deregisters on exit (errors logged). Exit waits for a heartbeat in
    flight, at most the client's ``timeout``."""

    def __init__(self, client: Client, service: str, id: str, body: dict[str, Any]) -> None:
        super().__init__(client, service, id, body)
        self._stop = threading.Event()
        # Held around each beat: exit waits for one in flight, so that no re-registration can
        # land after the deregistration.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Registration:
        self._register()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"dnsdisc-lease-{self.service}-{self.id}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._delay()):
            with self._lock:
                if self._stop.is_set():
                    return
                self._beat()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        with self._lock:  # no beat is in flight after this, and none will start
            pass
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        self._deregister()


class AsyncRegistration(_Lease):
    """``async with AsyncClient(...).registration(...) as reg:`` (see ``Registration``). The
    requests run in the default executor's threads."""

    def __init__(self, client: Client, service: str, id: str, body: dict[str, Any]) -> None:
        super().__init__(client, service, id, body)
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncRegistration:
        import asyncio

        await asyncio.to_thread(self._register)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            self._run(), name=f"dnsdisc-lease-{self.service}-{self.id}"
        )
        return self

    async def _run(self) -> None:
        import asyncio

        assert self._stop is not None
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self._delay())
                return
            except TimeoutError:
                pass
            await asyncio.to_thread(self._beat)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio

        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            # Awaited, not cancelled: a cancelled task would leave its thread's request running,
            # and a re-registration in flight could land after the deregistration.
            task, self._task = self._task, None
            try:
                await task
            except Exception:  # the loop catches what a beat raises; this is a last resort
                log.exception("the lease keeper of %s/%s failed", self.service, self.id)
        await asyncio.to_thread(self._deregister)
