"""``/v1/dnssec``: the zone keys (``server/dnssec.py`` keeps them and moves them on).

- ``GET /v1/dnssec``: each key's role, tag, algorithm, state (published, active, retired,
  removed) and RFC 7583 timeline, and whether a rollover is under way; any read right or the
  operator right (the keys' public halves are in DNS for anyone anyway);
- ``POST /v1/dnssec/rollover``: start a ZSK rollover (the operator right); 409 while one is
  under way or when DNSSEC is off.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from dnsdisc.api.queries import Gate
from dnsdisc.errors import ConflictError


class KeyControl(Protocol):
    def status(self) -> dict[str, Any]: ...

    async def rollover(self) -> dict[str, Any]: ...


class DnssecApi:
    def __init__(self, gate: Gate, keys: KeyControl | None) -> None:
        self.gate = gate
        self.keys = keys

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/dnssec", self.get_state)
        r.add_post("/v1/dnssec/rollover", self.rollover)

    async def get_state(self, request: web.Request) -> web.Response:
        rights = self.gate.rights(request)
        if not (rights.can_read_any() or rights.operator):
            raise self.gate.refuse(request, "read the DNSSEC keys", "dnssec")
        if self.keys is None:
            return web.json_response({"enabled": False, "keys": []})
        return web.json_response(self.keys.status())

    async def rollover(self, request: web.Request) -> web.Response:
        if not self.gate.rights(request).operator:
            raise self.gate.refuse(request, "roll the DNSSEC keys over (operator)", "operator")
        if self.keys is None:
            raise ConflictError("DNSSEC is off (dnssec.enabled): there are no keys", "dnssec")
        return web.json_response(await self.keys.rollover(), status=202)
