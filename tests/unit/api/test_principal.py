"""api.principal: the auth middleware names who asked, and only a valid credential names anyone."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dnsdisc.api.http import Api, ServerState
from dnsdisc.api.principal import principal_of
from dnsdisc.registry.registry import Registry
from dnsdisc.store.base import MemoryStore


def test_the_token_names_the_legacy_principal_and_anything_else_is_anonymous() -> None:
    async def main() -> None:
        api = Api(Registry(MemoryStore()), ServerState(True, True), token="s3cret")
        app = api.app()

        async def whoami(request: web.Request) -> web.Response:
            p = principal_of(request)
            return web.json_response({"name": p.name, "via": p.via})

        app.router.add_get("/whoami", whoami)
        async with TestClient(TestServer(app)) as client:
            seen = []
            for header in ("Bearer s3cret", "bearer s3cret", ""):
                resp = await client.get("/whoami", headers={"Authorization": header})
                assert resp.status == 200
                seen.append(await resp.json())
            # A token no token has is refused, not taken for anonymous.
            resp = await client.get("/whoami", headers={"Authorization": "Bearer wrong"})
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await resp.json())["field"] == "Authorization"
        assert seen[0] == seen[1] == {"name": "token", "via": "token"}
        assert seen[2] == {"name": "anonymous", "via": "anonymous"}

    asyncio.run(main())
