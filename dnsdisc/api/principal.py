"""Who made an HTTP request, as the authentication middleware established it.

The middleware that checks credentials stores a ``Principal`` on the request; whatever needs to
know who asked (the authorization rules, the audit trail, logs) reads it with ``principal_of``
and never looks at the credentials themselves, so no secret travels further than that middleware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

Via = Literal["token", "certificate", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # the token's name, the certificate's subject, or "anonymous"; never a secret
    via: Via


ANONYMOUS = Principal("anonymous", "anonymous")
# The legacy `http.token`: one unnamed secret with every right.
LEGACY_TOKEN = Principal("token", "token")

_KEY = web.RequestKey("dnsdisc.principal", Principal)


def set_principal(request: web.Request, principal: Principal) -> None:
    request[_KEY] = principal


def principal_of(request: web.Request) -> Principal:
    found: Principal | None = request.get(_KEY)
    return ANONYMOUS if found is None else found
