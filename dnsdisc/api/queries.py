"""``/v1/queries``: named queries over the API (definitions in ``registry/queries.py``, answers
under ``<name>.query.<domain>``).

- ``GET /v1/queries``: every query the caller may read, each with where it answers from now;
- ``GET /v1/queries/{name}``: one; ``PUT`` creates (201) or replaces (200) it, ``DELETE`` (204);
- ``GET /v1/queries/{name}/explain?type=&client=&ecs=``: its next answer explained, a template's
  instance (``near-web`` of ``near-``) included.

Rights: a query is read and written with the rights on the services its chain names (every one
of them to write it); a template names services it does not know yet, so writing one needs the
operator right, and reading one any read right.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from dnsdisc.api.acl import Rights
from dnsdisc.api.jsonbody import read_json
from dnsdisc.errors import AuthError, NotFoundError, ValidationError
from dnsdisc.registry.queries import MATCH, QueryDef
from dnsdisc.registry.registry import Registry

# (query, type, client packed, ECS prefix or -1) -> the explanation (server/explain.py).
ExplainQuery = Callable[[QueryDef, str, bytes, int], dict[str, Any]]
# The name of a built query (a template's instance too) -> (its definition, the step it answers
# from: 0 its own service, -1 none exists) or None.
Status = Callable[[str], tuple[QueryDef, int] | None]


class Gate(Protocol):
    def rights(self, request: web.Request) -> Rights: ...
    def refuse(self, request: web.Request, what: str, fld: str) -> AuthError: ...


class QueriesApi:
    def __init__(
        self,
        registry: Registry,
        gate: Gate,
        status: Status | None,
        explain: ExplainQuery | None,
        explain_query: Callable[[web.Request], tuple[str, bytes, int, str | None]],
    ) -> None:
        self.registry = registry
        self.gate = gate
        self.status = status
        self.explain = explain
        self.explain_params = explain_query  # reads ?type=&client=&ecs= (api/http.py)

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/queries", self.list_queries)
        r.add_get("/v1/queries/{name}", self.get_query)
        r.add_put("/v1/queries/{name}", self.put_query)
        r.add_delete("/v1/queries/{name}", self.delete_query)
        r.add_get("/v1/queries/{name}/explain", self.explain_query)

    def _may(self, request: web.Request, q: QueryDef, write: bool) -> None:
        rights = self.gate.rights(request)
        if q.template is not None:
            allowed = rights.operator if write else rights.can_read_any()
        else:
            check = rights.can_write if write else rights.can_read
            allowed = all(check(s) for s in q.services if MATCH not in s)
        if not allowed:
            what = "change" if write else "read"
            why = "(operator)" if write and q.template is not None else "(its services)"
            raise self.gate.refuse(request, f"{what} query {q.name} {why}", "name")

    def _json(self, q: QueryDef) -> dict[str, Any]:
        out = q.to_json()
        found = self.status(q.name) if self.status is not None else None
        if found is not None:
            step = found[1]
            out["answering"] = {
                "step": step,
                "service": q.steps[step].service if step >= 0 else None,
            }
        return out

    async def list_queries(self, request: web.Request) -> web.Response:
        rights = self.gate.rights(request)
        listed = []
        for name in sorted(self.registry.queries):
            q = self.registry.queries[name]
            if q.template is not None:
                readable = rights.can_read_any()
            else:
                readable = all(rights.can_read(s) for s in q.services)
            if readable:
                listed.append(self._json(q))
        return web.json_response({"queries": listed})

    async def get_query(self, request: web.Request) -> web.Response:
        q = self.registry.query(request.match_info["name"].lower())
        self._may(request, q, write=False)
        return web.json_response(self._json(q))

    async def put_query(self, request: web.Request) -> web.Response:
        q = QueryDef.from_json(request.match_info["name"], await read_json(request))
        self._may(request, q, write=True)
        templated = [
            t.name
            for t in self.registry.queries.values()
            if t.template is not None and q.name.startswith(t.name) and q.name != t.name
        ]
        if templated and q.template is None and not self.gate.rights(request).operator:
            # A plain query wins over a template's name: taking over what an operator's
            # template answers needs what writing the template needs.
            raise self.gate.refuse(
                request, f"define {q.name}, a name template {templated[0]!r} makes (operator)",
                "name",
            )  # fmt: skip
        old = self.registry.queries.get(q.name)
        if old is not None and not old.static:
            self._may(request, old, write=True)
        created = await self.registry.put_query(q)
        await self.registry.settled()
        body = self._json(self.registry.query(q.name))
        return web.json_response(body, status=201 if created else 200)

    async def delete_query(self, request: web.Request) -> web.Response:
        q = self.registry.query(request.match_info["name"].lower())
        self._may(request, q, write=True)
        await self.registry.delete_query(q.name)
        await self.registry.settled()
        return web.Response(status=204)

    async def explain_query(self, request: web.Request) -> web.Response:
        name = request.match_info["name"].lower()
        found = self.status(name) if self.status is not None else None
        if found is None or self.explain is None:
            raise NotFoundError(f"no query {name!r}", "name")
        q = found[0]
        self._may(request, q, write=False)
        rtype, client, prefix, tag = self.explain_params(request)
        if tag is not None:
            raise ValidationError("tag", "a query's explanation takes no tag")
        return web.json_response(self.explain(q, rtype, client, prefix))
