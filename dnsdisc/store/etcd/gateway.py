"""The HTTP client for etcd's v3 JSON gateway: one aiohttp session over the configured endpoints,
TLS and username/password (a token in the Authorization header), requests bounded by a timeout
that fail over to the next endpoint, and long-lived streams (the watch) on one chosen endpoint.

It knows etcd's error answers but nothing of dnsdisc's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from dnsdisc.errors import StoreError, StoreOutcomeUnknownError, StoreUnavailableError
from dnsdisc.store.settings import EtcdSettings

# gRPC codes etcd answers with when another member (or a retry) may do better.
_RETRY_CODES = {4, 8, 10, 13, 14}  # deadline, exhausted, aborted, internal, unavailable
_UNAUTHENTICATED = 16


class EtcdRequestError(StoreError):
    """etcd refused a request (not a connectivity problem)."""


class Gateway:
    """Requests to etcd's JSON gateway over one session, made by ``open``."""

    def __init__(self, cfg: EtcdSettings) -> None:
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self._endpoint = 0  # the endpoint that answered last is tried first
        self._token: str | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.cfg.endpoints

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def open(self) -> None:
        """Make the session (within a running loop); requests before this are refused."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=64),
            headers={"User-Agent": "dnsdisc"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def forget_token(self) -> None:
        """Authenticate again before the next request (a stale token breaks a stream too)."""
        self._token = None

    def _ssl(self) -> ssl.SSLContext | bool:
        cfg = self.cfg
        if cfg.ca_file is None and cfg.cert_file is None:
            return True  # default verification for https endpoints
        ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        if cfg.cert_file is not None and cfg.key_file is not None:
            ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
        return ctx

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _authenticate(self, endpoint: str, timeout: float) -> None:
        assert self._session is not None
        body = {"name": self.cfg.username, "password": self.cfg.password}
        async with self._session.post(
            endpoint + "/v3/auth/authenticate",
            json=body,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200 or "token" not in data:
                raise EtcdRequestError(
                    f"etcd refused the username/password: {data.get('error') or resp.status}"
                )
            self._token = str(data["token"])

    async def call(
        self, path: str, body: dict[str, Any], timeout: float | None = None, *, write: bool = False
    ) -> dict[str, Any]:
        """POST to the first endpoint that answers within ``timeout`` (the configured one by
        default): connection errors and 'try another member' answers move on to the next.

        A ``write`` that got no answer after it may have reached a member raises
        StoreOutcomeUnknownError: a frozen member holds the request in its socket and runs it
        when it resumes, so "not answered" is not "not applied"."""
        if self._session is None:
            raise StoreUnavailableError("the etcd store is not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.cfg.timeout)
        endpoints = self.cfg.endpoints
        last = "no endpoint was tried"
        maybe_sent = False
        for _ in range(4 * len(endpoints) + 2):  # bounded: each endpoint a few times at most
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            endpoint = endpoints[self._endpoint % len(endpoints)]
            # Half the budget at most per attempt while there is time for another: a member
            # that lost its leader holds a request until it times out, and another member (or
            # this one's new leader) usually answers within a second.
            attempt = remaining / 2 if remaining > 1.0 and len(endpoints) > 1 else remaining
            try:
                if self.cfg.username is not None and self._token is None:
                    await self._authenticate(endpoint, attempt)
                async with self._session.post(
                    endpoint + path,
                    json=body,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=attempt),
                ) as resp:
                    data = await resp.json(content_type=None)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                if resp.status == 200:
                    return data
                code = data.get("code")
                message = str(data.get("error") or data.get("message") or resp.status)
                if code == _UNAUTHENTICATED and self.cfg.username is not None:
                    self._token = None  # expired token: authenticate again
                    last = message
                    continue
                if code not in _RETRY_CODES and resp.status < 500:
                    raise EtcdRequestError(f"etcd refused {path}: {message}")
                maybe_sent = True  # e.g. "request timed out": proposed, outcome not known
                last = f"{endpoint}: {message}"
            except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
                last = f"{endpoint}: {str(exc) or type(exc).__name__}"
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                maybe_sent = True
                last = f"{endpoint}: {str(exc) or type(exc).__name__}"
            self._endpoint += 1
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        if write and maybe_sent:
            raise StoreOutcomeUnknownError(
                f"etcd is unavailable ({last}); the write was sent and may still be applied: "
                "read it back before retrying"
            )
        raise StoreUnavailableError(f"etcd is unavailable ({last})")

    @contextlib.asynccontextmanager
    async def stream(
        self, endpoint: str, path: str, body: dict[str, Any]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST a request whose answer streams for as long as it lasts, to ``endpoint`` only:
        no failover and no total timeout (the caller reconnects where it likes)."""
        assert self._session is not None
        if self.cfg.username is not None and self._token is None:
            await self._authenticate(endpoint, self.cfg.timeout)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.timeout)
        async with self._session.post(
            endpoint + path, json=body, headers=self._headers(), timeout=timeout
        ) as resp:
            yield resp
