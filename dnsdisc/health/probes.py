"""One run of one active check, of any type that reaches out (``Prober.probe``): the verdict,
the output in our own words and the response time. The monitor (``monitor.py``) decides when
checks run and what their verdicts make of the instance; ``alias`` checks are its own (they look
at the registry, not the network).

Outputs never carry what the target sent (a body, a reason phrase, a command's output beyond
the bounded and escaped tail kept for exec checks): the API shows them to anyone who may read.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass

import aiohttp

from dnsdisc.logs import escape
from dnsdisc.registry.checks import CheckSpec
from dnsdisc.registry.model import CRITICAL, PASSING, WARNING


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # PASSING, WARNING or CRITICAL
    output: str
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status != CRITICAL


class Prober:
    """Runs checks; holds what runs may share (the HTTP session's connections)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            # No pool limit: the monitor's gate bounds the checks in flight, and a check's
            # timeout must not run while it waits for a connection.
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            headers={"User-Agent": "dnsdisc-health-check"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def probe(self, spec: CheckSpec, address: str, port: int) -> Outcome:
        """One run of ``spec`` against ``address``:``port`` (the check's target), bounded by
        its timeout and never longer than its interval."""
        host = f"[{address}]" if ":" in address else address
        limit = min(spec.timeout, spec.interval)
        started = time.perf_counter()
        try:
            if spec.type == "tcp":
                _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), limit)
                writer.close()
                ms = (time.perf_counter() - started) * 1000
                return Outcome(PASSING, f"TCP connect {host}:{port}: connected", ms)
            if spec.type == "http":
                return await self._http(spec, host, port, limit, started)
            return Outcome(CRITICAL, f"{spec.type} checks are not supported yet")
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            return Outcome(CRITICAL, f"{spec.type.upper()} {host}:{port}: {failure(exc)}")

    async def _http(
        self, spec: CheckSpec, host: str, port: int, limit: float, started: float
    ) -> Outcome:
        assert self._session is not None
        url = f"http://{host}:{port}{spec.path}"
        timeout = aiohttp.ClientTimeout(total=limit)
        async with self._session.get(url, timeout=timeout, allow_redirects=False) as resp:
            ms = (time.perf_counter() - started) * 1000
            ok = spec.expect[0] <= resp.status <= spec.expect[1]
            status = PASSING if ok else WARNING if resp.status == 429 else CRITICAL
            verdict = "expected" if ok else f"expected {spec.expect[0]}-{spec.expect[1]}"
            return Outcome(status, escape(f"HTTP GET {url}: status {resp.status} ({verdict})"), ms)


def failure(exc: BaseException) -> str:
    """What went wrong, in our words: exception texts may quote what the target sent."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return f"connection failed ({errno.errorcode[exc.errno]})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "invalid HTTP response"
    return f"failed ({type(exc).__name__})"
